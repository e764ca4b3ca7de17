package ai.mantis.core;

/**
 * The bundle's edge client ({@code edge.file}: input {@code image} float32 [1, 3, H, W]; outputs {@code latent}
 * float32 [1, C, h, w] then {@code task_logits} float32 [1, T]). The app implements it with ExecuTorch's
 * Android runtime; the JVM tests with latents the Python edge client computed.
 */
public interface EdgeModel {
    /** The two outputs of one run, flattened in C order. */
    final class Output {
        private final float[] latent;
        private final float[] taskLogits;

        public Output(float[] latent, float[] taskLogits) {
            this.latent = latent.clone();
            this.taskLogits = taskLogits.clone();
        }

        public float[] latent() {
            return latent.clone();
        }

        public float[] taskLogits() {
            return taskLogits.clone();
        }
    }

    /** Runs the edge client on one image's input ({@code 3 * H * W} values, layout [1, 3, H, W]). */
    Output run(float[] image, long[] shape) throws Exception;
}
