package ai.mantis.demo;

import ai.mantis.core.BundleException;
import ai.mantis.core.EdgePipeline;
import ai.mantis.core.KServeClient;
import ai.mantis.core.Predictions;
import ai.mantis.core.TransportException;

import android.app.Activity;
import android.content.Intent;
import android.graphics.Bitmap;
import android.net.Uri;
import android.os.Bundle;
import android.provider.MediaStore;
import android.view.View;
import android.widget.Button;
import android.widget.ImageView;
import android.widget.LinearLayout;
import android.widget.ScrollView;
import android.widget.TextView;

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
 * Picks an image (camera or gallery), runs the bundle's edge client with ExecuTorch, entropy-codes the latent
 * and sends the bitstream to serve.py; shows each active task's labels, the bytes sent and received, and the
 * time per stage.
 */
public final class MainActivity extends Activity {
    private static final int PICK = 1;
    private static final int CAPTURE = 2;
    private static final int TOP_K = 3;

    private final ExecutorService worker = Executors.newSingleThreadExecutor();
    private ai.mantis.core.Bundle bundle;
    private ExecuTorchEdgeModel model;
    private ImageView image;
    private TextView result;

    @Override
    protected void onCreate(Bundle state) {
        super.onCreate(state);
        LinearLayout root = new LinearLayout(this);
        root.setOrientation(LinearLayout.VERTICAL);
        root.setPadding(32, 32, 32, 32);
        LinearLayout buttons = new LinearLayout(this);
        buttons.addView(button("Camera", new Runnable() {
            @Override
            public void run() {
                startActivityForResult(new Intent(MediaStore.ACTION_IMAGE_CAPTURE), CAPTURE);
            }
        }));
        buttons.addView(button("Gallery", new Runnable() {
            @Override
            public void run() {
                Intent pick = new Intent(Intent.ACTION_GET_CONTENT);
                pick.setType("image/*");
                startActivityForResult(pick, PICK);
            }
        }));
        buttons.addView(button("Settings", new Runnable() {
            @Override
            public void run() {
                startActivity(new Intent(MainActivity.this, SettingsActivity.class));
            }
        }));
        image = new ImageView(this);
        image.setAdjustViewBounds(true);
        image.setMaxHeight(720);
        result = new TextView(this);
        result.setTextIsSelectable(true);
        root.addView(buttons);
        root.addView(image);
        root.addView(result);
        ScrollView scroll = new ScrollView(this);
        scroll.addView(root);
        setContentView(scroll);
        show("Verifying the bundle ...");
        worker.execute(loader);
    }

    private final Runnable loader = new Runnable() {
        @Override
        public void run() {
            loadBundle();
        }
    };

    @Override
    protected void onResume() {
        super.onResume();
        if (bundle != null) {
            // Settings may have installed another bundle: verify and load whatever is installed now
            worker.execute(loader);
        }
    }

