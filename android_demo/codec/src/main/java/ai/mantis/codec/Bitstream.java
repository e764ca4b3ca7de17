package ai.mantis.codec;

/**
 * MANTiS bitstream format version 3 ({@code codec/FORMAT.md}): an 8-byte header (magic and version 0xA3, task
 * mask, table id, H-1, W-1, CRC-16 little-endian) followed by the rANS payload, which runs to the end of the
 * data. The channel count is the tables'. Byte-identical to the Python codec ({@code codec.encode} /
 * {@code codec.decode}).
 */
public final class Bitstream {
    /** High 4 bits of header byte 0. */
    public static final int MAGIC = 0xA;
    /** Low 4 bits of header byte 0. */
    public static final int FORMAT_VERSION = 3;
    public static final int HEADER_SIZE = 8;
    public static final int TABLE_ID_SIZE = 2;
    /** Largest latent H and W a header can carry (one byte each, stored minus one). */
    public static final int MAX_LATENT_SIDE = 1 << 8;
    public static final int MAX_SYMBOLS = 1 << 20;
    public static final int MAX_PAYLOAD_BYTES = (1 << 18) - 1;
    public static final int MIN_PAYLOAD_BYTES = Rans.STATE_MIN_BYTES;
    public static final int SYMBOL_LIMIT = 1 << 24;
    public static final int MAX_TASKS = 8;
    /** Initial value of the CRC-16/CCITT-FALSE. */
    static final int CRC16_INIT = 0xFFFF;
    /** Header bytes under the CRC: all but the CRC itself. */
    private static final int CHECKED_HEADER = HEADER_SIZE - 2;
    /** How format versions 1 and 2 (16-byte header) start: refused as an unsupported version, not as garbage. */
    private static final byte[] LEGACY_MAGIC = {'M', 'T'};
    private static final int[] CRC16_TABLE = crc16Table();

    private Bitstream() {}

    /** CRC-16/CCITT-FALSE (polynomial 0x1021, not reflected): the remainder of each byte value shifted to the top. */
    private static int[] crc16Table() {
        int[] table = new int[256];
        for (int b = 0; b < 256; b++) {
            int r = b << 8;
            for (int k = 0; k < 8; k++) {
                r = (r & 0x8000) != 0 ? (r << 1) ^ 0x1021 : r << 1;
            }
            table[b] = r & 0xFFFF;
        }
        return table;
    }

    /**
     * CRC-16/CCITT-FALSE of {@code data[offset..offset+length)} continued from {@code crc} (start with
     * {@link #CRC16_INIT}; no final XOR): Python's {@code binascii.crc_hqx(data, crc)}.
     */
    static int crc16(int crc, byte[] data, int offset, int length) {
        for (int i = offset; i < offset + length; i++) {
            crc = ((crc << 8) ^ CRC16_TABLE[((crc >>> 8) ^ data[i]) & 0xFF]) & 0xFFFF;
        }
        return crc;
    }

    /** The CRC-16 of a bitstream: over the tables' raw SHA-256, header bytes 0..5 and the payload. */
    private static int checksum(byte[] tableSha256, byte[] data) {
        int crc = crc16(CRC16_INIT, tableSha256, 0, tableSha256.length);
        crc = crc16(crc, data, 0, CHECKED_HEADER);
        return crc16(crc, data, HEADER_SIZE, data.length - HEADER_SIZE);
    }

    static void checkShape(int c, int h, int w, EntropyTables tables) throws CodecException.ShapeException {
        if (c != tables.numChannels()) {
            throw new CodecException.ShapeException("latent has " + c + " channels, the entropy tables have " + tables.numChannels());
        }
        int[] dims = {h, w};
        String[] names = {"H", "W"};
        for (int k = 0; k < 2; k++) {
            if (dims[k] < 1 || dims[k] > MAX_LATENT_SIDE) {
                throw new CodecException.ShapeException("latent " + names[k] + "=" + dims[k] + " outside 1.." + MAX_LATENT_SIDE
                        + " (shape (" + c + ", " + h + ", " + w + "))");
            }
        }
        long n = (long) c * h * w;
        if (n > MAX_SYMBOLS) {
            throw new CodecException.ShapeException("latent shape (" + c + ", " + h + ", " + w + ") has " + n
                    + " symbols, more than the limit " + MAX_SYMBOLS);
        }
    }

    static void checkTaskMask(int taskMask) throws CodecException.TaskMaskException {
        if (taskMask < 0 || taskMask >= (1 << MAX_TASKS)) {
            throw new CodecException.TaskMaskException("task mask " + taskMask + " outside 0.." + ((1 << MAX_TASKS) - 1)
                    + " (at most " + MAX_TASKS + " tasks)");
        }
    }

    /** Rejects a payload length the format does not allow: shorter than the packed rANS state or over 256 KiB - 1. */
    static void checkPayloadLength(int length) throws CodecException.PayloadException {
        Rans.checkPayloadLength(length);
        if (length > MAX_PAYLOAD_BYTES) {
            throw new CodecException.PayloadException("payload of " + length + " bytes exceeds the format limit of "
                    + MAX_PAYLOAD_BYTES + " bytes");
        }
    }

