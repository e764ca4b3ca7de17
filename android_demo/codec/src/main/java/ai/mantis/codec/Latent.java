package ai.mantis.codec;

/**
 * Float latents and integer symbols, exactly as the Python codec and CompressAI's EntropyBottleneck:
 * {@code symbol = rint(latent - median)} in float32 with round-half-to-even, {@code latent = symbol + median}.
 * Arrays are channel-major (C, H, W).
 */
public final class Latent {
    private Latent() {}

    /** Quantizes a float32 latent of shape (C, H, W) with {@code perChannel = H * W} values per channel. */
    public static int[] quantize(float[] latent, int perChannel, EntropyTables tables) throws CodecException {
        float[] medians = tables.medianArray();
        if (perChannel < 1 || latent.length != medians.length * perChannel) {
            throw new CodecException.ShapeException(latent.length + " latent values do not form " + medians.length
                    + " channels of " + perChannel);
        }
        int[] out = new int[latent.length];
        for (int i = 0; i < latent.length; i++) {
            float d = latent[i] - medians[i / perChannel];
            double r = Math.rint(d);
            if (Double.isNaN(r) || Double.isInfinite(r)) {
                throw new CodecException.SymbolException("latent contains NaN or infinite values");
            }
            if (Math.abs(r) > Bitstream.SYMBOL_LIMIT) {
                throw new CodecException.SymbolException("latent value " + latent[i] + " lies beyond +-" + Bitstream.SYMBOL_LIMIT
                        + " from the median");
            }
            out[i] = (int) r;
        }
        return out;
    }

    /** {@code symbols + median} per channel, as float32. */
    public static float[] dequantize(int[] symbols, int perChannel, EntropyTables tables) throws CodecException {
        float[] medians = tables.medianArray();
        if (perChannel < 1 || symbols.length != medians.length * perChannel) {
            throw new CodecException.ShapeException(symbols.length + " symbols do not form " + medians.length
                    + " channels of " + perChannel);
        }
        float[] out = new float[symbols.length];
        for (int i = 0; i < symbols.length; i++) {
            out[i] = (float) symbols[i] + medians[i / perChannel];
        }
        return out;
    }
}