    private Button button(String text, final Runnable action) {
        Button b = new Button(this);
        b.setText(text);
        b.setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                action.run();
            }
        });
        return b;
    }

    private void show(final String text) {
        runOnUiThread(new Runnable() {
            @Override
            public void run() {
                result.setText(text);
            }
        });
    }

    /** Runs on the worker: verify the installed bundle (installing it from the assets the first time), load edge.pte. */
    private void loadBundle() {
        try {
            ai.mantis.core.Bundle b = Bundles.open(this);
            if (model != null) {
                model.close();
            }
            model = new ExecuTorchEdgeModel(b.file(b.manifest.edge.file), b.manifest);
            bundle = b;
            show("Bundle " + b.manifest.modelName + " verified (tables " + b.manifest.tableId + ", tasks "
                    + b.manifest.taskNames() + "). Pick an image.");
        } catch (BundleException e) {
            bundle = null;
            show("Bundle refused: " + e.getMessage());
        } catch (RuntimeException e) {
            bundle = null;
            show("ExecuTorch could not load the edge client: " + e);
        }
    }

    @Override
    protected void onActivityResult(int requestCode, int resultCode, Intent data) {
        super.onActivityResult(requestCode, resultCode, data);
        if (resultCode != RESULT_OK || data == null) {
            return;
        }
        if (requestCode == PICK && data.getData() != null) {
            final Uri uri = data.getData();
            worker.execute(new Runnable() {
                @Override
                public void run() {
                    classifyUri(uri);
                }
            });
        } else if (requestCode == CAPTURE && data.getExtras() != null && data.getExtras().get("data") instanceof Bitmap) {
            // Without a FileProvider the camera app hands back its preview-sized picture, already upright.
            final Bitmap bmp = (Bitmap) data.getExtras().get("data");
            worker.execute(new Runnable() {
                @Override
                public void run() {
                    classify(bmp);
                }
            });
        }
    }

    private void classifyUri(Uri uri) {
        File tmp = new File(getCacheDir(), "picked-image");
        try (InputStream in = getContentResolver().openInputStream(uri); OutputStream out = new FileOutputStream(tmp)) {
            if (in == null) {
                throw new IOException("the gallery gave no data for " + uri);
            }
            byte[] buf = new byte[1 << 16];
            int n;
            while ((n = in.read(buf)) > 0) {
                out.write(buf, 0, n);
            }
        } catch (IOException e) {
            show("Cannot read the picked image: " + e.getMessage());
            return;
        }
        try {
            classify(Images.load(tmp));
        } catch (IOException e) {
            show(e.getMessage());
        } finally {
            if (!tmp.delete()) {
                tmp.deleteOnExit();
            }
        }
    }

    /** Runs on the worker: encode on the device, send, show what came back. */
    private void classify(final Bitmap bmp) {
        runOnUiThread(new Runnable() {
            @Override
            public void run() {
                image.setImageBitmap(bmp);
            }
        });
        ai.mantis.core.Bundle b = bundle;
        if (b == null) {
            show("No verified bundle: open Settings to install one.");
            return;
        }
        Settings s = Settings.load(this);
        StringBuilder sb = new StringBuilder();
        try {
            long t0 = System.nanoTime();
            EdgePipeline.Encoded enc = new EdgePipeline(b, model).encode(Images.argb(bmp), bmp.getWidth(), bmp.getHeight());
            KServeClient client = KServeClient.withDefaults(s.serverUrl, s.token);
            List<byte[]> bits = Collections.singletonList(enc.bitstream);
            KServeClient.InferResult r = client.infer(b.manifest.modelName, bits, TOP_K);
            double totalMs = (System.nanoTime() - t0) / 1e6;
            Predictions.ImagePrediction p = Predictions.fromOutputs(r.outputs, b.manifest, 1).get(0);
            sb.append("Active tasks: ").append(p.activeTasks).append("\n\n");
            for (Predictions.TaskPrediction t : p.tasks.values()) {
                sb.append(t.task).append(":\n");
                for (int i = 0; i < t.labels.size(); i++) {
                    sb.append(String.format(Locale.ROOT, "  %s  %.1f %%%n", t.labels.get(i), 100 * t.probabilities.get(i)));
                }
            }
            sb.append(String.format(Locale.ROOT, "%nBitstream: %d bytes%nHTTP request body: %d bytes, response body: %d bytes%n",
                    enc.bitstream.length, r.requestBytes, r.responseBytes));
            sb.append(String.format(Locale.ROOT,
                    "Time: preprocess %.2f ms, edge client %.2f ms, entropy coding %.2f ms, server round trip %.2f ms (%d attempt%s), total %.2f ms",
                    enc.preprocessMs, enc.edgeMs, enc.entropyMs, r.elapsedMs, r.attempts, r.attempts == 1 ? "" : "s", totalMs));
        } catch (TransportException e) {
            sb.append("No answer: ").append(e.getMessage());
        } catch (BundleException e) {
            sb.append("Bundle problem: ").append(e.getMessage());
        } catch (Exception e) {
            sb.append("Failed: ").append(e);
        }
        show(sb.toString());
    }

    @Override
    protected void onDestroy() {
        worker.shutdownNow();
        if (model != null) {
            model.close();
        }
        super.onDestroy();
    }
}
