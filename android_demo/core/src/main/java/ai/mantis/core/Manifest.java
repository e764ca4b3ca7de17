package ai.mantis.core;

import ai.mantis.codec.Bitstream;
import ai.mantis.json.Json;
import ai.mantis.json.JsonException;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * {@code manifest.json} of a bundle ({@code mantis-bundle/1}, {@code codec/MANIFEST.md}), read as strictly as
 * {@code codec/manifest.py} reads it: an unknown key, a value of the wrong type or a value this code does not
 * implement is a {@link ManifestException} naming the key. Supported values are the Python schema's.
 */
public final class Manifest {
    public static final String BUNDLE_FORMAT = "mantis-bundle/1";
    public static final String MANIFEST_NAME = "manifest.json";
    public static final List<String> COLORS = Collections.singletonList("RGB");
    public static final List<String> RESIZE_METHODS = Collections.singletonList("bilinear");
    public static final List<String> LAYOUTS = Collections.singletonList("NCHW");
    public static final List<String> TASK_MASK_RULES = Collections.singletonList("positive-else-argmax");
    /** Edge runtime name -> the file suffix of its program (same order as the Python schema). */
    public static final List<String> EDGE_RUNTIMES = Arrays.asList("executorch", "onnxruntime", "coreml");
    private static final List<String> EDGE_SUFFIXES = Arrays.asList(".pte", ".onnx", ".mlpackage");
    public static final String EDGE_INPUT = "image";
    public static final List<String> EDGE_OUTPUTS = Arrays.asList("latent", "task_logits");
    public static final String SERVER_INPUT = "latent";
    public static final List<String> SERVER_FILES = Arrays.asList("onnx", "torch", "onnx_fp16", "tensorrt");
    /** Tasks a manifest may have here: this reader has no server-detected tasks, so all are the edge's, and a
     * bitstream's task mask names at most {@link Bitstream#MAX_TASKS} (codec/manifest.py refuses the same). */
    public static final int MAX_EDGE_TASKS = Bitstream.MAX_TASKS;
    /** codec/manifest.py's MODEL_NAME_PATTERN: safe in KServe URLs and as a Triton model directory. */
    public static final String MODEL_NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}";

    private final String format;
    private final String modelName;
    private final long bitstreamVersion;
    private final Preprocessing preprocessing;
    private final List<Task> tasks;
    private final String taskMaskRule;
    /** {channels, height, width} of one image's latent. */
    private final int[] latent;
    private final String tablesFile;
    private final String tablesSha256;
    private final String tableId;
    private final Edge edge;
    private final Map<String, ServerFile> server;
    /** Bundle-relative path -> SHA-256 (hex). */
    private final Map<String, String> files;
    private final Map<String, String> producer;

    public String format() {
        return format;
    }

    public String modelName() {
        return modelName;
    }

    public long bitstreamVersion() {
        return bitstreamVersion;
    }

    public Preprocessing preprocessing() {
        return preprocessing;
    }

    public List<Task> tasks() {
        return tasks;
    }

    public String taskMaskRule() {
        return taskMaskRule;
    }

    public int[] latent() {
        return latent.clone();
    }

    public String tablesFile() {
        return tablesFile;
    }

    public String tablesSha256() {
        return tablesSha256;
    }

    public String tableId() {
        return tableId;
    }

    public Edge edge() {
        return edge;
    }

    public Map<String, ServerFile> server() {
        return server;
    }

    public Map<String, String> files() {
        return files;
    }

    /** How an image becomes the edge client's input (MANIFEST.md, "preprocessing"). */
    public static final class Preprocessing {
        /** {H, W}. */
        private final int[] inputSize;
        private final double[] mean;
        private final double[] std;
        private final String color;
        private final String resize;
        private final String layout;

        public int[] inputSize() {
            return inputSize.clone();
        }

        public double[] mean() {
            return mean.clone();
        }

        public double[] std() {
            return std.clone();
        }

        public String color() {
            return color;
        }

        public String resize() {
            return resize;
        }

        public String layout() {
            return layout;
        }

        Preprocessing(int[] inputSize, double[] mean, double[] std, String color, String resize, String layout) {
            this.inputSize = inputSize.clone();
            this.mean = mean.clone();
            this.std = std.clone();
            this.color = color;
            this.resize = resize;
            this.layout = layout;
        }

        static Preprocessing parse(Object doc, String where) throws ManifestException {
            Fields f = new Fields(doc, where);
            List<Object> size = f.list("input_size");
            boolean ok = size.size() == 2;
            for (Object v : size) {
                ok &= v instanceof Long && (Long) v > 0 && (Long) v <= Integer.MAX_VALUE;
            }
            if (!ok) {
                throw new ManifestException(where + ".input_size: expected [H, W] of positive integers, got " + repr(size));
            }
            double[] mean = numbers(f.list("mean"), where + ".mean", 3, false);
            double[] std = numbers(f.list("std"), where + ".std", 3, true);
            String color = f.choice("color", COLORS);
            double[] range = numbers(f.list("value_range"), where + ".value_range", 2, false);
            String resize = f.choice("resize", RESIZE_METHODS);
            String layout = f.choice("layout", LAYOUTS);
            f.done();
            if (range[0] != 0.0 || range[1] != 1.0) {
                // codec/manifest.py checks this after construction, under the bare name "preprocessing"
                throw new ManifestException("preprocessing.value_range: unsupported value " + repr(f.doc.get("value_range"))
                        + "; this code supports [[0.0, 1.0]]");
            }
            return new Preprocessing(new int[] {(int) (long) (Long) size.get(0), (int) (long) (Long) size.get(1)},
                    mean, std, color, resize, layout);
        }
    }

    /** One task: name and label names (label i is labels.get(i)). */
    public static final class Task {
        private final String name;
        private final List<String> labels;

        public String name() {
            return name;
        }

        public List<String> labels() {
            return labels;
        }

        Task(String name, List<String> labels) {
            this.name = name;
            this.labels = labels;
        }

        static Task parse(Object doc, String where) throws ManifestException {
            Fields f = new Fields(doc, where);
            String name = f.nonEmpty("name");
            List<Object> labels = f.list("labels");
            List<String> out = new ArrayList<>();
            for (Object l : labels) {
                if (l instanceof String) {
                    out.add((String) l);
                }
            }
            if (labels.isEmpty() || out.size() != labels.size() || new HashSet<>(out).size() != out.size()) {
                throw new ManifestException(where + ".labels: expected distinct label strings, got " + repr(labels));
            }
            f.done();
            return new Task(name, Collections.unmodifiableList(out));
        }
    }

    /** A model file's tensor: name, dtype, shape (a String element names a dynamic dimension). */
    public static final class TensorSpec {
        private final String name;
        private final String dtype;
        private final List<Object> shape;

        public String name() {
            return name;
        }

        public String dtype() {
            return dtype;
        }

        public List<Object> shape() {
            return shape;
        }

        TensorSpec(String name, String dtype, List<Object> shape) {
            this.name = name;
            this.dtype = dtype;
            this.shape = shape;
        }

        static TensorSpec parse(Object doc, String where) throws ManifestException {
            Fields f = new Fields(doc, where);
            TensorSpec out = new TensorSpec(f.string("name"), f.string("dtype"), f.list("shape"));
            f.done();
            for (Object d : out.shape()) {
                if (!(d instanceof String) && !(d instanceof Long && (Long) d > 0)) {
                    throw new ManifestException(where + ".shape: expected positive integers or dimension names, got " + repr(out.shape()));
                }
            }
            return out;
        }

        static List<TensorSpec> parseList(Object value, String where) throws ManifestException {
            if (!(value instanceof List)) {
                throw new ManifestException(where + ": expected a list of tensors, got " + repr(value));
            }
            List<TensorSpec> out = new ArrayList<>();
            List<?> items = (List<?>) value;
            for (int i = 0; i < items.size(); i++) {
                out.add(parse(items.get(i), where + "[" + i + "]"));
            }
            return out;
        }

        static List<String> names(List<TensorSpec> specs) {
            List<String> out = new ArrayList<>();
            for (TensorSpec s : specs) {
                out.add(s.name());
            }
            return out;
        }
    }

    /** The edge client: export target, program file, the runtime that runs it, its tensors. */
    public static final class Edge {
        private final String target;
        private final String file;
        private final String runtime;
        private final List<TensorSpec> inputs;
        private final List<TensorSpec> outputs;

        public String target() {
            return target;
        }

        public String file() {
            return file;
        }

        public String runtime() {
            return runtime;
        }

        public List<TensorSpec> inputs() {
            return inputs;
        }

        public List<TensorSpec> outputs() {
            return outputs;
        }

        Edge(String target, String file, String runtime, List<TensorSpec> inputs, List<TensorSpec> outputs) {
            this.target = target;
            this.file = file;
            this.runtime = runtime;
            this.inputs = inputs;
            this.outputs = outputs;
        }

        static Edge parse(Object doc, String where) throws ManifestException {
            Fields f = new Fields(doc, where);
            String target = f.string("target");
            String file = f.string("file");
            String runtime = f.choice("runtime", EDGE_RUNTIMES);
            List<TensorSpec> inputs = TensorSpec.parseList(f.sub("inputs", true), where + ".inputs");
            List<TensorSpec> outputs = TensorSpec.parseList(f.sub("outputs", true), where + ".outputs");
            optionalObject(f, "quantization");
            optionalObject(f, "check");
            f.done();
            String suffix = EDGE_SUFFIXES.get(EDGE_RUNTIMES.indexOf(runtime));
            if (!file.endsWith(suffix)) {
                throw new ManifestException(where + ".file: " + repr(file) + " is not a " + runtime + " program (expected a " + suffix + " file)");
            }
            if (!TensorSpec.names(inputs).equals(Collections.singletonList(EDGE_INPUT))) {
                throw new ManifestException(where + ".inputs: expected one input '" + EDGE_INPUT + "', got " + repr(TensorSpec.names(inputs)));
            }
            if (!TensorSpec.names(outputs).equals(EDGE_OUTPUTS)) {
                throw new ManifestException(where + ".outputs: expected " + repr(EDGE_OUTPUTS) + ", got " + repr(TensorSpec.names(outputs)));
            }
            return new Edge(target, file, runtime, inputs, outputs);
        }
    }

    /** One file of the server half (the phone only hashes it; serve.py runs it). */
    public static final class ServerFile {
        private final String file;
        private final List<TensorSpec> inputs;
        private final List<TensorSpec> outputs;

        public String file() {
            return file;
        }

        public List<TensorSpec> inputs() {
            return inputs;
        }

        public List<TensorSpec> outputs() {
            return outputs;
        }

        ServerFile(String file, List<TensorSpec> inputs, List<TensorSpec> outputs) {
            this.file = file;
            this.inputs = inputs;
            this.outputs = outputs;
        }

        static ServerFile parse(Object doc, String where) throws ManifestException {
            Fields f = new Fields(doc, where);
            String file = f.string("file");
            optionalObject(f, "check");
            Object in = f.sub("inputs", false);
            Object out = f.sub("outputs", false);
            List<TensorSpec> inputs = in == null ? Collections.<TensorSpec>emptyList() : TensorSpec.parseList(in, where + ".inputs");
            List<TensorSpec> outputs = out == null ? Collections.<TensorSpec>emptyList() : TensorSpec.parseList(out, where + ".outputs");
            optionalObject(f, "details");
            f.done();
            return new ServerFile(file, inputs, outputs);
        }
    }

    private Manifest(String format, String modelName, long bitstreamVersion, Preprocessing preprocessing, List<Task> tasks,
                     String taskMaskRule, int[] latent, String[] tables, Edge edge, Map<String, ServerFile> server,
                     Map<String, String> files, Map<String, String> producer) {
        this.format = format;
        this.modelName = modelName;
        this.bitstreamVersion = bitstreamVersion;
        this.preprocessing = preprocessing;
        this.tasks = tasks;
        this.taskMaskRule = taskMaskRule;
        this.latent = latent.clone();
        this.tablesFile = tables[0];
        this.tablesSha256 = tables[1];
        this.tableId = tables[2];
        this.edge = edge;
        this.server = server;
        this.files = files;
        this.producer = producer;
    }

    /** Package name -> version of the software that wrote the bundle ({@code producer}). */
    public Map<String, String> producer() {
        return producer;
    }

    /**
     * The files a device needs, in the order it verifies them: the entropy tables and the edge program. The
     * server half's files stay listed (and hashed) in the manifest for the server; a phone neither downloads
     * nor hashes them.
     */
    public List<String> deviceFiles() {
        return Collections.unmodifiableList(Arrays.asList(tablesFile, edge.file()));
    }

    /** Parses the manifest's JSON text; {@code where} prefixes every message (Python uses "manifest.json"). */
    public static Manifest parse(String json, String where) throws ManifestException {
        Object doc;
        try {
            doc = Json.parse(json);
        } catch (JsonException e) {
            throw new ManifestException(where + ": not valid JSON (" + e.getMessage() + ")");
        }
        return fromJson(doc, where);
    }

    /** Parses a value already read by {@link Json}. */
    public static Manifest fromJson(Object doc, String where) throws ManifestException {
        Fields f = new Fields(doc, where);
        String fmt = f.string("format");
        if (!BUNDLE_FORMAT.equals(fmt)) {
            throw new ManifestException(where + ": unknown format " + repr(fmt) + ", expected '" + BUNDLE_FORMAT + "'");
        }
        List<Object> taskDocs = f.list("tasks");
        Fields latentF = new Fields(f.object("latent"), where + ".latent");
        int[] latent = new int[3];
        String[] dims = {"channels", "height", "width"};
        for (int i = 0; i < 3; i++) {
            long v = latentF.positiveInt(dims[i]);
            if (v > Integer.MAX_VALUE) {
                throw new ManifestException(where + ".latent." + dims[i] + ": invalid value " + v);
            }
            latent[i] = (int) v;
        }
        latentF.done();
        Fields tablesF = new Fields(f.object("tables"), where + ".tables");
        String[] tables = {tablesF.nonEmpty("file"), tablesF.nonEmpty("sha256"), tablesF.nonEmpty("table_id")};
        tablesF.done();
        Fields serverF = new Fields(f.object("server"), where + ".server");
        Map<String, ServerFile> server = new LinkedHashMap<>();
        for (String k : SERVER_FILES) {
            if (serverF.has(k) || k.equals("onnx") || k.equals("torch")) {
                server.put(k, ServerFile.parse(serverF.sub(k, true), where + ".server." + k));
            }
        }
        serverF.done();
        Fields source = new Fields(f.object("source_checkpoint"), where + ".source_checkpoint");
        source.string("path");
        source.string("sha256");
        source.done();
        String modelName = f.string("model_name");
        if (!modelName.matches(MODEL_NAME_PATTERN)) {
            throw new ManifestException(where + ".model_name: '" + modelName + "' is not a safe model name (letters, digits,"
                    + " '_', '-', '.', starting with a letter or digit, at most 64 characters)");
        }
        long version = f.integer("bitstream_version");
        Map<String, String> producer = strMap(f.sub("producer", true), where + ".producer");
        Preprocessing pre = Preprocessing.parse(f.sub("preprocessing", true), where + ".preprocessing");
        List<Task> tasks = new ArrayList<>();
        for (int i = 0; i < taskDocs.size(); i++) {
            tasks.add(Task.parse(taskDocs.get(i), where + ".tasks[" + i + "]"));
        }
        String rule = f.choice("task_mask_rule", TASK_MASK_RULES);
        Edge edge = Edge.parse(f.sub("edge", true), where + ".edge");
        Map<String, String> files = strMap(f.sub("files", true), where + ".files");
        f.done();
        Manifest m = new Manifest(fmt, modelName, version, pre, Collections.unmodifiableList(tasks), rule, latent, tables, edge,
                Collections.unmodifiableMap(server), Collections.unmodifiableMap(files), Collections.unmodifiableMap(producer));
        m.validate(where);
        return m;
    }

    private void validate(String where) throws ManifestException {
        List<String> names = taskNames();
        if (tasks.isEmpty() || tasks.size() > MAX_EDGE_TASKS || new HashSet<>(names).size() != names.size()) {
            throw new ManifestException(where + ".tasks: expected 1.." + MAX_EDGE_TASKS + " tasks with distinct names, got " + repr(names));
        }
        for (String name : files.keySet()) {
            if (name.isEmpty() || name.startsWith("/") || Arrays.asList(name.split("/")).contains("..")) {
                throw new ManifestException(where + ".files: entry " + repr(name) + " points outside the bundle");
            }
        }
        if (!files.isEmpty()) {
            List<String> referenced = new ArrayList<>();
            referenced.add(tablesFile);
            referenced.add(edge.file());
            for (ServerFile s : server.values()) {
                referenced.add(s.file());
            }
            List<String> unlisted = new ArrayList<>();
            for (String n : referenced) {
                if (!files.containsKey(n)) {
                    unlisted.add(n);
                }
            }
            if (!unlisted.isEmpty()) {
                throw new ManifestException(where + ": " + repr(unlisted) + " are referenced but not listed (and hashed) in 'files'");
            }
        }
        ServerFile onnx = server.get("onnx");
        List<String> expected = new ArrayList<>();
        for (String t : names) {
            expected.add(Wire.logitsOutput(t));
        }
        if (!onnx.outputs().isEmpty() && !TensorSpec.names(onnx.outputs()).equals(expected)) {
            throw new ManifestException(where + ".server.onnx.outputs: expected " + repr(expected) + ", got " + repr(TensorSpec.names(onnx.outputs())));
        }
        if (!onnx.inputs().isEmpty() && !TensorSpec.names(onnx.inputs()).equals(Collections.singletonList(SERVER_INPUT))) {
            throw new ManifestException(where + ".server.onnx.inputs: expected one input '" + SERVER_INPUT + "', got " + repr(TensorSpec.names(onnx.inputs())));
        }
    }

    /** Task names in the manifest's order (bit t of a task mask is task t). */
    public List<String> taskNames() {
        List<String> out = new ArrayList<>();
        for (Task t : tasks) {
            out.add(t.name());
        }
        return out;
    }

    private static void optionalObject(Fields f, String key) throws ManifestException {
        Object v = f.sub(key, false);
        if (v != null && !(v instanceof Map)) {
            throw new ManifestException(f.where + "." + key + ": expected an object, got " + repr(v));
        }
    }

    private static Map<String, String> strMap(Object value, String where) throws ManifestException {
        if (!(value instanceof Map)) {
            throw new ManifestException(where + ": expected an object of strings, got " + repr(value));
        }
        Map<String, String> out = new LinkedHashMap<>();
        for (Map.Entry<?, ?> e : ((Map<?, ?>) value).entrySet()) {
            if (!(e.getValue() instanceof String)) {
                throw new ManifestException(where + ": expected an object of strings, got " + repr(value));
            }
            out.put((String) e.getKey(), (String) e.getValue());
        }
        return out;
    }

    private static double[] numbers(List<Object> value, String where, int n, boolean positive) throws ManifestException {
        if (value.size() != n) {
            throw new ManifestException(where + ": expected a list of " + n + " numbers, got " + repr(value));
        }
        double[] out = new double[n];
        for (int i = 0; i < n; i++) {
            Object v = value.get(i);
            double d = v instanceof Long ? (double) (Long) v : v instanceof Double ? (Double) v : Double.NaN;
            if (Double.isNaN(d) || Double.isInfinite(d) || (positive && d <= 0)) {
                throw new ManifestException(where + ": expected " + (positive ? "positive " : "") + "finite numbers, got " + repr(value));
            }
            out[i] = d;
        }
        return out;
    }

    static String typeName(Object v) {
        if (v == null) {
            return "NoneType";
        }
        if (v instanceof Map) {
            return "dict";
        }
        if (v instanceof List) {
            return "list";
        }
        if (v instanceof String) {
            return "str";
        }
        if (v instanceof Boolean) {
            return "bool";
        }
        if (v instanceof Long) {
            return "int";
        }
        return "float";
    }

    /** A short Python-like rendering of a JSON value for messages. */
    static String repr(Object v) {
        if (v instanceof String) {
            return "'" + v + "'";
        }
        if (v instanceof List) {
            StringBuilder sb = new StringBuilder("[");
            for (Object o : (List<?>) v) {
                if (sb.length() > 1) {
                    sb.append(", ");
                }
                sb.append(repr(o));
            }
            return sb.append(']').toString();
        }
        if (v instanceof Boolean) {
            return (Boolean) v ? "True" : "False";
        }
        if (v == null) {
            return "None";
        }
        return String.valueOf(v);
    }
}
