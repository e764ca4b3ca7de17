package ai.mantis.core;

/** The bitstreams did not get an answer; subclasses say why, their messages say what to do. */
public class TransportException extends Exception {
    private static final long serialVersionUID = 1L;

    public TransportException(String message) {
        super(message);
    }

    /** No answer after every retry: refused, reset, timed out, or unavailable (503). */
    public static final class Unreachable extends TransportException {
        private static final long serialVersionUID = 1L;
        /** The error kind when the last answer was a refusal (503 unavailable), else null. */
        private final Wire.ErrorKind kind;
        private final int attempts;

        public Wire.ErrorKind kind() {
            return kind;
        }

        public int attempts() {
            return attempts;
        }

        public Unreachable(String message, Wire.ErrorKind kind, int attempts) {
            super(message);
            this.kind = kind;
            this.attempts = attempts;
        }
    }

    /** The server answered with an error status; {@code kind} is the wire contract's name for it. */
    public static final class Rejected extends TransportException {
        private static final long serialVersionUID = 1L;
        private final int status;
        /** The kind the body named, else the contract's kind for the status; null for a status it does not use. */
        private final Wire.ErrorKind kind;
        private final String serverMessage;

        public int status() {
            return status;
        }

        public Wire.ErrorKind kind() {
            return kind;
        }

        public String serverMessage() {
            return serverMessage;
        }

        public Rejected(String url, int status, Wire.ErrorKind kind, String serverMessage) {
            super(describe(url, status, kind, serverMessage));
            this.status = status;
            this.kind = kind;
            this.serverMessage = serverMessage;
        }

        private static String describe(String url, int status, Wire.ErrorKind kind, String serverMessage) {
            String what = kind == null ? "an error the wire contract does not define" : kind.advice();
            return "HTTP " + status + " (" + (kind == null ? "unknown" : kind.wireName()) + ") from " + url + ": " + what
                    + ". Server said: " + serverMessage;
        }
    }

    /** The answer is not a well-formed KServe v2 inference response. */
    public static final class Malformed extends TransportException {
        private static final long serialVersionUID = 1L;

        public Malformed(String message) {
            super(message);
        }
    }
}
