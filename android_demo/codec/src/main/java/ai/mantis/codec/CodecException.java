package ai.mantis.codec;

/**
 * Base class of every codec error. The subclasses carry the same names as the Python codec's exceptions
 * ({@code codec/errors.py}); {@code codec/FORMAT.md} documents when each is raised.
 */
public class CodecException extends Exception {
    private static final long serialVersionUID = 1L;

    public CodecException(String message) {
        super(message);
    }

    /** The data is shorter than the header, or than the header and the smallest payload. */
    public static final class TruncatedException extends CodecException {
        private static final long serialVersionUID = 1L;

        public TruncatedException(String message) {
            super(message);
        }
    }

    /** The data does not start with the MANTiS magic ({@code 0xA} in the high 4 bits of byte 0). */
    public static final class BadMagicException extends CodecException {
        private static final long serialVersionUID = 1L;

        public BadMagicException(String message) {
            super(message);
        }
    }

    /** The header's format version is not one this codec reads. */
    public static final class UnsupportedVersionException extends CodecException {
        private static final long serialVersionUID = 1L;

        public UnsupportedVersionException(String message) {
            super(message);
        }
    }

    /** The bitstream was written with other entropy tables. */
    public static final class TableMismatchException extends CodecException {
        private static final long serialVersionUID = 1L;

        public TableMismatchException(String message) {
            super(message);
        }
    }

    /** The CRC-16 over tables hash, header and payload does not match: the data was corrupted, cut or extended. */
    public static final class ChecksumException extends CodecException {
        private static final long serialVersionUID = 1L;

        public ChecksumException(String message) {
            super(message);
        }
    }

    /** A latent shape is invalid, too large, or does not match the tables' channel count. */
    public static final class ShapeException extends CodecException {
        private static final long serialVersionUID = 1L;

        public ShapeException(String message) {
            super(message);
        }
    }

    /** The rANS payload is malformed or too large to encode. */
    public static final class PayloadException extends CodecException {
        private static final long serialVersionUID = 1L;

        public PayloadException(String message) {
            super(message);
        }
    }

    /** Symbols or latents given to the encoder are outside the coded range or not finite. */
    public static final class SymbolException extends CodecException {
        private static final long serialVersionUID = 1L;

        public SymbolException(String message) {
            super(message);
        }
    }

    /** A task mask outside 0..255. */
    public static final class TaskMaskException extends CodecException {
        private static final long serialVersionUID = 1L;

        public TaskMaskException(String message) {
            super(message);
        }
    }

    /** Entropy tables violate the table invariants. */
    public static class TableException extends CodecException {
        private static final long serialVersionUID = 1L;

        public TableException(String message) {
            super(message);
        }
    }

    /** A table file is missing, unreadable, malformed, or fails its content hash; the message names it. */
    public static final class TableFileException extends TableException {
        private static final long serialVersionUID = 1L;

        public TableFileException(String message) {
            super(message);
        }
    }
}
