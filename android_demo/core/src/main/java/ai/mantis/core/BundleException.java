package ai.mantis.core;

/** A bundle is missing, incomplete, corrupted, tampered with, or not one this app can run. */
public final class BundleException extends Exception {
    private static final long serialVersionUID = 1L;

    public BundleException(String message) {
        super(message);
    }
}
