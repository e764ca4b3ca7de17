package ai.mantis.demo;

import ai.mantis.core.BundleException;

import android.app.Activity;
import android.os.Bundle;
import android.text.InputType;
import android.view.View;
import android.widget.Button;
import android.widget.EditText;
import android.widget.LinearLayout;
import android.widget.TextView;

import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/** Server URL, bearer token, and a URL to download a bundle from (verified before it replaces the current one). */
public final class SettingsActivity extends Activity {
    private final ExecutorService worker = Executors.newSingleThreadExecutor();

    @Override
    protected void onCreate(Bundle state) {
        super.onCreate(state);
        Settings s = Settings.load(this);
        LinearLayout root = new LinearLayout(this);
        root.setOrientation(LinearLayout.VERTICAL);
        root.setPadding(32, 32, 32, 32);
        final EditText server = field(root, "Server URL (serve.py)", s.serverUrl, InputType.TYPE_TEXT_VARIATION_URI);
        final EditText token = field(root, "Bearer token", s.token, InputType.TYPE_TEXT_VARIATION_PASSWORD);
        final EditText bundleUrl = field(root, "Bundle URL (empty: the bundle in the app's assets)", s.bundleUrl,
                InputType.TYPE_TEXT_VARIATION_URI);
        final TextView status = new TextView(this);
        Button save = new Button(this);
        save.setText("Save");
        save.setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                Settings.save(SettingsActivity.this, server.getText().toString(), token.getText().toString(),
                        bundleUrl.getText().toString());
                status.setText("Saved.");
            }
        });
        Button install = new Button(this);
        install.setText("Download and install bundle");
        install.setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                final String url = bundleUrl.getText().toString().trim();
                if (url.isEmpty()) {
                    status.setText("Enter the URL of a bundle directory first.");
                    return;
                }
                status.setText("Downloading " + url + " ...");
                worker.execute(new Runnable() {
                    @Override
                    public void run() {
                        download(url, status);
                    }
                });
            }
        });
        root.addView(save);
        root.addView(install);
        root.addView(status);
        setContentView(root);
    }

    /** Runs on the worker: download, verify, install; the outcome goes to {@code status}. */
    private void download(String url, final TextView status) {
        String msg;
        try {
            ai.mantis.core.Bundle b = Bundles.download(this, url);
            msg = "Installed " + b.manifest.modelName + " (tables " + b.manifest.tableId + "), every file verified.";
        } catch (BundleException e) {
            msg = "Refused: " + e.getMessage();
        }
        final String text = msg;
        runOnUiThread(new Runnable() {
            @Override
            public void run() {
                status.setText(text);
            }
        });
    }

    private EditText field(LinearLayout root, String label, String value, int variation) {
        TextView l = new TextView(this);
        l.setText(label);
        EditText e = new EditText(this);
        e.setInputType(InputType.TYPE_CLASS_TEXT | variation);
        e.setText(value);
        root.addView(l);
        root.addView(e);
        return e;
    }

    @Override
    protected void onDestroy() {
        worker.shutdownNow();
        super.onDestroy();
    }
}
