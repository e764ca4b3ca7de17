package ai.mantis.core;

import ai.mantis.json.Json;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Command-line driver for the JVM tests of {@code core} (run by {@code tests/android_demo/test_core.py}). Each
 * command prints what the Java code computed; the Python side compares it with the Python runtimes.
 *
 * <pre>
 * wire                                       the wire constants as JSON
 * preprocess SPEC.json DIR                   DIR/cases.txt lines "name w h": DIR/name.rgb -> DIR/name.java.f32
 * manifests DIR                              per DIR/*.json: "name OK" or "name ERR message"
 * bundle DIR RUNTIME [PIN...]               Bundle.load + BundlePolicy: "OK table_id manifest_sha256" or "ERR message"
 * install BASE_URL DEST RUNTIME [PIN...]     BundleInstaller.install over HTTP (cleartext to loopback): "OK table_id" or "ERR message"
 * sync LOADED REFUSED INSTALLED ASSETS RECORDED  BundleSync.decide ("-" for null): the action's name
 * urls HOSTS URL...                          Urls.parse with cleartext HOSTS (comma-separated): "OK" or "ERR message" per URL
 * subsample W H IN_H IN_W                    Subsample.forModel and forPreview(1024): two numbers
 * exif FILE...                               ExifOrientation.read per file
 * upright DIR                                DIR/cases.txt lines "name w h orientation": DIR/name.rgb -> DIR/name.up.rgb, prints "name w h"
 * encode BUNDLE DIR N                        DIR/latents.f32, DIR/task_logits.f32 -> DIR/java_NNNN.mtb, DIR/java_masks.txt
 * infer BUNDLE URL TOKEN BATCH FILE...       sends the bitstream files, BATCH per request; prints predictions
 * </pre>
 */
