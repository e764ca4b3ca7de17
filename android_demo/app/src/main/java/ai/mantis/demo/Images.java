package ai.mantis.demo;

import ai.mantis.core.ExifOrientation;
import ai.mantis.core.Preprocess;
import ai.mantis.core.Subsample;

import android.graphics.Bitmap;
import android.graphics.BitmapFactory;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;

/**
 * Image files -> upright ARGB pixels for the edge client, and a small preview. BitmapFactory decodes (where the
 * Python edge uses Pillow) with subsampling ({@link Subsample#forModel}: at least twice the model's input on
 * each side, so a 48 MP photo never needs its full pixel array), as ARGB_8888 without premultiplied alpha (the
 * colour values Pillow reads; {@code getPixels} gives sRGB); images over {@link Preprocess#MAX_PIXELS} are
 * refused before decoding, as runtime_edge refuses them; the EXIF orientation is read and applied by
 * {@code core} ({@link ExifOrientation}), on the pixel array. Running out of memory is an IOException with a
 * message, not a dead process.
 */
final class Images {
    /** Longer side of the preview shown on screen (pixels). */
    static final int PREVIEW_SIDE = 512;

    private Images() {
    }

    /** Upright pixels for the model, and a preview. */
    static final class Decoded {
        private final int[] argb;
        private final int width;
        private final int height;
        private final int sample;
        private final Bitmap preview;

        Decoded(int[] argb, int width, int height, int sample, Bitmap preview) {
            this.argb = argb;
            this.width = width;
            this.height = height;
            this.sample = sample;
            this.preview = preview;
        }

        /** The pixels (not copied: the array is this object's and handed on once). */
        int[] argb() {
            return argb;
        }

        int width() {
            return width;
        }

        int height() {
            return height;
        }

        /** The subsampling the decoder applied (1: full resolution). */
        int sample() {
            return sample;
        }

        Bitmap preview() {
            return preview;
        }
    }

    /** Decodes {@code file} for a model whose input is {@code inputH x inputW}; IOException naming the file on failure. */
    static Decoded load(File file, int inputH, int inputW) throws IOException {
        BitmapFactory.Options bounds = new BitmapFactory.Options();
        bounds.inJustDecodeBounds = true;
        BitmapFactory.decodeFile(file.getPath(), bounds);
        int w = bounds.outWidth;
        int h = bounds.outHeight;
        if (w <= 0 || h <= 0) {
            throw new IOException("image " + file.getName() + ": not a readable image");
        }
        if ((long) w * h > Preprocess.MAX_PIXELS) {
            throw new IOException("image " + file.getName() + ": " + w + "x" + h + " pixels is over the limit of "
                    + Preprocess.MAX_PIXELS + " pixels");
        }
        int sample = Subsample.forModel(w, h, inputH, inputW);
        BitmapFactory.Options opts = new BitmapFactory.Options();
        opts.inPreferredConfig = Bitmap.Config.ARGB_8888;
        opts.inPremultiplied = false;
        opts.inScaled = false;
        opts.inSampleSize = sample;
        int orientation;
        try (InputStream in = new FileInputStream(file)) {
            orientation = ExifOrientation.read(in);
        }
        try {
            Bitmap bmp = BitmapFactory.decodeFile(file.getPath(), opts);
            if (bmp == null) {
                throw new IOException("image " + file.getName() + ": decoding failed (truncated or unsupported)");
            }
            int bw = bmp.getWidth();
            int bh = bmp.getHeight();
            int[] px = new int[bw * bh];
            bmp.getPixels(px, 0, bw, 0, 0, bw, bh);
            bmp.recycle();
            int[][] up = ExifOrientation.upright(px, bw, bh, orientation);
            return new Decoded(up[0], up[1][0], up[1][1], sample, preview(up[0], up[1][0], up[1][1]));
        } catch (OutOfMemoryError e) {
            throw new IOException("image " + file.getName() + ": not enough memory to decode its " + w + "x" + h
                    + " pixels (subsampled by " + sample + "); try a smaller image");
        }
    }

    private static Bitmap preview(int[] argb, int w, int h) {
        Bitmap full = Bitmap.createBitmap(argb, w, h, Bitmap.Config.ARGB_8888);
        int longer = Math.max(w, h);
        if (longer <= PREVIEW_SIDE) {
            return full;
        }
        Bitmap small = Bitmap.createScaledBitmap(full, Math.max(1, w * PREVIEW_SIDE / longer), Math.max(1, h * PREVIEW_SIDE / longer), true);
        full.recycle();
        return small;
    }
}
