package ai.mantis.core;

/** A manifest value is missing, of the wrong type, or unsupported; the message names the key. */
public final class ManifestException extends Exception {
    private static final long serialVersionUID = 1L;

    public ManifestException(String message) {
        super(message);
    }
}
