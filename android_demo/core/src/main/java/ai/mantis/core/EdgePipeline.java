package ai.mantis.core;

import ai.mantis.codec.Bitstream;
import ai.mantis.codec.CodecException;
import ai.mantis.codec.Latent;

/**
 * The device side for one verified bundle, as {@code runtime_edge/client.py} runs it: pixels -> preprocess
 * (manifest) -> edge client -> latent + task logits -> task mask (manifest's rule) -> quantize -> rANS ->
 * bitstream, timing each stage.
 */
public final class EdgePipeline {
    private final Bundle bundle;
    private final EdgeModel model;

    public EdgePipeline(Bundle bundle, EdgeModel model) {
        this.bundle = bundle;
        this.model = model;
    }

    /** One image's bitstream, task mask and where the time went (milliseconds). */
    public static final class Encoded {
        private final byte[] bitstream;
        private final int taskMask;
        private final double preprocessMs;
        private final double edgeMs;
        private final double entropyMs;

        Encoded(byte[] bitstream, int taskMask, double preprocessMs, double edgeMs, double entropyMs) {
            this.bitstream = bitstream.clone();
            this.taskMask = taskMask;
            this.preprocessMs = preprocessMs;
            this.edgeMs = edgeMs;
            this.entropyMs = entropyMs;
        }

        public byte[] bitstream() {
            return bitstream.clone();
        }

        public int taskMask() {
            return taskMask;
        }

        public double preprocessMs() {
            return preprocessMs;
        }

        public double edgeMs() {
            return edgeMs;
        }

        public double entropyMs() {
            return entropyMs;
        }
    }

    /** Encodes an ARGB image of {@code width x height} (see {@link Preprocess}). */
    public Encoded encode(int[] argb, int width, int height) throws Exception {
        Manifest m = bundle.manifest();
        long t0 = System.nanoTime();
        float[] x = Preprocess.toTensor(argb, width, height, m.preprocessing());
        long[] shape = {1, 3, m.preprocessing().inputSize()[0], m.preprocessing().inputSize()[1]};
        long t1 = System.nanoTime();
        EdgeModel.Output out = model.run(x, shape);
        long t2 = System.nanoTime();
        byte[] bits = encodeLatent(out.latent(), out.taskLogits());
        long t3 = System.nanoTime();
        int mask = taskMask(out.taskLogits(), m.tasks().size());
        return new Encoded(bits, mask, (t1 - t0) / 1e6, (t2 - t1) / 1e6, (t3 - t2) / 1e6);
    }

    /** The bitstream for an edge client's outputs (latent [C, h, w] flattened, task logits [T]). */
    public byte[] encodeLatent(float[] latent, float[] taskLogits) throws CodecException, BundleException {
        int[] shape = bundle.manifest().latent();
        int n = shape[0] * shape[1] * shape[2];
        if (latent.length != n) {
            throw new BundleException("edge client returned " + latent.length + " latent values, the manifest's latent "
                    + shape[0] + "x" + shape[1] + "x" + shape[2] + " has " + n);
        }
        for (float v : latent) {
            if (Float.isNaN(v) || Float.isInfinite(v)) {
                throw new BundleException("edge client produced non-finite latent values (NaN/inf)");
            }
        }
        int mask = taskMask(taskLogits, bundle.manifest().tasks().size());
        int[] symbols = Latent.quantize(latent, shape[1] * shape[2], bundle.tables());
        return Bitstream.encode(symbols, shape[0], shape[1], shape[2], mask, bundle.tables());
    }

    /**
     * Bit t set when task t is active by the {@code positive-else-argmax} rule: every task whose logit is above
     * 0, else the first argmax (as numpy's argmax picks it).
     */
    public static int taskMask(float[] logits, int tasks) throws BundleException {
        if (logits.length != tasks || tasks < 1 || tasks > Manifest.MAX_EDGE_TASKS) {
            throw new BundleException("expected " + tasks + " task logits, got " + logits.length);
        }
        int mask = 0;
        int best = 0;
        for (int t = 0; t < logits.length; t++) {
            if (Float.isNaN(logits[t]) || Float.isInfinite(logits[t])) {
                throw new BundleException("task logits must be finite, got " + java.util.Arrays.toString(logits));
            }
            if (logits[t] > 0) {
                mask |= 1 << t;
            }
            if (logits[t] > logits[best]) {
                best = t;
            }
        }
        return mask != 0 ? mask : 1 << best;
    }
}
