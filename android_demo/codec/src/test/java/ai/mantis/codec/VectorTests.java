package ai.mantis.codec;

import ai.mantis.json.Json;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;

/**
 * Plain test runner (no JUnit needed) for the Java codec.
 *
 * <pre>
 *   java -cp BUILD ai.mantis.codec.VectorTests tests/vectors
 *       checks every shared vector (pinned hashes, encode bytes, decode results, malformed inputs, tables)
 *       and a few API contracts; prints one line per failure and "N passed, M failed"; exit 1 on failure.
 *   java -cp BUILD ai.mantis.codec.VectorTests --cross TABLES DIR
 *       for each line "NAME C H W MASK" of DIR/cases.txt: encodes NAME.i32 to NAME.java.mtb and decodes
 *       NAME.py.mtb to NAME.java.i32 (the Python test compares them with its own results).
 * </pre>
 */
public final class VectorTests {
    private int passed;
    private int failed;

    private void check(boolean ok, String what) {
        if (ok) {
            passed++;
        } else {
            failed++;
            System.out.println("FAIL " + what);
        }
    }

    private interface Action {
        void run() throws Exception;
    }

    /** The Java name of the Python codec error {@code pythonName} ({@code TruncatedError} -> {@code TruncatedException}). */
    static String javaName(String pythonName) {
        return pythonName.endsWith("Error") ? pythonName.substring(0, pythonName.length() - "Error".length()) + "Exception" : pythonName;
    }

    /** Runs {@code action}, expecting the codec exception that Python calls {@code expected} (or "nothing"). */
    private void expectError(String expected, String what, Action action) {
        expected = javaName(expected);
        String got;
        try {
            action.run();
            got = "nothing";
        } catch (CodecException e) {
            got = e.getClass().getSimpleName();
        } catch (Exception e) {
            got = "unexpected " + e;
        }
        check(got.equals(expected), what + ": expected " + expected + ", got " + got);
    }

