package ai.mantis.core;

/**
 * An image's pixels -> the edge client's input, exactly as {@code runtime_edge/preprocess.py} computes it:
 * RGB, resize to {@code input_size} with PIL's {@code Image.BILINEAR} (skipped when the size matches), then
 * {@code x / 255} and {@code (x - mean) / std} in float32, laid out as {@code [1, 3, H, W]}.
 *
 * <p>Input is {@code ARGB_8888} ints, row-major, as Android's {@code Bitmap.getPixels} returns them (decoding
 * and EXIF orientation are the caller's). Alpha is dropped without compositing, as PIL's
 * {@code convert("RGB")} drops it. The resize is Pillow's {@code libImaging/Resample.c} arithmetic: a
 * separable two-pass resample whose triangle filter's support is scaled by the
 * downscaling factor, coefficients normalised and fixed-point with 22 fraction bits, and each pass rounded
 * and clipped to uint8.
 */
public final class Preprocess {
    static final int PRECISION_BITS = 32 - 8 - 2;
    /** Most pixels an input image may have (runtime_edge's default --max-image-pixels). */
    public static final long MAX_PIXELS = 50_000_000L;

    private Preprocess() {
    }

    /** The float32 CHW tensor ({@code 3 * H * W} values) for an ARGB image of {@code width x height}. */
    public static float[] toTensor(int[] argb, int width, int height, Manifest.Preprocessing spec) {
        if (width < 1 || height < 1 || (long) width * height > MAX_PIXELS) {
            throw new IllegalArgumentException("image of " + width + "x" + height + " pixels: expected 1.." + MAX_PIXELS + " pixels");
        }
        if (argb.length != width * height) {
            throw new IllegalArgumentException("pixel array holds " + argb.length + " values for a " + width + "x" + height + " image");
        }
        int outH = spec.inputSize()[0];
        int outW = spec.inputSize()[1];
        byte[][] rgb = split(argb);
        if (width != outW || height != outH) {
            rgb = resizeBilinear(rgb, width, height, outW, outH);
        }
        int n = outW * outH;
        float[] out = new float[3 * n];
        for (int c = 0; c < 3; c++) {
            float mean = (float) spec.mean()[c];
            float std = (float) spec.std()[c];
            byte[] plane = rgb[c];
            for (int i = 0; i < n; i++) {
                float x = (plane[i] & 0xFF) / 255.0f;
                out[c * n + i] = (x - mean) / std;
            }
        }
        return out;
    }

    private static byte[][] split(int[] argb) {
        byte[][] rgb = new byte[3][argb.length];
        for (int i = 0; i < argb.length; i++) {
            int p = argb[i];
            rgb[0][i] = (byte) (p >> 16);
            rgb[1][i] = (byte) (p >> 8);
            rgb[2][i] = (byte) p;
        }
        return rgb;
    }

    /**
     * Resamples three uint8 planes of {@code inW x inH} to {@code outW x outH} as PIL's BILINEAR does: one
     * horizontal and one vertical pass, each rounded and clipped to uint8. The pass order matters for the
     * rounding; it is the one the Pillow in the locked environment (13.0) takes, measured on thousands of
     * random sizes: vertical first when the height shrinks by more than twice what the width shrinks
     * ({@code inH - outH > 2 * (inW - outW)}), horizontal first otherwise.
     */
    static byte[][] resizeBilinear(byte[][] planes, int inW, int inH, int outW, int outH) {
        boolean verticalFirst = outH < inH && (inH - outH) > 2 * (inW - outW);
        if (verticalFirst) {
            byte[][] tmp = vertical(planes, inW, inH, outH);
            return outW != inW ? horizontal(tmp, inW, outH, outW) : tmp;
        }
        byte[][] tmp = outW != inW ? horizontal(planes, inW, inH, outW) : planes;
        return outH != inH ? vertical(tmp, outW, inH, outH) : tmp;
    }

