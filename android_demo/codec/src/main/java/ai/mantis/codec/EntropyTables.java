package ai.mantis.codec;

import ai.mantis.json.Json;
import ai.mantis.json.JsonException;

import java.io.File;
import java.io.FileInputStream;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * Integer entropy tables read from the safetensors table file ({@code codec/FORMAT.md}, "Table file"):
 * per channel a quantized CDF, its length, an offset and a median. Immutable; every invariant the coder
 * relies on is checked on construction.
 */
public final class EntropyTables {
    public static final int PRECISION = 16;
    public static final String FORMAT = "mantis.entropy_tables";
    public static final String FORMAT_VERSION = "1";
    /** Largest channel count C of a set of tables (and so of a latent: the bitstream header does not carry C). */
    public static final int MAX_CHANNELS = 1 << 10;
    static final int MAX_CDF_LENGTH = (1 << PRECISION) + 1;
    static final int OFFSET_LIMIT = 1 << 20;
    static final float MEDIAN_LIMIT = (float) (1 << 20);
    static final long MAX_FILE_BYTES = 64L << 20;
    static final long MAX_JSON_HEADER_BYTES = 1L << 20;
    private static final String[] TENSORS = {"cdfs", "cdf_lengths", "offsets", "medians"};

    private final int channels;
    private final int maxLength;
    private final int[][] cdfs;
    private final int[] cdfLengths;
    private final int[] offsets;
    private final float[] medians;
    private final byte[] sha256;

    /**
     * Tables from arrays: {@code cdfs[c]} rows of equal length (zero-padded past {@code cdfLengths[c]}).
     *
     * @throws CodecException.TableException if an invariant is violated
     */
    public EntropyTables(int[][] cdfs, int[] cdfLengths, int[] offsets, float[] medians) throws CodecException.TableException {
        int c = cdfs.length;
        if (c < 1 || c > MAX_CHANNELS) {
            throw new CodecException.TableException(c + " channels, expected 1.." + MAX_CHANNELS);
        }
        int lmax = cdfs[0].length;
        if (lmax < 3 || lmax > MAX_CDF_LENGTH) {
            throw new CodecException.TableException("CDF rows of length " + lmax + ", expected 3.." + MAX_CDF_LENGTH);
        }
        if (cdfLengths.length != c || offsets.length != c || medians.length != c) {
            throw new CodecException.TableException("cdf_lengths, offsets and medians must have " + c + " entries");
        }
        int longest = 0;
        for (int ch = 0; ch < c; ch++) {
            int[] row = cdfs[ch];
            int len = cdfLengths[ch];
            if (row.length != lmax) {
                throw new CodecException.TableException("CDF rows have different lengths");
            }
            if (len < 3 || len > lmax) {
                throw new CodecException.TableException("cdf_lengths must lie in 3.." + lmax + ", channel " + ch + " has " + len);
            }
            longest = Math.max(longest, len);
            if (row[0] != 0) {
                throw new CodecException.TableException("CDF of channel " + ch + " does not start at 0");
            }
            if (row[len - 1] != (1 << PRECISION)) {
                throw new CodecException.TableException("CDF of channel " + ch + " does not end at " + (1 << PRECISION));
            }
            for (int i = 1; i < len; i++) {
                if (row[i] <= row[i - 1]) {
                    throw new CodecException.TableException(
                            "CDF of channel " + ch + " is not strictly increasing (a zero-frequency symbol)");
                }
            }
            for (int i = len; i < lmax; i++) {
                if (row[i] != 0) {
                    throw new CodecException.TableException("CDF rows must be zero-padded past their length");
                }
            }
            if (Math.abs((long) offsets[ch]) > OFFSET_LIMIT) {
                throw new CodecException.TableException("offsets must lie in -" + OFFSET_LIMIT + ".." + OFFSET_LIMIT);
            }
            if (Float.isNaN(medians[ch]) || Float.isInfinite(medians[ch]) || Math.abs(medians[ch]) > MEDIAN_LIMIT) {
                throw new CodecException.TableException("medians must be finite and within +-" + MEDIAN_LIMIT);
            }
        }
        if (longest != lmax) {
            throw new CodecException.TableException(
                    "CDF rows have " + lmax + " columns but the longest CDF has " + longest + " entries");
        }
        this.channels = c;
        this.maxLength = lmax;
        this.cdfs = new int[c][];
        for (int ch = 0; ch < c; ch++) {
            this.cdfs[ch] = cdfs[ch].clone();
        }
        this.cdfLengths = cdfLengths.clone();
        this.offsets = offsets.clone();
        this.medians = medians.clone();
        this.sha256 = sha256(contentBytes());
    }

