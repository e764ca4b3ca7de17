package ai.mantis.demo;

import ai.mantis.core.Preprocess;

import android.graphics.Bitmap;
import android.graphics.BitmapFactory;
import android.graphics.Matrix;
import android.media.ExifInterface;

import java.io.File;
import java.io.IOException;

/**
 * Image files -> upright ARGB pixels, as runtime_edge's load_image reads them: decoded by Android's
 * BitmapFactory (where the Python edge uses Pillow), refused above {@link Preprocess#MAX_PIXELS} before any
 * pixel is decoded, turned upright as the EXIF orientation says.
 */
final class Images {
    private Images() {
    }

    /** Decoded, upright pixels of {@code file}; IOException naming the file when it is not a readable image. */
    static Bitmap load(File file) throws IOException {
        BitmapFactory.Options bounds = new BitmapFactory.Options();
        bounds.inJustDecodeBounds = true;
        BitmapFactory.decodeFile(file.getPath(), bounds);
        if (bounds.outWidth <= 0 || bounds.outHeight <= 0) {
            throw new IOException("image " + file.getName() + ": not a readable image");
        }
        if ((long) bounds.outWidth * bounds.outHeight > Preprocess.MAX_PIXELS) {
            throw new IOException("image " + file.getName() + ": " + bounds.outWidth + "x" + bounds.outHeight
                    + " pixels is over the limit of " + Preprocess.MAX_PIXELS + " pixels");
        }
        BitmapFactory.Options opts = new BitmapFactory.Options();
        opts.inPreferredConfig = Bitmap.Config.ARGB_8888;
        opts.inScaled = false;
        Bitmap bmp = BitmapFactory.decodeFile(file.getPath(), opts);
        if (bmp == null) {
            throw new IOException("image " + file.getName() + ": decoding failed (truncated or unsupported)");
        }
        return upright(bmp, new ExifInterface(file.getPath()).getAttributeInt(ExifInterface.TAG_ORIENTATION,
                ExifInterface.ORIENTATION_NORMAL));
    }

    /** Applies an EXIF orientation (1..8) exactly: quarter turns and mirrors, no resampling. */
    static Bitmap upright(Bitmap bmp, int orientation) {
        Matrix m = new Matrix();
        switch (orientation) {
            case ExifInterface.ORIENTATION_FLIP_HORIZONTAL:
                m.setScale(-1, 1);
                break;
            case ExifInterface.ORIENTATION_ROTATE_180:
                m.setRotate(180);
                break;
            case ExifInterface.ORIENTATION_FLIP_VERTICAL:
                m.setScale(1, -1);
                break;
            case ExifInterface.ORIENTATION_TRANSPOSE:
                m.setRotate(90);
                m.postScale(-1, 1);
                break;
            case ExifInterface.ORIENTATION_ROTATE_90:
                m.setRotate(90);
                break;
            case ExifInterface.ORIENTATION_TRANSVERSE:
                m.setRotate(-90);
                m.postScale(-1, 1);
                break;
            case ExifInterface.ORIENTATION_ROTATE_270:
                m.setRotate(-90);
                break;
            default:
                return bmp;
        }
        return Bitmap.createBitmap(bmp, 0, 0, bmp.getWidth(), bmp.getHeight(), m, false);
    }

    /** The bitmap's pixels as ARGB_8888 ints, row-major (what {@link Preprocess} takes). */
    static int[] argb(Bitmap bmp) {
        Bitmap b = bmp.getConfig() == Bitmap.Config.ARGB_8888 ? bmp : bmp.copy(Bitmap.Config.ARGB_8888, false);
        int[] px = new int[b.getWidth() * b.getHeight()];
        b.getPixels(px, 0, b.getWidth(), 0, 0, b.getWidth(), b.getHeight());
        return px;
    }
}
