package ai.mantis.codec;

import java.util.Arrays;

/**
 * The rANS payload ({@code codec/FORMAT.md}, "Payload"): 64-bit state, 16-bit CDF precision, 32-bit
 * little-endian words, and a 4-bit escape path. {@link #encode} and {@link #decode} work on the word
 * stream that CompressAI's {@code RansEncoder} writes (byte-identical); the payload is that stream with the
 * final state packed into 5 to 8 bytes ({@link #packState}, {@link #unpackState}).
 * States stay in [2^31, 2^63), so they fit a signed {@code long}.
 */
final class Rans {
    static final long L = 1L << 31;
    static final int BYPASS_BITS = 4;
    static final int BYPASS_MAX = 15;
    static final int MAX_BYPASS_NIBBLES = 7;
    private static final long BYPASS_EMIT = 1L << 59;
    private static final int MASK = (1 << EntropyTables.PRECISION) - 1;

    /** The packed state takes 5..8 bytes, told by the payload length modulo 4. */
    static final int STATE_MIN_BYTES = 5;

    private Rans() {}

    /** Word stream -> payload: the final state in the fewest bytes in 5..8 that hold it, then the words. */
    static byte[] packState(byte[] stream) {
        int keep = 8;
        while (keep > STATE_MIN_BYTES && stream[keep - 1] == 0) {
            keep--;
        }
        byte[] out = new byte[stream.length - 8 + keep];
        System.arraycopy(stream, 0, out, 0, keep);
        System.arraycopy(stream, 8, out, keep, stream.length - 8);
        return out;
    }

    /** Rejects a payload too short to hold the packed state. */
    static void checkPayloadLength(int length) throws CodecException.PayloadException {
        if (length < STATE_MIN_BYTES) {
            throw new CodecException.PayloadException("payload of " + length + " bytes is shorter than the " + STATE_MIN_BYTES
                    + "-byte minimum (the rANS state)");
        }
    }

    /** Payload at {@code data[start..start+length)} -> word stream; rejects a state not in its shortest form. */
    static byte[] unpackState(byte[] data, int start, int length) throws CodecException.PayloadException {
        checkPayloadLength(length);
        int keep = STATE_MIN_BYTES + (length - STATE_MIN_BYTES) % 4;
        if (keep > STATE_MIN_BYTES && data[start + keep - 1] == 0) {
            throw new CodecException.PayloadException("the rANS state is written in " + keep
                    + " bytes with a zero high byte (not the shortest form)");
        }
        byte[] out = new byte[length - keep + 8];
        System.arraycopy(data, start, out, 0, keep);
        System.arraycopy(data, start + keep, out, 8, length - keep);
        return out;
    }

    /** A growable list of emitted 32-bit words (in emission order, i.e. reversed stream order). */
    private static final class Words {
        int[] data = new int[64];
        int size;

        void add(long word) {
            if (size == data.length) {
                data = Arrays.copyOf(data, 2 * size);
            }
            data[size++] = (int) word;
        }
    }

    private static long putBits(long x, int nibble, Words out) {
        if (x >= BYPASS_EMIT) {
            out.add(x);
            x >>>= 32;
        }
        return (x << BYPASS_BITS) | nibble;
    }

    /** Word stream for {@code symbols} (channel-major, {@code perChannel} values per channel), already range-checked. */
    static byte[] encode(int[] symbols, int perChannel, EntropyTables tables) {
        int[][] rows = tables.rows();
        int[] lengths = tables.lengths();
        int[] offsets = tables.offsetArray();
        int channels = symbols.length / perChannel;
        long x = L;
        Words out = new Words();
        for (int ch = channels - 1; ch >= 0; ch--) {
            int[] cdf = rows[ch];
            int mv = lengths[ch] - 2;
            int off = offsets[ch];
            for (int i = perChannel - 1; i >= 0; i--) {
                long v = (long) symbols[ch * perChannel + i] - off;
                int start;
                int freq;
                if (v >= 0 && v < mv) {
                    start = cdf[(int) v];
                    freq = cdf[(int) v + 1] - start;
                } else {
                    long raw = v < 0 ? -2 * v - 1 : 2 * (v - mv);
                    int n = 0;
                    while ((raw >>> (BYPASS_BITS * n)) != 0) {
                        n++;
                    }
                    // Decode order: count nibbles (15 x q, then r), then raw nibbles low first; encode reverses it.
                    for (int j = n - 1; j >= 0; j--) {
                        x = putBits(x, (int) ((raw >>> (BYPASS_BITS * j)) & BYPASS_MAX), out);
                    }
                    x = putBits(x, n % BYPASS_MAX, out);
                    for (int k = 0; k < n / BYPASS_MAX; k++) {
                        x = putBits(x, BYPASS_MAX, out);
                    }
                    start = cdf[mv];
                    freq = cdf[mv + 1] - start;
                }
                if (x >= ((long) freq << 47)) {
                    out.add(x);
                    x >>>= 32;
                }
                x = ((x / freq) << EntropyTables.PRECISION) + (x % freq) + start;
            }
        }
        byte[] payload = new byte[4 * (out.size + 2)];
        putWord(payload, 0, (int) x);
        putWord(payload, 4, (int) (x >>> 32));
        for (int k = 0; k < out.size; k++) {
            putWord(payload, 8 + 4 * k, out.data[out.size - 1 - k]);
        }
        return payload;
    }