    public int numChannels() {
        return channels;
    }

    public int maxLength() {
        return maxLength;
    }

    /** CDF of channel {@code ch}, zero-padded to {@link #maxLength()} (a copy). */
    public int[] cdf(int ch) {
        return cdfs[ch].clone();
    }

    public int[] cdfLengths() {
        return cdfLengths.clone();
    }

    public int[] offsets() {
        return offsets.clone();
    }

    public float[] medians() {
        return medians.clone();
    }

    int[][] rows() {
        return cdfs;
    }

    int[] lengths() {
        return cdfLengths;
    }

    int[] offsetArray() {
        return offsets;
    }

    float[] medianArray() {
        return medians;
    }

    /** Raw 32-byte SHA-256 of {@link #contentBytes()}. */
    public byte[] sha256Digest() {
        return sha256.clone();
    }

    /** Hex SHA-256 of {@link #contentBytes()}, as in the file's metadata. */
    public String sha256() {
        return hex(sha256);
    }

    /** The 2-byte id written into every bitstream header: the first bytes of {@link #sha256Digest()}. */
    public byte[] tableId() {
        return Arrays.copyOf(sha256, Bitstream.TABLE_ID_SIZE);
    }

    /**
     * Canonical serialization that is hashed: precision, C, Lmax (uint32 LE), cdfs, cdf_lengths, offsets
     * (int32 LE, row-major), medians (float32 LE).
     */
    public byte[] contentBytes() {
        ByteBuffer b = ByteBuffer.allocate(12 + 4 * channels * maxLength + 12 * channels).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(PRECISION).putInt(channels).putInt(maxLength);
        for (int[] row : cdfs) {
            for (int v : row) {
                b.putInt(v);
            }
        }
        for (int v : cdfLengths) {
            b.putInt(v);
        }
        for (int v : offsets) {
            b.putInt(v);
        }
        for (float v : medians) {
            b.putFloat(v);
        }
        return b.array();
    }