    private static byte[][] horizontal(byte[][] planes, int inW, int rows, int outW) {
        Coeffs k = Coeffs.compute(inW, outW);
        byte[][] out = new byte[3][outW * rows];
        for (int c = 0; c < 3; c++) {
            byte[] src = planes[c];
            byte[] dst = out[c];
            for (int y = 0; y < rows; y++) {
                int rowOff = y * inW;
                for (int x = 0; x < outW; x++) {
                    int xmin = k.bounds[2 * x];
                    int xmax = k.bounds[2 * x + 1];
                    int kOff = x * k.ksize;
                    int ss = 1 << (PRECISION_BITS - 1);
                    for (int i = 0; i < xmax; i++) {
                        ss += (src[rowOff + xmin + i] & 0xFF) * k.kk[kOff + i];
                    }
                    dst[y * outW + x] = clip8(ss);
                }
            }
        }
        return out;
    }

    private static byte[][] vertical(byte[][] planes, int w, int inH, int outH) {
        Coeffs k = Coeffs.compute(inH, outH);
        byte[][] out = new byte[3][w * outH];
        for (int c = 0; c < 3; c++) {
            byte[] src = planes[c];
            byte[] dst = out[c];
            for (int y = 0; y < outH; y++) {
                int ymin = k.bounds[2 * y];
                int ymax = k.bounds[2 * y + 1];
                int kOff = y * k.ksize;
                for (int x = 0; x < w; x++) {
                    int ss = 1 << (PRECISION_BITS - 1);
                    for (int i = 0; i < ymax; i++) {
                        ss += (src[(ymin + i) * w + x] & 0xFF) * k.kk[kOff + i];
                    }
                    dst[y * w + x] = clip8(ss);
                }
            }
        }
        return out;
    }

    private static byte clip8(int v) {
        if (v >= (1 << PRECISION_BITS << 8)) {
            return (byte) 255;
        }
        if (v <= 0) {
            return 0;
        }
        return (byte) (v >> PRECISION_BITS);
    }

    /** Per output pixel: the first input pixel, how many it reads, and fixed-point weights (Resample.c). */
    static final class Coeffs {
        final int ksize;
        final int[] bounds;
        final int[] kk;

        private Coeffs(int ksize, int[] bounds, int[] kk) {
            this.ksize = ksize;
            this.bounds = bounds;
            this.kk = kk;
        }

        static Coeffs compute(int inSize, int outSize) {
            double scale = (double) inSize / outSize;
            double filterscale = scale < 1.0 ? 1.0 : scale;
            double support = 1.0 * filterscale; // the triangle filter's support is 1
            int ksize = (int) Math.ceil(support) * 2 + 1;
            int[] bounds = new int[2 * outSize];
            int[] kk = new int[outSize * ksize];
            double[] k = new double[ksize];
            for (int xx = 0; xx < outSize; xx++) {
                double center = (xx + 0.5) * scale;
                double ww = 0.0;
                double ss = 1.0 / filterscale;
                int xmin = (int) (center - support + 0.5);
                if (xmin < 0) {
                    xmin = 0;
                }
                int xmax = (int) (center + support + 0.5);
                if (xmax > inSize) {
                    xmax = inSize;
                }
                xmax -= xmin;
                for (int x = 0; x < xmax; x++) {
                    double w = triangle((x + xmin - center + 0.5) * ss);
                    k[x] = w;
                    ww += w;
                }
                for (int x = 0; x < xmax; x++) {
                    double v = ww != 0.0 ? k[x] / ww : k[x];
                    kk[xx * ksize + x] = v < 0 ? (int) (-0.5 + v * (1 << PRECISION_BITS)) : (int) (0.5 + v * (1 << PRECISION_BITS));
                }
                bounds[2 * xx] = xmin;
                bounds[2 * xx + 1] = xmax;
            }
            return new Coeffs(ksize, bounds, kk);
        }

        private static double triangle(double x) {
            if (x < 0.0) {
                x = -x;
            }
            return x < 1.0 ? 1.0 - x : 0.0;
        }
    }
}