    static int[] readInts(Path p) throws IOException {
        ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(p)).order(ByteOrder.LITTLE_ENDIAN);
        int[] out = new int[b.remaining() / 4];
        for (int i = 0; i < out.length; i++) {
            out[i] = b.getInt();
        }
        return out;
    }

    static float[] readFloats(Path p) throws IOException {
        ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(p)).order(ByteOrder.LITTLE_ENDIAN);
        float[] out = new float[b.remaining() / 4];
        for (int i = 0; i < out.length; i++) {
            out[i] = b.getFloat();
        }
        return out;
    }

    static void writeInts(Path p, int[] values) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(4 * values.length).order(ByteOrder.LITTLE_ENDIAN);
        for (int v : values) {
            b.putInt(v);
        }
        Files.write(p, b.array());
    }

    private byte[] pinned(Path dir, String name, Object sha) throws IOException {
        byte[] data = Files.readAllBytes(dir.resolve(name));
        check(EntropyTables.hex(EntropyTables.sha256(data)).equals(sha), name + ": sha256 differs from index.json");
        return data;
    }

    private static int intOf(Object o) {
        return ((Long) o).intValue();
    }

    @SuppressWarnings("unchecked")
    private void runVectors(Path dir) throws Exception {
        Map<String, Object> index = (Map<String, Object>) Json.parse(
                new String(Files.readAllBytes(dir.resolve("index.json")), StandardCharsets.UTF_8));
        check(intOf(index.get("format_version")) == Bitstream.FORMAT_VERSION, "format version of the vectors");
        Map<String, Object> t = (Map<String, Object>) index.get("tables");
        pinned(dir, (String) t.get("file"), t.get("sha256"));
        EntropyTables tables = EntropyTables.load(dir.resolve((String) t.get("file")).toFile());
        check(tables.sha256().equals(t.get("content_sha256")), "table content hash");
        check(EntropyTables.hex(tables.tableId()).equals(t.get("table_id")), "table id");
        check(tables.numChannels() == intOf(t.get("channels")), "table channel count");

        for (Object o : (List<Object>) index.get("valid")) {
            Map<String, Object> c = (Map<String, Object>) o;
            String name = (String) c.get("name");
            List<Object> shape = (List<Object>) c.get("shape");
            int ch = intOf(shape.get(0));
            int h = intOf(shape.get(1));
            int w = intOf(shape.get(2));
            int mask = intOf(c.get("task_mask"));
            pinned(dir, (String) c.get("symbols"), c.get("symbols_sha256"));
            int[] symbols = readInts(dir.resolve((String) c.get("symbols")));
            byte[] stream = pinned(dir, (String) c.get("bitstream"), c.get("bitstream_sha256"));
            check(Arrays.equals(Bitstream.encode(symbols, ch, h, w, mask, tables), stream), name + ": encode bytes");
            try {
                Decoded d = Bitstream.decode(stream, tables);
                check(Arrays.equals(d.symbols(), symbols), name + ": decoded symbols");
                check(d.taskMask() == mask && d.channels() == ch && d.height() == h && d.width() == w,
                        name + ": decoded task mask and shape");
            } catch (CodecException e) {
                check(false, name + ": decode raised " + e);
            }
            if (c.containsKey("latent")) {
                pinned(dir, (String) c.get("latent"), c.get("latent_sha256"));
                float[] latent = readFloats(dir.resolve((String) c.get("latent")));
                check(Arrays.equals(Latent.quantize(latent, h * w, tables), symbols), name + ": quantize(latent)");
                float[] y = Latent.dequantize(symbols, h * w, tables);
                float[] medians = tables.medians();
                boolean ok = true;
                for (int i = 0; i < y.length; i++) {
                    ok &= y[i] == (float) symbols[i] + medians[i / (h * w)];
                }
                check(ok, name + ": dequantize");
            }
        }
        for (Object o : (List<Object>) index.get("malformed")) {
            Map<String, Object> c = (Map<String, Object>) o;
            byte[] data = pinned(dir, (String) c.get("file"), c.get("sha256"));
            Object err = c.get("error");
            expectError(err == null ? "nothing" : (String) err, "malformed " + c.get("file"),
                    () -> Bitstream.decode(data, tables));
        }
        for (Object o : (List<Object>) index.get("malformed_tables")) {
            Map<String, Object> c = (Map<String, Object>) o;
            pinned(dir, (String) c.get("file"), c.get("sha256"));
            expectError((String) c.get("error"), "table file " + c.get("file"),
                    () -> EntropyTables.load(dir.resolve((String) c.get("file")).toFile()));
        }
        expectError("TableFileException", "missing table file", () -> EntropyTables.load(dir.resolve("missing.safetensors").toFile()));
        apiContracts(tables);
    }

    /** {@code data} with its CRC-16 (bytes 6..7) recomputed for {@code tables}, as the format defines it. */
    static byte[] seal(byte[] data, EntropyTables tables) {
        byte[] sha = tables.sha256Digest();
        int crc = Bitstream.crc16(Bitstream.CRC16_INIT, sha, 0, sha.length);
        crc = Bitstream.crc16(crc, data, 0, 6);
        crc = Bitstream.crc16(crc, data, Bitstream.HEADER_SIZE, data.length - Bitstream.HEADER_SIZE);
        data[6] = (byte) crc;
        data[7] = (byte) (crc >>> 8);
        return data;
    }

    /** The header checks of {@code codec/FORMAT.md} section 4, in their order, on hand-made byte strings. */
    private void headerChecks(EntropyTables tables) throws Exception {
        byte[] ascii = "123456789".getBytes(StandardCharsets.US_ASCII);
        check(Bitstream.crc16(Bitstream.CRC16_INIT, ascii, 0, ascii.length) == 0x29B1, "CRC-16/CCITT-FALSE check value 0x29b1");
        check(Bitstream.crc16(Bitstream.crc16(Bitstream.CRC16_INIT, ascii, 0, 4), ascii, 4, 5) == 0x29B1, "CRC-16 continued");
        check(Bitstream.HEADER_SIZE == 8 && Bitstream.FORMAT_VERSION == 3 && Bitstream.MAX_LATENT_SIDE == 256, "format constants");
        byte[] id = tables.tableId();
        int min = Bitstream.HEADER_SIZE + Bitstream.MIN_PAYLOAD_BYTES;
        byte[] good = Bitstream.encode(new int[tables.numChannels()], tables.numChannels(), 1, 1, 3, tables);
        byte[] state = {0, 0, 0, (byte) 0x80, 0};
        byte[] header = {(byte) 0xA3, 0, id[0], id[1], 0, 0, 0, 0};
        expectError("TruncatedException", "7 bytes", () -> Bitstream.decode(Arrays.copyOf(header, 7), tables));
        expectError("UnsupportedVersionException", "\"MT\": version 2 stream",
                () -> Bitstream.decode(new byte[] {'M', 'T', 2, 0, id[0], id[1], 0, 0}, tables));
        expectError("BadMagicException", "magic 0xB", () -> Bitstream.decode(new byte[] {(byte) 0xB3, 0, id[0], id[1], 0, 0, 0, 0}, tables));
        expectError("BadMagicException", "magic 0x0", () -> Bitstream.decode(new byte[] {3, 0, id[0], id[1], 0, 0, 0, 0}, tables));
        expectError("UnsupportedVersionException", "version 2 behind the magic",
                () -> Bitstream.decode(new byte[] {(byte) 0xA2, 0, id[0], id[1], 0, 0, 0, 0}, tables));
        expectError("UnsupportedVersionException", "version 4 behind the magic", () -> Bitstream.decode(seal(concat(
                new byte[] {(byte) 0xA4, 0, id[0], id[1], 0, 0, 0, 0}, state), tables), tables));
        expectError("TableMismatchException", "other table id",
                () -> Bitstream.decode(new byte[] {(byte) 0xA3, 0, (byte) ~id[0], id[1], 0, 0, 0, 0}, tables));
        expectError("TruncatedException", "header alone", () -> Bitstream.decode(header, tables));
        expectError("TruncatedException", (min - 1) + " bytes", () -> Bitstream.decode(Arrays.copyOf(good, min - 1), tables));
        expectError("PayloadException", "payload over the limit", () -> Bitstream.decode(seal(concat(header,
                new byte[Bitstream.MAX_PAYLOAD_BYTES + 1]), tables), tables));
        expectError("ChecksumException", "payload at the limit, CRC not sealed", () -> Bitstream.decode(concat(header,
                new byte[Bitstream.MAX_PAYLOAD_BYTES]), tables));
        expectError("PayloadException", "payload at the limit, CRC sealed", () -> Bitstream.decode(seal(concat(header,
                new byte[Bitstream.MAX_PAYLOAD_BYTES]), tables), tables));
        expectError("nothing", "all-zero 1x1 stream", () -> Bitstream.decode(good, tables));
        check(good.length >= min && good[0] == (byte) 0xA3 && good[1] == 3 && good[4] == 0 && good[5] == 0,
                "all-zero 1x1 stream: at least 13 bytes, 0xa3, task mask, H-1 and W-1");
        String message = "";
        try {
            Bitstream.decode(concat(good, new byte[1]), tables);
        } catch (CodecException.ChecksumException e) {
            message = e.getMessage();
        }
        check(message.matches("CRC-16 mismatch \\(header says [0-9a-f]{4}, data gives [0-9a-f]{4}\\): the bitstream is corrupted, cut "
                + "or extended \\(or was written with other tables that share the table id\\)"), "checksum message: " + message);
    }

    private static byte[] concat(byte[] a, byte[] b) {
        byte[] out = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }

    private void apiContracts(EntropyTables tables) throws Exception {
        headerChecks(tables);
        int c = tables.numChannels();
        int[] zeros = new int[c * 4];
        expectError("TaskMaskException", "task mask 256", () -> Bitstream.encode(zeros, c, 2, 2, 256, tables));
        expectError("TaskMaskException", "task mask -1", () -> Bitstream.encode(zeros, c, 2, 2, -1, tables));
        expectError("ShapeException", "channel count", () -> Bitstream.encode(new int[(c + 1) * 4], c + 1, 2, 2, 0, tables));
        expectError("ShapeException", "symbol count", () -> Bitstream.encode(zeros, c, 2, 3, 0, tables));
        int side = Bitstream.MAX_LATENT_SIDE;
        expectError("ShapeException", "H beyond the limit", () -> Bitstream.encode(new int[c * (side + 1)], c, side + 1, 1, 0, tables));
        expectError("ShapeException", "W beyond the limit", () -> Bitstream.encode(new int[c * (side + 1)], c, 1, side + 1, 0, tables));
        expectError("ShapeException", "H zero", () -> Bitstream.encode(new int[0], c, 0, 1, 0, tables));
        for (int[] hw : new int[][] {{side, 1}, {1, side}, {side, 2}}) {
            int[] s = new int[c * hw[0] * hw[1]];
            s[s.length - 1] = -3;
            Decoded d = Bitstream.decode(Bitstream.encode(s, c, hw[0], hw[1], 5, tables), tables);
            check(Arrays.equals(d.symbols(), s) && d.channels() == c && d.height() == hw[0] && d.width() == hw[1],
                    "round trip at the side limit " + hw[0] + "x" + hw[1]);
        }
        // C*H*W over 2^20 needs more channels than H, W <= 256 allow with at most 16: 17 trivial channels.
        int wide = Bitstream.MAX_SYMBOLS / (side * side) + 1;
        int[][] cdfs = new int[wide][];
        for (int k = 0; k < wide; k++) {
            cdfs[k] = new int[] {0, 1 << 15, 1 << EntropyTables.PRECISION};
        }
        int[] lengths = new int[wide];
        Arrays.fill(lengths, 3);
        EntropyTables many = new EntropyTables(cdfs, lengths, new int[wide], new float[wide]);
        expectError("ShapeException", "too many symbols", () -> Bitstream.encode(new int[wide * side * side], wide, side, side, 0, many));
        byte[] id = many.tableId();
        byte[] huge = seal(new byte[] {(byte) 0xA3, 1, id[0], id[1], (byte) (side - 1), (byte) (side - 1), 0, 0, 0, 0, 0, (byte) 0x80, 0}, many);
        expectError("ShapeException", "decoding too many symbols (CRC valid)", () -> Bitstream.decode(huge, many));
        int[] big = zeros.clone();
        big[3] = Bitstream.SYMBOL_LIMIT + 1;
        expectError("SymbolException", "symbol beyond the limit", () -> Bitstream.encode(big, c, 2, 2, 0, tables));
        float[] nan = new float[c * 4];
        nan[1] = Float.NaN;
        expectError("SymbolException", "NaN latent", () -> Latent.quantize(nan, 4, tables));

        // Round trips of random symbols with escapes, every task bit.
        Random rng = new Random(12345);
        for (int trial = 0; trial < 40; trial++) {
            int h = 1 + rng.nextInt(9);
            int w = 1 + rng.nextInt(9);
            int[] s = new int[c * h * w];
            for (int i = 0; i < s.length; i++) {
                double u = rng.nextDouble();
                s[i] = u < 0.05 ? rng.nextInt(2 * Bitstream.SYMBOL_LIMIT + 1) - Bitstream.SYMBOL_LIMIT
                        : (int) Math.round(rng.nextGaussian() * 3);
            }
            int mask = trial % 9 == 8 ? 255 : 1 << (trial % 8);
            byte[] data = Bitstream.encode(s, c, h, w, mask, tables);
            Decoded d = Bitstream.decode(data, tables);
            check(Arrays.equals(d.symbols(), s) && d.taskMask() == mask, "random round trip " + trial);
            check(data[0] == (byte) 0xA3 && (data[1] & 0xFF) == mask && data[2] == tables.tableId()[0]
                    && data[3] == tables.tableId()[1] && (data[4] & 0xFF) == h - 1 && (data[5] & 0xFF) == w - 1
                    && Arrays.equals(seal(data.clone(), tables), data), "header fields of random stream " + trial);
            byte[] cut = Arrays.copyOf(data, data.length - 1);
            expectError(cut.length < Bitstream.HEADER_SIZE + Bitstream.MIN_PAYLOAD_BYTES ? "TruncatedException" : "ChecksumException",
                    "truncated random stream " + trial, () -> Bitstream.decode(cut, tables));
            byte[] longer = Arrays.copyOf(data, data.length + 1 + rng.nextInt(4));
            expectError("ChecksumException", "extended random stream " + trial, () -> Bitstream.decode(longer, tables));
            byte[] flip = data.clone();
            // any bit of H, W, the CRC or the payload (bytes 0..3 are checked before the CRC)
            flip[4 + rng.nextInt(flip.length - 4)] ^= (byte) (1 << rng.nextInt(8));
            expectError("ChecksumException", "bit flip in random stream " + trial, () -> Bitstream.decode(flip, tables));
            byte[] maskFlip = data.clone();
            maskFlip[1] ^= (byte) (1 << rng.nextInt(8));
            expectError("ChecksumException", "task mask bit flip in random stream " + trial, () -> Bitstream.decode(maskFlip, tables));
        }
    }

    private static void runCross(Path tablesFile, Path dir) throws Exception {
        EntropyTables tables = EntropyTables.load(tablesFile.toFile());
        for (String line : Files.readAllLines(dir.resolve("cases.txt"), StandardCharsets.UTF_8)) {
            if (line.isBlank()) {
                continue;
            }
            String[] f = line.trim().split("\\s+");
            String name = f[0];
            int c = Integer.parseInt(f[1]);
            int h = Integer.parseInt(f[2]);
            int w = Integer.parseInt(f[3]);
            int mask = Integer.parseInt(f[4]);
            int[] symbols = readInts(dir.resolve(name + ".i32"));
            Files.write(dir.resolve(name + ".java.mtb"), Bitstream.encode(symbols, c, h, w, mask, tables));
            Decoded d = Bitstream.decode(Files.readAllBytes(dir.resolve(name + ".py.mtb")), tables);
            writeInts(dir.resolve(name + ".java.i32"), d.symbols());
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length == 3 && args[0].equals("--cross")) {
            runCross(Paths.get(args[1]), Paths.get(args[2]));
            return;
        }
        if (args.length != 1) {
            System.err.println("usage: VectorTests VECTOR_DIR | VectorTests --cross TABLES DIR");
            System.exit(2);
        }
        VectorTests t = new VectorTests();
        try {
            t.runVectors(Paths.get(args[0]));
        } catch (Exception e) {
            t.failed++;
            System.out.println("FAIL aborted: " + e);
            e.printStackTrace(System.out);
        }
        System.out.println(t.passed + " passed, " + t.failed + " failed");
        System.exit(t.failed == 0 ? 0 : 1);
    }
}
