package ai.mantis.core;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * serve.py's answer read per image, as {@code runtime_edge/predict.py} reads it: the active tasks
 * ({@code active_tasks}) and each active task's top-k labels ({@code labels_<task>}) with their softmax
 * probabilities from {@code logits_<task>}.
 */
public final class Predictions {
    private Predictions() {
    }

    /** One active task's labels, best first, and their probabilities. */
    public static final class TaskPrediction {
        private final String task;
        private final List<String> labels;
        private final List<Double> probabilities;

        public String task() {
            return task;
        }

        public List<String> labels() {
            return labels;
        }

        public List<Double> probabilities() {
            return probabilities;
        }

        TaskPrediction(String task, List<String> labels, List<Double> probabilities) {
            this.task = task;
            this.labels = labels;
            this.probabilities = probabilities;
        }
    }

    /** What the server answered for one image. */
    public static final class ImagePrediction {
        private final List<String> activeTasks;
        private final Map<String, TaskPrediction> tasks;

        public List<String> activeTasks() {
            return activeTasks;
        }

        public Map<String, TaskPrediction> tasks() {
            return tasks;
        }

        ImagePrediction(List<String> activeTasks, Map<String, TaskPrediction> tasks) {
            this.activeTasks = activeTasks;
            this.tasks = tasks;
        }
    }

    /** One {@link ImagePrediction} per image of the answer; {@code Malformed} when an output is missing or off. */
    public static List<ImagePrediction> fromOutputs(Map<String, KServeClient.Output> outputs, Manifest manifest, int images)
            throws TransportException.Malformed {
        List<String> tasks = manifest.taskNames();
        List<String> missing = new ArrayList<>();
        for (String n : expectedOutputs(tasks)) {
            if (!outputs.containsKey(n)) {
                missing.add(n);
            }
        }
        if (!missing.isEmpty()) {
            throw new TransportException.Malformed("server answer lacks outputs " + missing + " (has " + outputs.keySet() + ")");
        }
        KServeClient.Output active = outputs.get(Wire.ACTIVE_TASKS_OUTPUT);
        check(active, Wire.BOOL, images, tasks.size());
        List<ImagePrediction> out = new ArrayList<>();
        for (int i = 0; i < images; i++) {
            List<String> on = new ArrayList<>();
            Map<String, TaskPrediction> preds = new LinkedHashMap<>();
            for (int t = 0; t < tasks.size(); t++) {
                String task = tasks.get(t);
                List<String> names = manifest.tasks().get(t).labels();
                KServeClient.Output logits = outputs.get(Wire.logitsOutput(task));
                check(logits, Wire.FP32, images, names.size());
                if (!active.bool()[i * tasks.size() + t]) {
                    continue;
                }
                on.add(task);
                KServeClient.Output labels = outputs.get(Wire.labelsOutput(task));
                if (!Wire.BYTES.equals(labels.datatype()) || labels.shape().length != 2 || labels.shape()[0] != images) {
                    throw new TransportException.Malformed("output '" + labels.name() + "' is not BYTES [" + images + ", k]");
                }
                int k = (int) labels.shape()[1];
                double[] probs = softmax(logits.fp32(), i * names.size(), names.size());
                List<String> top = new ArrayList<>();
                List<Double> p = new ArrayList<>();
                for (int j = 0; j < k; j++) {
                    String label = new String(labels.bytes()[i * k + j], StandardCharsets.UTF_8);
                    int index = names.indexOf(label);
                    if (index < 0) {
                        throw new TransportException.Malformed("server label '" + label + "' is not a label of task '" + task + "'");
                    }
                    top.add(label);
                    p.add(probs[index]);
                }
                preds.put(task, new TaskPrediction(task, Collections.unmodifiableList(top), Collections.unmodifiableList(p)));
            }
            out.add(new ImagePrediction(Collections.unmodifiableList(on), Collections.unmodifiableMap(preds)));
        }
        return out;
    }

    /** Every output a model with {@code tasks} offers, in the contract's order. */
    public static List<String> expectedOutputs(List<String> tasks) {
        List<String> out = new ArrayList<>();
        for (String t : tasks) {
            out.add(Wire.logitsOutput(t));
        }
        for (String t : tasks) {
            out.add(Wire.labelsOutput(t));
        }
        out.add(Wire.ACTIVE_TASKS_OUTPUT);
        return out;
    }

    private static void check(KServeClient.Output o, String datatype, int rows, int cols) throws TransportException.Malformed {
        if (!datatype.equals(o.datatype()) || o.shape().length != 2 || o.shape()[0] != rows || o.shape()[1] != cols) {
            throw new TransportException.Malformed("output '" + o.name() + "' is " + o.datatype() + " " + java.util.Arrays.toString(o.shape())
                    + ", expected " + datatype + " [" + rows + ", " + cols + "]");
        }
    }

    private static double[] softmax(float[] v, int off, int n) {
        double max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < n; i++) {
            max = Math.max(max, v[off + i]);
        }
        double[] z = new double[n];
        double sum = 0;
        for (int i = 0; i < n; i++) {
            z[i] = Math.exp(v[off + i] - max);
            sum += z[i];
        }
        for (int i = 0; i < n; i++) {
            z[i] /= sum;
        }
        return z;
    }
}
