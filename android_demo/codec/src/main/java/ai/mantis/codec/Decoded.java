package ai.mantis.codec;

/** A decoded bitstream: symbols in C, H, W order (channel-major), the latent shape and the task mask. */
public final class Decoded {
    private final int[] symbols;
    private final int channels;
    private final int height;
    private final int width;
    private final int taskMask;

    Decoded(int[] symbols, int channels, int height, int width, int taskMask) {
        this.symbols = symbols;
        this.channels = channels;
        this.height = height;
        this.width = width;
        this.taskMask = taskMask;
    }

    /** The symbols, {@code symbols[(c * height + y) * width + x]}. */
    public int[] symbols() {
        return symbols.clone();
    }

    public int channels() {
        return channels;
    }

    public int height() {
        return height;
    }

    public int width() {
        return width;
    }

    /** Bit {@code t} set = task {@code t} active. */
    public int taskMask() {
        return taskMask;
    }
}
