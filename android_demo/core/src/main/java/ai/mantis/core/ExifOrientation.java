package ai.mantis.core;

import java.io.IOException;
import java.io.InputStream;

/**
 * The EXIF orientation (1..8, TIFF tag 0x0112 of IFD0) of a JPEG file, read as Pillow's
 * {@code ImageOps.exif_transpose} finds it: in the first APP1 segment that starts with {@code Exif\0\0}, in
 * either byte order. Anything else (no EXIF, another format, a malformed segment, a value outside 1..8) is
 * {@link #NORMAL}: an image is never refused for its metadata. Reads at most the segments before the image
 * data.
 */
public final class ExifOrientation {
    public static final int NORMAL = 1;
    public static final int FLIP_HORIZONTAL = 2;
    public static final int ROTATE_180 = 3;
    public static final int FLIP_VERTICAL = 4;
    public static final int TRANSPOSE = 5;
    public static final int ROTATE_90 = 6;
    public static final int TRANSVERSE = 7;
    public static final int ROTATE_270 = 8;
    private static final int TAG_ORIENTATION = 0x0112;
    private static final int TYPE_SHORT = 3;

    private ExifOrientation() {
    }

    /** The orientation of the JPEG in {@code in} (the stream is read, not closed). */
    public static int read(InputStream in) throws IOException {
        if (in.read() != 0xFF || in.read() != 0xD8) {
            return NORMAL;
        }
        while (true) {
            int b = in.read();
            if (b != 0xFF) {
                return NORMAL;
            }
            int marker = in.read();
            while (marker == 0xFF) {
                marker = in.read();
            }
            if (marker < 0 || marker == 0xDA || marker == 0xD9) {
                return NORMAL;
            }
            if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {
                continue;
            }
            int hi = in.read();
            int lo = in.read();
            if (hi < 0 || lo < 0) {
                return NORMAL;
            }
            int length = (hi << 8 | lo) - 2;
            if (length < 0) {
                return NORMAL;
            }
            byte[] seg = new byte[length];
            int got = 0;
            while (got < length) {
                int n = in.read(seg, got, length - got);
                if (n < 0) {
                    return NORMAL;
                }
                got += n;
            }
            if (marker == 0xE1 && length >= 6 && seg[0] == 'E' && seg[1] == 'x' && seg[2] == 'i' && seg[3] == 'f' && seg[4] == 0 && seg[5] == 0) {
                return fromTiff(seg, 6);
            }
        }
    }

    /**
     * The pixels of a {@code width x height} ARGB image turned upright as {@code orientation} says (as Pillow's
     * {@code exif_transpose}): quarter turns and mirrors, no resampling. Returns {@code {pixels, {width, height}}}
     * (the sides swap for 5..8).
     */
    public static int[][] upright(int[] argb, int width, int height, int orientation) {
        if (argb.length != width * height) {
            throw new IllegalArgumentException("pixel array holds " + argb.length + " values for a " + width + "x" + height + " image");
        }
        boolean swap = orientation >= TRANSPOSE && orientation <= ROTATE_270;
        int ow = swap ? height : width;
        int oh = swap ? width : height;
        int[] out = new int[argb.length];
        for (int y = 0; y < oh; y++) {
            for (int x = 0; x < ow; x++) {
                int sx;
                int sy;
                switch (orientation) {
                    case FLIP_HORIZONTAL:
                        sx = width - 1 - x;
                        sy = y;
                        break;
                    case ROTATE_180:
                        sx = width - 1 - x;
                        sy = height - 1 - y;
                        break;
                    case FLIP_VERTICAL:
                        sx = x;
                        sy = height - 1 - y;
                        break;
                    case TRANSPOSE:
                        sx = y;
                        sy = x;
                        break;
                    case ROTATE_90:
                        sx = y;
                        sy = height - 1 - x;
                        break;
                    case TRANSVERSE:
                        sx = width - 1 - y;
                        sy = height - 1 - x;
                        break;
                    case ROTATE_270:
                        sx = width - 1 - y;
                        sy = x;
                        break;
                    default:
                        sx = x;
                        sy = y;
                }
                out[y * ow + x] = argb[sy * width + sx];
            }
        }
        return new int[][] {out, {ow, oh}};
    }

    /** The orientation in the TIFF structure at {@code seg[off..]}, or {@link #NORMAL}. */
    static int fromTiff(byte[] seg, int off) {
        int n = seg.length - off;
        if (n < 8) {
            return NORMAL;
        }
        boolean little;
        if (seg[off] == 'I' && seg[off + 1] == 'I') {
            little = true;
        } else if (seg[off] == 'M' && seg[off + 1] == 'M') {
            little = false;
        } else {
            return NORMAL;
        }
        if (u16(seg, off + 2, little) != 42) {
            return NORMAL;
        }
        long ifd = u32(seg, off + 4, little);
        if (ifd < 8 || ifd + 2 > n) {
            return NORMAL;
        }
        int entries = u16(seg, off + (int) ifd, little);
        for (int i = 0; i < entries; i++) {
            int e = off + (int) ifd + 2 + 12 * i;
            if (e + 12 > seg.length) {
                return NORMAL;
            }
            if (u16(seg, e, little) == TAG_ORIENTATION) {
                if (u16(seg, e + 2, little) != TYPE_SHORT || u32(seg, e + 4, little) != 1) {
                    return NORMAL;
                }
                int v = u16(seg, e + 8, little);
                return v >= NORMAL && v <= ROTATE_270 ? v : NORMAL;
            }
        }
        return NORMAL;
    }

    private static int u16(byte[] b, int i, boolean little) {
        int x = b[i] & 0xFF;
        int y = b[i + 1] & 0xFF;
        return little ? (y << 8 | x) : (x << 8 | y);
    }

    private static long u32(byte[] b, int i, boolean little) {
        long v = 0;
        for (int k = 0; k < 4; k++) {
            v |= (long) (b[i + k] & 0xFF) << (little ? 8 * k : 8 * (3 - k));
        }
        return v;
    }
}
