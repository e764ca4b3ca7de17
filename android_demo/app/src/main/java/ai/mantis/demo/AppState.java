package ai.mantis.demo;

import ai.mantis.core.Bundle;
import ai.mantis.core.BundleException;
import ai.mantis.core.BundleInstaller;
import ai.mantis.core.BundleSync;
import ai.mantis.core.EdgePipeline;
import ai.mantis.core.KServeClient;
import ai.mantis.core.Manifest;
import ai.mantis.core.Predictions;
import ai.mantis.core.TransportException;
import ai.mantis.core.UrlException;
import ai.mantis.core.Urls;

import android.content.Context;
import android.graphics.Bitmap;
import android.net.Uri;
import android.os.Handler;
import android.os.Looper;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * The app's state for the life of its process, so it survives rotation and moving between screens: the loaded
 * bundle and ExecuTorch model, the last preview and answer, the status line. All work runs on one worker
 * thread, which alone touches the model (loading, running, closing); what the screens show is published under
 * this object's lock and announced on the main thread.
 */
final class AppState {
    /** Told on the main thread that what the screen shows changed. */
    interface Listener {
        void changed();
    }

    /** Told on the main thread how a download ended. */
    interface DownloadCallback {
        void done(String message);
    }

    private static final int TOP_K = 3;
    private static AppState instance;

    private final Context app;
    private final ExecutorService worker = Executors.newSingleThreadExecutor();
    private final Handler main = new Handler(Looper.getMainLooper());
    // worker thread only
    private Bundle bundle;
    private ExecuTorchEdgeModel model;
    private String refused;
    // shown on screen: guarded by this
    private String status = "Verifying the bundle ...";
    private String result = "";
    private Bitmap preview;
    private boolean busy;
    private Listener listener;

    private AppState(Context app) {
        this.app = app;
    }

    static synchronized AppState get(Context context) {
        if (instance == null) {
            instance = new AppState(context.getApplicationContext());
        }
        return instance;
    }

    synchronized String status() {
        return status;
    }

    synchronized String result() {
        return result;
    }

    synchronized Bitmap preview() {
        return preview;
    }

    synchronized boolean busy() {
        return busy;
    }

    /** The screen to tell (main thread), or null. */
    synchronized void setListener(Listener l) {
        listener = l;
    }

    private void publish(String newStatus, String newResult, Bitmap newPreview, boolean changePreview) {
        synchronized (this) {
            if (newStatus != null) {
                status = newStatus;
            }
            if (newResult != null) {
                result = newResult;
            }
            if (changePreview) {
                preview = newPreview;
            }
        }
        main.post(new Runnable() {
            @Override
            public void run() {
                Listener l;
                synchronized (AppState.this) {
                    l = listener;
                }
                if (l != null) {
                    l.changed();
                }
            }
        });
    }

    /** Settings changed (pins, perhaps): a bundle refused before is judged again on the next {@link #sync}. */
    void settingsChanged() {
        worker.execute(new Runnable() {
            @Override
            public void run() {
                refused = null;
            }
        });
    }

    void say(String message) {
        publish(message, null, null, false);
    }

    /**
     * Brings the loaded bundle up to date: installs the assets' bundle when the assets changed, loads the
     * installed one when it is not the loaded one, and otherwise does nothing (no re-hash on every return to
     * the screen).
     */
    void sync() {
        worker.execute(new Runnable() {
            @Override
            public void run() {
                syncNow();
            }
        });
    }

    private void syncNow() {
        File dir = Bundles.installed(app);
        String installed = Bundle.manifestSha256(dir);
        BundleSync.Action action = BundleSync.decide(bundle == null ? null : bundle.manifestSha256(), refused, installed,
                Bundles.assetsManifestSha256(app), Bundles.assetsInstalled(app));
        switch (action) {
            case KEEP:
                return;
            case NONE:
                say("No bundle: put one in the app's assets (see android_demo/README.md) or download one in Settings.");
                return;
            case INSTALL_FROM_ASSETS:
                ProgramCheck check = new ProgramCheck();
                try {
                    use(Bundles.installFromAssets(app, check), check.take());
                    return;
                } catch (BundleException e) {
                    check.discard();
                    say("The bundle in the app's assets was refused: " + e.getMessage());
                    if (bundle != null || installed == null) {
                        return;
                    }
                }
                loadInstalled();
                return;
            default:
                loadInstalled();
        }
    }

    private void loadInstalled() {
        try {
            Bundle b = Bundles.openInstalled(app);
            use(b, ExecuTorchEdgeModel.load(b));
            refused = null;
        } catch (BundleException e) {
            refused = Bundle.manifestSha256(Bundles.installed(app));
            say("Bundle refused: " + e.getMessage());
        }
    }

    /** Worker: makes {@code b} and {@code m} the loaded pair, closing the previous model here, on the worker. */
    private void use(Bundle b, ExecuTorchEdgeModel m) {
        if (model != null) {
            model.close();
        }
        bundle = b;
        model = m;
        Manifest mf = b.manifest();
        say("Bundle " + mf.modelName() + " verified and loaded (tables " + mf.tableId() + ", tasks " + mf.taskNames()
                + ", ExecuTorch program from executorch " + mf.producer().get("executorch") + "). Pick an image.");
    }

    /** Loads the staged bundle's program (load + warm-up) before the installer swaps it in; keeps the model. */
    private static final class ProgramCheck implements BundleInstaller.Check {
        private ExecuTorchEdgeModel loaded;

        @Override
        public void check(Bundle staged) throws BundleException {
            discard();
            // the model keeps its file open: the installer's rename of the directory does not affect it
            loaded = ExecuTorchEdgeModel.load(staged);
        }

