package ai.mantis.codec;

/**
 * Base class of every codec error. The subclasses carry the same names as the Python codec's exceptions
 * ({@code codec/errors.py}); {@code codec/FORMAT.md} documents when each is raised.
 */
public class CodecError extends Exception {
    private static final long serialVersionUID = 1L;

    public CodecError(String message) {
        super(message);
    }

    /** The data ends before the header or the payload the header announces. */
    public static final class TruncatedError extends CodecError {
        private static final long serialVersionUID = 1L;

        public TruncatedError(String message) {
            super(message);
        }
    }

    /** The data does not start with the MANTiS magic bytes. */
    public static final class BadMagicError extends CodecError {
        private static final long serialVersionUID = 1L;

        public BadMagicError(String message) {
            super(message);
        }
    }

    /** The header's format version is not one this codec reads. */
    public static final class UnsupportedVersionError extends CodecError {
        private static final long serialVersionUID = 1L;

        public UnsupportedVersionError(String message) {
            super(message);
        }
    }

    /** The bitstream was written with other entropy tables. */
    public static final class TableMismatchError extends CodecError {
        private static final long serialVersionUID = 1L;

        public TableMismatchError(String message) {
            super(message);
        }
    }

    /** The CRC-32 over tables hash, header and payload does not match. */
    public static final class ChecksumError extends CodecError {
        private static final long serialVersionUID = 1L;

        public ChecksumError(String message) {
            super(message);
        }
    }

    /** A latent shape is invalid, too large, or does not match the tables' channel count. */
    public static final class ShapeError extends CodecError {
        private static final long serialVersionUID = 1L;

        public ShapeError(String message) {
            super(message);
        }
    }

    /** Bytes follow the payload the header announces. */
    public static final class TrailingDataError extends CodecError {
        private static final long serialVersionUID = 1L;

        public TrailingDataError(String message) {
            super(message);
        }
    }

    /** The rANS payload is malformed or too large to encode. */
    public static final class PayloadError extends CodecError {
        private static final long serialVersionUID = 1L;

        public PayloadError(String message) {
            super(message);
        }
    }

    /** Symbols or latents given to the encoder are outside the coded range or not finite. */
    public static final class SymbolError extends CodecError {
        private static final long serialVersionUID = 1L;

        public SymbolError(String message) {
            super(message);
        }
    }

    /** A task mask outside 0..255. */
    public static final class TaskMaskError extends CodecError {
        private static final long serialVersionUID = 1L;

        public TaskMaskError(String message) {
            super(message);
        }
    }

    /** Entropy tables violate the table invariants. */
    public static class TableError extends CodecError {
        private static final long serialVersionUID = 1L;

        public TableError(String message) {
            super(message);
        }
    }

    /** A table file is missing, unreadable, malformed, or fails its content hash; the message names it. */
    public static final class TableFileError extends TableError {
        private static final long serialVersionUID = 1L;

        public TableFileError(String message) {
            super(message);
        }
    }
}