public final class CoreTests {
    private CoreTests() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length == 0) {
            throw new IllegalArgumentException("usage: CoreTests COMMAND ARGS (see the class comment)");
        }
        switch (args[0]) {
            case "wire":
                wire();
                break;
            case "preprocess":
                preprocess(Paths.get(args[1]), Paths.get(args[2]));
                break;
            case "manifests":
                manifests(Paths.get(args[1]));
                break;
            case "bundle":
                bundle(new File(args[1]), args);
                break;
            case "install":
                install(args[1], new File(args[2]), policy(args, 3));
                break;
            case "sync":
                System.out.println(BundleSync.decide(orNull(args[1]), orNull(args[2]), orNull(args[3]), orNull(args[4]), orNull(args[5])));
                break;
            case "urls":
                urls(args);
                break;
            case "subsample":
                int w = Integer.parseInt(args[1]);
                int h = Integer.parseInt(args[2]);
                System.out.println(Subsample.forModel(w, h, Integer.parseInt(args[3]), Integer.parseInt(args[4])) + " "
                        + Subsample.forPreview(w, h, 1024));
                break;
            case "upright":
                upright(Paths.get(args[1]));
                break;
            case "exif":
                for (int i = 1; i < args.length; i++) {
                    try (java.io.InputStream in = Files.newInputStream(Paths.get(args[i]))) {
                        System.out.println(ExifOrientation.read(in));
                    }
                }
                break;
            case "encode":
                encode(new File(args[1]), Paths.get(args[2]), Integer.parseInt(args[3]));
                break;
            case "infer":
                List<String> files = new ArrayList<>();
                for (int i = 5; i < args.length; i++) {
                    files.add(args[i]);
                }
                infer(new File(args[1]), args[2], args[3], Integer.parseInt(args[4]), files);
                break;
            default:
                throw new IllegalArgumentException("unknown command " + args[0]);
        }
    }

    private static String q(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                sb.append('\\').append(c);
            } else if (c < 0x20) {
                sb.append(String.format("\\u%04x", (int) c));
            } else {
                sb.append(c);
            }
        }
        return sb.append('"').toString();
    }

    private static void wire() {
        StringBuilder sb = new StringBuilder("{");
        sb.append("\"protocol\":").append(q(Wire.PROTOCOL));
        sb.append(",\"bitstream\":").append(q(Wire.BITSTREAM_INPUT));
        sb.append(",\"bitstream_datatype\":").append(q(Wire.BYTES));
        sb.append(",\"logits_prefix\":").append(q(Wire.LOGITS_PREFIX));
        sb.append(",\"logits_datatype\":").append(q(Wire.FP32));
        sb.append(",\"labels_prefix\":").append(q(Wire.LABELS_PREFIX));
        sb.append(",\"labels_datatype\":").append(q(Wire.BYTES));
        sb.append(",\"active_tasks\":").append(q(Wire.ACTIVE_TASKS_OUTPUT));
        sb.append(",\"active_tasks_datatype\":").append(q(Wire.BOOL));
        sb.append(",\"top_k\":").append(q(Wire.TOP_K_PARAMETER));
        sb.append(",\"top_k_default\":").append(Wire.TOP_K_DEFAULT);
        sb.append(",\"top_k_minimum\":").append(Wire.TOP_K_MINIMUM);
        sb.append(",\"header_length\":").append(q(Wire.HEADER_LENGTH));
        sb.append(",\"binary_data_size\":").append(q(Wire.BINARY_DATA_SIZE));
        sb.append(",\"binary_data\":").append(q(Wire.BINARY_DATA));
        sb.append(",\"binary_data_output\":").append(q(Wire.BINARY_DATA_OUTPUT));
        sb.append(",\"bytes_element_prefix\":").append(q(Wire.BYTES_ELEMENT_PREFIX));
        sb.append(",\"auth_header\":").append(q(Wire.AUTH_HEADER));
        sb.append(",\"auth_scheme\":").append(q(Wire.AUTH_SCHEME));
        sb.append(",\"token_env\":").append(q(Wire.TOKEN_ENV));
        sb.append(",\"errors\":{");
        boolean first = true;
        for (Wire.ErrorKind k : Wire.ErrorKind.values()) {
            sb.append(first ? "" : ",").append(q(k.wireName())).append(":{\"http\":").append(k.http()).append(",\"grpc\":").append(q(k.grpc())).append('}');
            first = false;
        }
        sb.append("}}");
        System.out.println(sb);
    }

    private static void preprocess(Path specFile, Path dir) throws Exception {
        Manifest.Preprocessing spec = Manifest.Preprocessing.parse(Json.parse(new String(Files.readAllBytes(specFile), StandardCharsets.UTF_8)), "preprocessing");
        int done = 0;
        for (String line : Files.readAllLines(dir.resolve("cases.txt"), StandardCharsets.UTF_8)) {
            String[] p = line.trim().split(" ");
            String name = p[0];
            int w = Integer.parseInt(p[1]);
            int h = Integer.parseInt(p[2]);
            byte[] rgb = Files.readAllBytes(dir.resolve(name + ".rgb"));
            int[] argb = new int[w * h];
            for (int i = 0; i < argb.length; i++) {
                int alpha = (i * 37) & 0xFF; // any alpha: PIL's convert("RGB") drops it, and so does Preprocess
                argb[i] = alpha << 24 | (rgb[3 * i] & 0xFF) << 16 | (rgb[3 * i + 1] & 0xFF) << 8 | (rgb[3 * i + 2] & 0xFF);
            }
            float[] x = Preprocess.toTensor(argb, w, h, spec);
            ByteBuffer buf = ByteBuffer.allocate(4 * x.length).order(ByteOrder.LITTLE_ENDIAN);
            buf.asFloatBuffer().put(x);
            Files.write(dir.resolve(name + ".java.f32"), buf.array());
            done++;
        }
        System.out.println(done + " images");
    }

    private static void manifests(Path dir) throws IOException {
        File[] files = dir.toFile().listFiles();
        java.util.Arrays.sort(files);
        for (File f : files) {
            if (!f.getName().endsWith(".json")) {
                continue;
            }
            String name = f.getName().substring(0, f.getName().length() - 5);
            try {
                Manifest.parse(new String(Files.readAllBytes(f.toPath()), StandardCharsets.UTF_8), Manifest.MANIFEST_NAME);
                System.out.println(name + " OK");
            } catch (ManifestException e) {
                System.out.println(name + " ERR " + e.getMessage().replace('\n', ' '));
            }
        }
    }

    private static String orNull(String s) {
        return s.equals("-") ? null : s;
    }

    private static BundlePolicy policy(String[] args, int from) throws BundleException {
        return new BundlePolicy(args[from], new java.util.LinkedHashSet<>(java.util.Arrays.asList(args).subList(from + 1, args.length)));
    }

    private static void bundle(File dir, String[] args) {
        try {
            BundlePolicy policy = policy(args, 2);
            Bundle b = Bundle.load(dir);
            policy.check(b);
            System.out.println("OK " + b.manifest().tableId() + " " + b.manifestSha256());
        } catch (BundleException e) {
            System.out.println("ERR " + e.getMessage());
        }
    }

    private static void install(String url, File dest, BundlePolicy policy) {
        try {
            Set<String> loopback = new java.util.HashSet<>(java.util.Arrays.asList("127.0.0.1", "localhost"));
            Bundle b = BundleInstaller.install(BundleInstaller.http(url, 10_000, loopback), dest, policy);
            System.out.println("OK " + b.manifest().tableId());
        } catch (BundleException | UrlException e) {
            System.out.println("ERR " + e.getMessage());
        }
    }

    private static void upright(Path dir) throws IOException {
        for (String line : Files.readAllLines(dir.resolve("cases.txt"), StandardCharsets.UTF_8)) {
            String[] p = line.trim().split(" ");
            int w = Integer.parseInt(p[1]);
            int h = Integer.parseInt(p[2]);
            byte[] rgb = Files.readAllBytes(dir.resolve(p[0] + ".rgb"));
            int[] argb = new int[w * h];
            for (int i = 0; i < argb.length; i++) {
                argb[i] = 0xFF << 24 | (rgb[3 * i] & 0xFF) << 16 | (rgb[3 * i + 1] & 0xFF) << 8 | (rgb[3 * i + 2] & 0xFF);
            }
            int[][] up = ExifOrientation.upright(argb, w, h, Integer.parseInt(p[3]));
            byte[] out = new byte[3 * up[0].length];
            for (int i = 0; i < up[0].length; i++) {
                out[3 * i] = (byte) (up[0][i] >> 16);
                out[3 * i + 1] = (byte) (up[0][i] >> 8);
                out[3 * i + 2] = (byte) up[0][i];
            }
            Files.write(dir.resolve(p[0] + ".up.rgb"), out);
            System.out.println(p[0] + " " + up[1][0] + " " + up[1][1]);
        }
    }

    private static void urls(String[] args) {
        Set<String> hosts = new java.util.HashSet<>(java.util.Arrays.asList(args[1].split(",")));
        for (int i = 2; i < args.length; i++) {
            try {
                Urls.parse(args[i], "server URL", hosts);
                System.out.println("OK");
            } catch (UrlException e) {
                System.out.println("ERR " + e.getMessage());
            }
        }
    }

    private static float[] floats(Path p) throws IOException {
        byte[] data = Files.readAllBytes(p);
        float[] out = new float[data.length / 4];
        ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(out);
        return out;
    }

    private static void encode(File bundleDir, Path dir, int n) throws Exception {
        Bundle b = Bundle.load(bundleDir);
        int[] shape = b.manifest().latent();
        int per = shape[0] * shape[1] * shape[2];
        int tasks = b.manifest().tasks().size();
        float[] latents = floats(dir.resolve("latents.f32"));
        float[] logits = floats(dir.resolve("task_logits.f32"));
        if (latents.length != n * per || logits.length != n * tasks) {
            throw new IllegalArgumentException("latents/logits do not hold " + n + " images");
        }
        EdgePipeline pipe = new EdgePipeline(b, null);
        StringBuilder masks = new StringBuilder();
        for (int i = 0; i < n; i++) {
            float[] y = java.util.Arrays.copyOfRange(latents, i * per, (i + 1) * per);
            float[] t = java.util.Arrays.copyOfRange(logits, i * tasks, (i + 1) * tasks);
            Files.write(dir.resolve(String.format("java_%04d.mtb", i)), pipe.encodeLatent(y, t));
            masks.append(EdgePipeline.taskMask(t, tasks)).append('\n');
        }
        Files.write(dir.resolve("java_masks.txt"), masks.toString().getBytes(StandardCharsets.UTF_8));
        System.out.println(n + " encoded");
    }

    private static void infer(File bundleDir, String url, String token, int batch, List<String> files) throws Exception {
        Bundle b = Bundle.load(bundleDir);
        KServeClient client = new KServeClient(url, token, 5_000, 20_000, 2, 50, 200, new KServeClient.Sleeper() {
            @Override
            public void sleep(long millis) throws InterruptedException {
                Thread.sleep(millis);
            }
        });
        int image = 0;
        long sent = 0;
        long received = 0;
        for (int start = 0; start < files.size(); start += batch) {
            List<byte[]> bits = new ArrayList<>();
            for (String f : files.subList(start, Math.min(files.size(), start + batch))) {
                bits.add(Files.readAllBytes(Paths.get(f)));
            }
            KServeClient.InferResult r;
            try {
                r = client.infer(b.manifest().modelName(), bits, 2);
            } catch (TransportException.Rejected e) {
                System.out.println("REJECTED " + e.status() + " " + (e.kind() == null ? "-" : e.kind().wireName()) + " " + e.getMessage());
                return;
            } catch (TransportException.Unreachable e) {
                System.out.println("UNREACHABLE " + e.attempts() + " " + (e.kind() == null ? "-" : e.kind().wireName()) + " " + e.getMessage());
                return;
            }
            sent += r.requestBytes();
            received += r.responseBytes();
            for (Predictions.ImagePrediction p : Predictions.fromOutputs(r.outputs(), b.manifest(), bits.size())) {
                StringBuilder sb = new StringBuilder("PRED ").append(image++).append(' ').append(String.join(",", p.activeTasks()));
                for (Map.Entry<String, Predictions.TaskPrediction> e : p.tasks().entrySet()) {
                    sb.append(' ').append(e.getKey()).append('=').append(String.join("|", e.getValue().labels()));
                }
                System.out.println(sb);
            }
        }
        System.out.println("BYTES " + sent + " " + received);
    }
}