    private static void putWord(byte[] b, int at, int w) {
        b[at] = (byte) w;
        b[at + 1] = (byte) (w >>> 8);
        b[at + 2] = (byte) (w >>> 16);
        b[at + 3] = (byte) (w >>> 24);
    }

    /** Reads the little-endian payload words and the rANS decoder position. */
    private static final class Reader {
        final byte[] data;
        final int start;
        final int words;
        int pos = 2;

        Reader(byte[] data, int start, int words) {
            this.data = data;
            this.start = start;
            this.words = words;
        }

        long word(int k) {
            int at = start + 4 * k;
            return (data[at] & 0xFFL) | (data[at + 1] & 0xFFL) << 8 | (data[at + 2] & 0xFFL) << 16
                    | (data[at + 3] & 0xFFL) << 24;
        }

        long refill(long x, String where) throws CodecException.PayloadException {
            if (x >= L) {
                return x;
            }
            if (pos >= words) {
                throw new CodecException.PayloadException("payload ends early" + where);
            }
            return (x << 32) | word(pos++);
        }
    }

    /** Decodes {@code channels * perChannel} symbols from the word stream at {@code data[start..start+4*words)}. */
    static int[] decode(byte[] data, int start, int words, int channels, int perChannel, EntropyTables tables)
            throws CodecException.PayloadException {
        if (words < 2) {
            throw new CodecException.PayloadException("payload of " + 4 * words + " bytes is shorter than the 8-byte rANS state");
        }
        Reader r = new Reader(data, start, words);
        long x = r.word(0) | (r.word(1) << 32);
        if (x < L) {
            // Also true for states >= 2^63, which are negative as a long.
            throw new CodecException.PayloadException("initial rANS state 0x" + Long.toHexString(x) + " outside [2^31, 2^63)");
        }
        int[][] rows = tables.rows();
        int[] lengths = tables.lengths();
        int[] offsets = tables.offsetArray();
        int[] out = new int[channels * perChannel];
        String early = ": " + 4 * words + " bytes are not enough for " + out.length + " symbols";
        for (int ch = 0; ch < channels; ch++) {
            int[] cdf = rows[ch];
            int len = lengths[ch];
            int mv = len - 2;
            int off = offsets[ch];
            for (int i = 0; i < perChannel; i++) {
                int cum = (int) (x & MASK);
                int lo = 0;
                int hi = len - 1; // invariant: cdf[lo] <= cum < cdf[hi]
                while (hi - lo > 1) {
                    int mid = (lo + hi) >>> 1;
                    if (cdf[mid] <= cum) {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                int s = lo;
                x = (long) (cdf[s + 1] - cdf[s]) * (x >>> EntropyTables.PRECISION) + cum - cdf[s];
                x = r.refill(x, early);
                long value;
                if (s != mv) {
                    value = (long) s + off;
                } else {
                    int n = 0;
                    int nibble;
                    do {
                        nibble = (int) (x & BYPASS_MAX);
                        x = r.refill(x >>> BYPASS_BITS, " inside an escape code");
                        n += nibble;
                        if (n > MAX_BYPASS_NIBBLES) {
                            throw new CodecException.PayloadException("escape code announces more than " + MAX_BYPASS_NIBBLES + " nibbles");
                        }
                    } while (nibble == BYPASS_MAX);
                    long raw = 0;
                    for (int j = 0; j < n; j++) {
                        nibble = (int) (x & BYPASS_MAX);
                        x = r.refill(x >>> BYPASS_BITS, " inside an escape code");
                        raw |= (long) nibble << (BYPASS_BITS * j);
                    }
                    if (n > 0 && (raw >>> (BYPASS_BITS * (n - 1))) == 0) {
                        throw new CodecException.PayloadException("escape code with a leading zero nibble (not canonical)");
                    }
                    long v = (raw & 1) != 0 ? -(raw >>> 1) - 1 : (raw >>> 1) + mv;
                    value = v + off;
                    if (value < -Bitstream.SYMBOL_LIMIT || value > Bitstream.SYMBOL_LIMIT) {
                        throw new CodecException.PayloadException("escaped symbol " + value + " outside +-" + Bitstream.SYMBOL_LIMIT);
                    }
                }
                out[ch * perChannel + i] = (int) value;
            }
        }
        if (r.pos != words) {
            throw new CodecException.PayloadException((words - r.pos) + " unused 32-bit words after the last symbol");
        }
        if (x != L) {
            throw new CodecException.PayloadException("final rANS state 0x" + Long.toHexString(x) + " is not 2^31: the payload is corrupted");
        }
        return out;
    }
}
