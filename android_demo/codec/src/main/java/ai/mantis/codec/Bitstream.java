package ai.mantis.codec;

import java.util.zip.CRC32;

/**
 * MANTiS bitstream format version 2 ({@code codec/FORMAT.md}): a 16-byte little-endian header (magic
 * "MT", version, task mask, table id, C/H/W and payload length, CRC-32) followed by the rANS payload.
 * Byte-identical to the Python codec ({@code codec.encode} / {@code codec.decode}).
 */
public final class Bitstream {
    public static final int FORMAT_VERSION = 2;
    public static final int HEADER_SIZE = 16;
    public static final int TABLE_ID_SIZE = 2;
    public static final int MAX_DIM = 1 << 10;
    public static final int MAX_SYMBOLS = 1 << 20;
    public static final int MAX_PAYLOAD_BYTES = (1 << 18) - 1;
    public static final int MIN_PAYLOAD_BYTES = Rans.STATE_MIN_BYTES;
    public static final int SYMBOL_LIMIT = 1 << 24;
    public static final int MAX_TASKS = 8;
    private static final int DIM_BITS = 10;
    private static final int LENGTH_SHIFT = 3 * DIM_BITS;
    private static final byte[] MAGIC = {'M', 'T'};

    private Bitstream() {}

    static void checkShape(int c, int h, int w, EntropyTables tables) throws CodecException.ShapeException {
        if (c != tables.numChannels()) {
            throw new CodecException.ShapeException("latent has " + c + " channels, the entropy tables have " + tables.numChannels());
        }
        int[] dims = {c, h, w};
        String[] names = {"C", "H", "W"};
        for (int k = 0; k < 3; k++) {
            if (dims[k] < 1 || dims[k] > MAX_DIM) {
                throw new CodecException.ShapeException("latent " + names[k] + "=" + dims[k] + " outside 1.." + MAX_DIM);
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

    private static int checksum(byte[] tableSha256, byte[] data, int headerStart, int payloadStart, int payloadLength) {
        CRC32 crc = new CRC32();
        crc.update(tableSha256, 0, tableSha256.length);
        crc.update(data, headerStart, 12);
        crc.update(data, payloadStart, payloadLength);
        return (int) crc.getValue();
    }

    /**
     * Encodes integer symbols of shape (C, H, W), channel-major, with the task mask (0..255).
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
        if (payload.length > MAX_PAYLOAD_BYTES) {
            throw new CodecException.PayloadException("payload of " + payload.length + " bytes exceeds the format limit of "
                    + MAX_PAYLOAD_BYTES + " bytes");
        }
        byte[] out = new byte[HEADER_SIZE + payload.length];
        out[0] = MAGIC[0];
        out[1] = MAGIC[1];
        out[2] = (byte) FORMAT_VERSION;
        out[3] = (byte) taskMask;
        byte[] id = tables.tableId();
        out[4] = id[0];
        out[5] = id[1];
        long dims = (c - 1) | ((long) (h - 1) << DIM_BITS) | ((long) (w - 1) << (2 * DIM_BITS)) | ((long) payload.length << LENGTH_SHIFT);
        for (int k = 0; k < 6; k++) {
            out[6 + k] = (byte) (dims >>> (8 * k));
        }
        System.arraycopy(payload, 0, out, HEADER_SIZE, payload.length);
        int crc = checksum(tables.sha256Digest(), out, 0, HEADER_SIZE, payload.length);
        for (int k = 0; k < 4; k++) {
            out[12 + k] = (byte) (crc >>> (8 * k));
        }
        return out;
    }

    /**
     * Parses and verifies a bitstream. Checks, in order: length, magic, version, table id, payload length
     * (truncated / trailing), CRC-32, shape, payload.
     */
    public static Decoded decode(byte[] data, EntropyTables tables) throws CodecException {
        int n = data.length;
        if (n < HEADER_SIZE) {
            throw new CodecException.TruncatedException("bitstream of " + n + " bytes is shorter than the " + HEADER_SIZE + "-byte header");
        }
        if (data[0] != MAGIC[0] || data[1] != MAGIC[1]) {
            throw new CodecException.BadMagicException(String.format("bitstream starts with 0x%02x%02x, not the magic \"MT\"",
                    data[0] & 0xFF, data[1] & 0xFF));
        }
        int version = data[2] & 0xFF;
        if (version != FORMAT_VERSION) {
            throw new CodecException.UnsupportedVersionException("bitstream format version " + version
                    + ", this codec reads version " + FORMAT_VERSION);
        }
        int taskMask = data[3] & 0xFF;
        byte[] id = tables.tableId();
        if (data[4] != id[0] || data[5] != id[1]) {
            throw new CodecException.TableMismatchException(String.format(
                    "bitstream was written with entropy tables %02x%02x, these tables are %s",
                    data[4] & 0xFF, data[5] & 0xFF, EntropyTables.hex(id)));
        }
        long dims = 0;
        for (int k = 0; k < 6; k++) {
            dims |= (data[6 + k] & 0xFFL) << (8 * k);
        }
        int mask = (1 << DIM_BITS) - 1;
        int c = (int) (dims & mask) + 1;
        int h = (int) ((dims >>> DIM_BITS) & mask) + 1;
        int w = (int) ((dims >>> (2 * DIM_BITS)) & mask) + 1;
        int length = (int) (dims >>> LENGTH_SHIFT);
        long expected = HEADER_SIZE + (long) length;
        if (n < expected) {
            throw new CodecException.TruncatedException("header announces a " + length + "-byte payload, only "
                    + (n - HEADER_SIZE) + " bytes follow");
        }
        if (n > expected) {
            throw new CodecException.TrailingDataException((n - expected) + " bytes follow the " + length + "-byte payload");
        }
        int stored = (data[12] & 0xFF) | (data[13] & 0xFF) << 8 | (data[14] & 0xFF) << 16 | (data[15] & 0xFF) << 24;
        int actual = checksum(tables.sha256Digest(), data, 0, HEADER_SIZE, n - HEADER_SIZE);
        if (stored != actual) {
            throw new CodecException.ChecksumException(String.format("CRC-32 mismatch (header says %08x, data gives %08x): "
                    + "the bitstream is corrupted (or was written with other tables that share the table id)", stored, actual));
        }
        Rans.checkPayloadLength(length);
        checkShape(c, h, w, tables);
        byte[] stream = Rans.unpackState(data, HEADER_SIZE, length);
        int[] symbols = Rans.decode(stream, 0, stream.length / 4, c, h * w, tables);
        return new Decoded(symbols, c, h, w, taskMask);
    }
}