    static byte[] sha256(byte[] data) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(data);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is required by every Java platform", e);
        }
    }

    static String hex(byte[] bytes) {
        StringBuilder sb = new StringBuilder(2 * bytes.length);
        for (byte v : bytes) {
            sb.append(String.format("%02x", v & 0xFF));
        }
        return sb.toString();
    }

    /** Reads and verifies a table file (java.io, so it runs on Android API 23). */
    public static EntropyTables load(File path) throws CodecException.TableFileException {
        if (path.isDirectory()) {
            throw new CodecException.TableFileException("entropy table file " + path + " is a directory");
        }
        long size = path.length();
        if (size > MAX_FILE_BYTES) {
            throw new CodecException.TableFileException(
                    "entropy table file " + path + ": " + size + " bytes, larger than " + MAX_FILE_BYTES);
        }
        byte[] data = new byte[(int) size];
        try (InputStream in = new FileInputStream(path)) {
            int pos = 0;
            while (pos < data.length) {
                int n = in.read(data, pos, data.length - pos);
                if (n < 0) {
                    throw new CodecException.TableFileException("entropy table file " + path + " shrank while it was read");
                }
                pos += n;
            }
            if (in.read() >= 0) {
                throw new CodecException.TableFileException("entropy table file " + path + " grew while it was read");
            }
        } catch (FileNotFoundException e) {
            throw new CodecException.TableFileException("entropy table file " + path + " does not exist");
        } catch (IOException e) {
            throw new CodecException.TableFileException("entropy table file " + path + " cannot be read: " + e.getMessage());
        }
        return fromBytes(data, path.toString());
    }

    /** Parses and verifies a table file's bytes; errors name {@code source}. */
    public static EntropyTables fromBytes(byte[] data, String source) throws CodecException.TableFileException {
        try {
            return parse(data);
        } catch (CodecException.TableFileException e) {
            throw new CodecException.TableFileException("entropy table file " + source + ": " + e.getMessage());
        } catch (CodecException.TableException e) {
            throw new CodecException.TableFileException("entropy table file " + source + ": invalid tables: " + e.getMessage());
        }
    }

    private static CodecException.TableFileException bad(String message) {
        return new CodecException.TableFileException(message);
    }

    private static EntropyTables parse(byte[] data) throws CodecException.TableException {
        if (data.length < 8) {
            throw bad(data.length + " bytes, too short for a safetensors file");
        }
        long hlen = ByteBuffer.wrap(data, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        if (hlen < 0 || hlen > MAX_JSON_HEADER_BYTES || 8 + hlen > data.length) {
            throw bad("header length " + new BigInteger(1, ByteBuffer.allocate(8).putLong(hlen).array()) + " does not fit the " + data.length + "-byte file");
        }
        Object parsed;
        try {
            String js = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(data, 8, (int) hlen))
                    .toString();
            parsed = Json.parse(js);
        } catch (CharacterCodingException | JsonException e) {
            throw bad("header is not valid JSON (" + e.getMessage() + ")");
        }
        if (!(parsed instanceof Map)) {
            throw bad("header is not a JSON object");
        }
        Map<?, ?> header = (Map<?, ?>) parsed;
        Object metaObj = header.get("__metadata__");
        if (!(metaObj instanceof Map)) {
            throw bad("no __metadata__ (not a MANTiS table file)");
        }
        Map<?, ?> meta = (Map<?, ?>) metaObj;
        if (!FORMAT.equals(meta.get("format"))) {
            throw bad("metadata format " + meta.get("format") + ", expected " + FORMAT);
        }
        if (!FORMAT_VERSION.equals(meta.get("version"))) {
            throw bad("table format version " + meta.get("version") + ", this codec reads " + FORMAT_VERSION);
        }
        if (!String.valueOf(PRECISION).equals(meta.get("precision"))) {
            throw bad("precision " + meta.get("precision") + ", expected " + PRECISION);
        }
        TreeSet<String> names = new TreeSet<>();
        for (Object k : header.keySet()) {
            if (!"__metadata__".equals(k)) {
                names.add(String.valueOf(k));
            }
        }
        if (!names.equals(new TreeSet<>(Arrays.asList(TENSORS)))) {
            throw bad("tensors " + names + ", expected " + new TreeSet<>(Arrays.asList(TENSORS)));
        }
        int bodyStart = (int) (8 + hlen);
        int bodyLen = data.length - bodyStart;
        List<long[]> spans = new ArrayList<>();
        ByteBuffer[] buffers = new ByteBuffer[TENSORS.length];
        long[][] shapes = new long[TENSORS.length][];
        for (int t = 0; t < TENSORS.length; t++) {
            String name = TENSORS[t];
            Object infoObj = header.get(name);
            String want = name.equals("medians") ? "F32" : "I32";
            if (!(infoObj instanceof Map) || !want.equals(((Map<?, ?>) infoObj).get("dtype"))) {
                throw bad("tensor " + name + " must have dtype " + want);
            }
            Map<?, ?> info = (Map<?, ?>) infoObj;
            long[] shape = longList(info.get("shape"), -1);
            long[] offs = longList(info.get("data_offsets"), 2);
            if (shape == null || shape.length > 2 || offs == null || offs[0] < 0 || offs[0] > offs[1] || offs[1] > bodyLen) {
                throw bad("tensor " + name + " has a malformed shape or data_offsets");
            }
            long count = 1;
            for (long d : shape) {
                if (d < 0 || d > MAX_FILE_BYTES) {
                    throw bad("tensor " + name + " has a malformed shape");
                }
                count *= d;
            }
            if (offs[1] - offs[0] != 4 * count) {
                throw bad("tensor " + name + " spans " + (offs[1] - offs[0]) + " bytes, expected " + (4 * count));
            }
            spans.add(offs);
            shapes[t] = shape;
            buffers[t] = ByteBuffer.wrap(data, bodyStart + (int) offs[0], (int) (offs[1] - offs[0])).slice()
                    .order(ByteOrder.LITTLE_ENDIAN);
        }
        Collections.sort(spans, new Comparator<long[]>() {
            @Override
            public int compare(long[] a, long[] b) {
                return Long.compare(a[0], b[0]);
            }
        });
        long covered = 0;
        for (long[] s : spans) {
            if (s[0] != covered) {
                throw bad("tensor data regions overlap or leave gaps");
            }
            covered = s[1];
        }
        if (covered != bodyLen) {
            throw bad((bodyLen - covered) + " bytes after the last tensor");
        }
        if (shapes[0].length != 2) {
            throw bad("cdfs must be 2-D");
        }
        int c = (int) shapes[0][0];
        int lmax = (int) shapes[0][1];
        for (int t = 1; t < TENSORS.length; t++) {
            if (shapes[t].length != 1 || shapes[t][0] != c) {
                throw new CodecException.TableException(TENSORS[t] + " must have shape (" + c + ",) for " + c + " channels");
            }
        }
        if (c < 1 || lmax < 1) {
            throw new CodecException.TableException("cdfs of shape (" + c + ", " + lmax + ") is empty");
        }
        int[][] cdfs = new int[c][lmax];
        for (int ch = 0; ch < c; ch++) {
            for (int i = 0; i < lmax; i++) {
                cdfs[ch][i] = buffers[0].getInt();
            }
        }
        int[] lengths = new int[c];
        int[] offsets = new int[c];
        float[] medians = new float[c];
        for (int ch = 0; ch < c; ch++) {
            lengths[ch] = buffers[1].getInt();
            offsets[ch] = buffers[2].getInt();
            medians[ch] = buffers[3].getFloat();
        }
        // Hash the content as stored before validating it, so corruption is reported as such.
        ByteBuffer content = ByteBuffer.allocate(12 + 4 * c * lmax + 12 * c).order(ByteOrder.LITTLE_ENDIAN);
        content.putInt(PRECISION).putInt(c).putInt(lmax);
        for (int[] row : cdfs) {
            for (int v : row) {
                content.putInt(v);
            }
        }
        for (int v : lengths) {
            content.putInt(v);
        }
        for (int v : offsets) {
            content.putInt(v);
        }
        for (float v : medians) {
            content.putFloat(v);
        }
        String digest = hex(sha256(content.array()));
        if (!digest.equals(meta.get("sha256"))) {
            throw bad("content hash mismatch: metadata says " + meta.get("sha256") + ", content gives " + digest
                    + " (file corrupted or edited)");
        }
        return new EntropyTables(cdfs, lengths, offsets, medians);
    }

    private static long[] longList(Object value, int expectedLength) {
        if (!(value instanceof List)) {
            return null;
        }
        List<?> list = (List<?>) value;
        if (expectedLength >= 0 && list.size() != expectedLength) {
            return null;
        }
        long[] out = new long[list.size()];
        for (int i = 0; i < out.length; i++) {
            if (!(list.get(i) instanceof Long)) {
                return null;
            }
            out[i] = (Long) list.get(i);
        }
        return out;
    }

    @Override
    public String toString() {
        return "EntropyTables(channels=" + channels + ", max_cdf_length=" + maxLength + ", sha256="
                + sha256().substring(0, 16) + "...)";
    }
}
