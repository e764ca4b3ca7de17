package ai.mantis.core;

/** A URL entered in Settings cannot be used: wrong scheme, no host, or cleartext HTTP to a host not allowed it. */
public final class UrlException extends Exception {
    private static final long serialVersionUID = 1L;

    public UrlException(String message) {
        super(message);
    }
}