        ExecuTorchEdgeModel take() {
            ExecuTorchEdgeModel m = loaded;
            loaded = null;
            return m;
        }

        void discard() {
            if (loaded != null) {
                loaded.close();
                loaded = null;
            }
        }
    }

    /** Downloads, verifies, loads (warm-up included) and only then installs the bundle at {@code url}. */
    void download(final String url, final DownloadCallback callback) {
        worker.execute(new Runnable() {
            @Override
            public void run() {
                ProgramCheck check = new ProgramCheck();
                String msg;
                try {
                    Bundle b = Bundles.download(app, url, check);
                    use(b, check.take());
                    msg = "Installed " + b.manifest().modelName() + " (tables " + b.manifest().tableId() + "), every device file verified, the program loaded.";
                } catch (BundleException | UrlException e) {
                    check.discard();
                    msg = "Refused, the installed bundle stays: " + e.getMessage();
                }
                final String text = msg;
                main.post(new Runnable() {
                    @Override
                    public void run() {
                        callback.done(text);
                    }
                });
            }
        });
    }

    private boolean start() {
        synchronized (this) {
            if (busy) {
                return false;
            }
            busy = true;
        }
        return true;
    }

    /** Classifies the image at {@code uri} (gallery). */
    void classify(final Uri uri) {
        if (!start()) {
            say("Still working on the previous image.");
            return;
        }
        worker.execute(new Runnable() {
            @Override
            public void run() {
                File tmp = new File(app.getCacheDir(), "picked-image");
                try {
                    copy(uri, tmp);
                    classifyNow(tmp);
                } catch (IOException e) {
                    finish("Cannot read the picked image: " + e.getMessage(), null, false);
                } finally {
                    if (!tmp.delete()) {
                        tmp.deleteOnExit();
                    }
                }
            }
        });
    }

    /** Classifies the photo the camera app wrote into {@code file}. */
    void classify(final File file) {
        if (!start()) {
            say("Still working on the previous image.");
            return;
        }
        worker.execute(new Runnable() {
            @Override
            public void run() {
                classifyNow(file);
            }
        });
    }

    private void copy(Uri uri, File dest) throws IOException {
        try (InputStream in = app.getContentResolver().openInputStream(uri); OutputStream out = new FileOutputStream(dest)) {
            if (in == null) {
                throw new IOException("the gallery gave no data for " + uri);
            }
            byte[] buf = new byte[1 << 16];
            int n;
            while ((n = in.read(buf)) > 0) {
                out.write(buf, 0, n);
            }
        }
    }

    private void finish(String text, Bitmap newPreview, boolean changePreview) {
        synchronized (this) {
            busy = false;
        }
        publish(null, text, newPreview, changePreview);
    }

    /** Worker: decode, encode on the device, send, show what came back. */
    private void classifyNow(File file) {
        Bundle b = bundle;
        if (b == null || model == null) {
            finish("No verified bundle: open Settings to install one.", null, false);
            return;
        }
        Manifest m = b.manifest();
        Images.Decoded img;
        try {
            img = Images.load(file, m.preprocessing().inputSize()[0], m.preprocessing().inputSize()[1]);
        } catch (IOException e) {
            finish(e.getMessage(), null, false);
            return;
        }
        publish(null, "Working ...", img.preview(), true);
        Settings s = Settings.load(app);
        StringBuilder sb = new StringBuilder();
        try {
            Urls.parse(s.serverUrl(), "server URL", Bundles.cleartextHosts(app));
            long t0 = System.nanoTime();
            EdgePipeline.Encoded enc = new EdgePipeline(b, model).encode(img.argb(), img.width(), img.height());
            KServeClient client = KServeClient.withDefaults(s.serverUrl(), s.token());
            List<byte[]> bits = Collections.singletonList(enc.bitstream());
            KServeClient.InferResult r = client.infer(m.modelName(), bits, TOP_K);
            double totalMs = (System.nanoTime() - t0) / 1e6;
            Predictions.ImagePrediction p = Predictions.fromOutputs(r.outputs(), m, 1).get(0);
            sb.append("Active tasks: ").append(p.activeTasks()).append("\n\n");
            for (Predictions.TaskPrediction t : p.tasks().values()) {
                sb.append(t.task()).append(":\n");
                for (int i = 0; i < t.labels().size(); i++) {
                    sb.append(String.format(Locale.ROOT, "  %s  %.1f %%%n", t.labels().get(i), 100 * t.probabilities().get(i)));
                }
            }
            sb.append(String.format(Locale.ROOT, "%nImage decoded at 1/%d of each side: %dx%d%n", img.sample(), img.width(), img.height()));
            sb.append(String.format(Locale.ROOT, "Bitstream: %d bytes%nHTTP request body: %d bytes, response body: %d bytes%n",
                    enc.bitstream().length, r.requestBytes(), r.responseBytes()));
            sb.append(String.format(Locale.ROOT,
                    "Time: preprocess %.2f ms, edge client %.2f ms, entropy coding %.2f ms, server round trip %.2f ms (%d attempt%s), total %.2f ms",
                    enc.preprocessMs(), enc.edgeMs(), enc.entropyMs(), r.elapsedMs(), r.attempts(), r.attempts() == 1 ? "" : "s", totalMs));
        } catch (UrlException e) {
            sb.append("Server URL: ").append(e.getMessage());
        } catch (TransportException e) {
            sb.append("No answer: ").append(e.getMessage());
        } catch (BundleException e) {
            sb.append("Bundle problem: ").append(e.getMessage());
        } catch (OutOfMemoryError e) {
            sb.append("Not enough memory for this image.");
        } catch (Exception e) {
            sb.append("Failed: ").append(e);
        }
        finish(sb.toString(), null, false);
    }
}