    /**
     * Encodes integer symbols of shape (C, H, W), channel-major, with the task mask (0..255). C must be the
     * tables' channel count (the header does not carry it), H and W within 1..{@value #MAX_LATENT_SIDE}.
     *
     * @throws CodecException.ShapeException, CodecException.SymbolException, CodecException.TaskMaskException or
     *     CodecException.PayloadException (payload beyond the format's 256 KiB limit)
     */
    public static byte[] encode(int[] symbols, int c, int h, int w, int taskMask, EntropyTables tables) throws CodecException {
        checkTaskMask(taskMask);
        checkShape(c, h, w, tables);
        if (symbols.length != c * h * w) {
            throw new CodecException.ShapeException(symbols.length + " symbols for shape (" + c + ", " + h + ", " + w + ")");
        }
        for (int s : symbols) {
            if (s < -SYMBOL_LIMIT || s > SYMBOL_LIMIT) {
                throw new CodecException.SymbolException("symbol " + s + " outside the coded range +-" + SYMBOL_LIMIT);
            }
        }
        byte[] payload = Rans.packState(Rans.encode(symbols, h * w, tables));
        checkPayloadLength(payload.length);
        byte[] out = new byte[HEADER_SIZE + payload.length];
        out[0] = (byte) ((MAGIC << 4) | FORMAT_VERSION);
        out[1] = (byte) taskMask;
        byte[] id = tables.tableId();
        out[2] = id[0];
        out[3] = id[1];
        out[4] = (byte) (h - 1);
        out[5] = (byte) (w - 1);
        System.arraycopy(payload, 0, out, HEADER_SIZE, payload.length);
        int crc = checksum(tables.sha256Digest(), out);
        out[6] = (byte) crc;
        out[7] = (byte) (crc >>> 8);
        return out;
    }

    /**
     * Parses and verifies a bitstream. Checks, in order: length (8-byte header), magic, version, table id,
     * length (13-byte minimum), payload limit, CRC-16, shape, payload.
     */
    public static Decoded decode(byte[] data, EntropyTables tables) throws CodecException {
        int n = data.length;
        if (n < HEADER_SIZE) {
            throw new CodecException.TruncatedException("bitstream of " + n + " bytes is shorter than the " + HEADER_SIZE + "-byte header");
        }
        if (data[0] == LEGACY_MAGIC[0] && data[1] == LEGACY_MAGIC[1]) {
            throw new CodecException.UnsupportedVersionException("bitstream format version " + (data[2] & 0xFF)
                    + " (16-byte header starting with \"MT\"), this codec reads version " + FORMAT_VERSION
                    + ": re-export the edge client with this codec");
        }
        int first = data[0] & 0xFF;
        if (first >>> 4 != MAGIC) {
            throw new CodecException.BadMagicException(String.format("bitstream starts with 0x%02x, not the magic 0x%x_ "
                    + "(format version %d starts with 0x%02x)", first, MAGIC, FORMAT_VERSION, (MAGIC << 4) | FORMAT_VERSION));
        }
        int version = first & 0xF;
        if (version != FORMAT_VERSION) {
            throw new CodecException.UnsupportedVersionException("bitstream format version " + version
                    + ", this codec reads version " + FORMAT_VERSION);
        }
        int taskMask = data[1] & 0xFF;
        byte[] id = tables.tableId();
        if (data[2] != id[0] || data[3] != id[1]) {
            throw new CodecException.TableMismatchException(String.format(
                    "bitstream was written with entropy tables %02x%02x, these tables are %s",
                    data[2] & 0xFF, data[3] & 0xFF, EntropyTables.hex(id)));
        }
        int minimum = HEADER_SIZE + MIN_PAYLOAD_BYTES;
        if (n < minimum) {
            throw new CodecException.TruncatedException("bitstream of " + n + " bytes is shorter than the " + minimum
                    + "-byte minimum (" + HEADER_SIZE + "-byte header and " + MIN_PAYLOAD_BYTES + "-byte rANS state)");
        }
        int length = n - HEADER_SIZE;
        checkPayloadLength(length);
        int stored = (data[6] & 0xFF) | (data[7] & 0xFF) << 8;
        int actual = checksum(tables.sha256Digest(), data);
        if (stored != actual) {
            throw new CodecException.ChecksumException(String.format("CRC-16 mismatch (header says %04x, data gives %04x): "
                    + "the bitstream is corrupted, cut or extended (or was written with other tables that share the table id)",
                    stored, actual));
        }
        int c = tables.numChannels();
        int h = (data[4] & 0xFF) + 1;
        int w = (data[5] & 0xFF) + 1;
        checkShape(c, h, w, tables);
        byte[] stream = Rans.unpackState(data, HEADER_SIZE, length);
        int[] symbols = Rans.decode(stream, 0, stream.length / 4, c, h * w, tables);
        return new Decoded(symbols, c, h, w, taskMask);
    }
}
