package ai.mantis.core;

/**
 * How much a photo is subsampled while it is decoded ({@code BitmapFactory.Options.inSampleSize}: a power of
 * two, each side divided by it): as much as keeps at least {@link #MARGIN} times the model's input size on each
 * side, so the decoded pixels stay small (a 48 MP photo for a 224x224 model decodes 1/8 of each side: 0.75 MP)
 * while the bilinear resize to the input size still averages several pixels per output pixel, as it does on the
 * full image. The result is close to, not bit-identical with, {@code runtime_edge.preprocess} on the full
 * image ({@code tests/android_demo/test_core.py} measures the difference).
 */
public final class Subsample {
    /** Each decoded side stays at least this many times the model input's side. */
    public static final int MARGIN = 2;
    /** Largest subsampling tried (BitmapFactory accepts any power of two). */
    public static final int MAX_SAMPLE = 1 << 10;

    private Subsample() {
    }

    /** Side length after subsampling by {@code sample} as this app assumes it: rounded down (the smaller case). */
    public static int sampled(int side, int sample) {
        return side / sample;
    }

    /** The largest power of two {@code s} with both decoded sides at least {@code minW x minH} (1 when none fits). */
    public static int sampleSize(int width, int height, int minW, int minH) {
        if (width < 1 || height < 1 || minW < 1 || minH < 1) {
            throw new IllegalArgumentException("sizes must be positive: " + width + "x" + height + " for at least " + minW + "x" + minH);
        }
        int s = 1;
        while (s < MAX_SAMPLE && sampled(width, 2 * s) >= minW && sampled(height, 2 * s) >= minH) {
            s *= 2;
        }
        return s;
    }

    /** The subsampling for the model's input ({@code inputH x inputW}): {@link #MARGIN} times it on each side. */
    public static int forModel(int width, int height, int inputH, int inputW) {
        return sampleSize(width, height, MARGIN * inputW, MARGIN * inputH);
    }

    /** The subsampling for a preview whose longer side is at most about {@code maxSide} (at least {@code maxSide / 2}). */
    public static int forPreview(int width, int height, int maxSide) {
        int s = 1;
        while (s < MAX_SAMPLE && Math.max(width, height) / s > maxSide) {
            s *= 2;
        }
        return s;
    }
}
