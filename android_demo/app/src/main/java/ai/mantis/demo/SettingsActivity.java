package ai.mantis.demo;

import android.app.Activity;
import android.os.Bundle;
import android.text.InputType;
import android.view.View;
import android.widget.Button;
import android.widget.EditText;
import android.widget.LinearLayout;
import android.widget.ScrollView;
import android.widget.TextView;

/**
 * Server URL, bearer token, pinned manifest hashes, and a URL to download a bundle from: verified, checked and
 * loaded before it replaces the current one; the main screen uses it as soon as it is installed.
 */
public final class SettingsActivity extends Activity {
    @Override
    protected void onCreate(Bundle saved) {
        super.onCreate(saved);
        Settings s = Settings.load(this);
        LinearLayout root = new LinearLayout(this);
        root.setOrientation(LinearLayout.VERTICAL);
        root.setPadding(32, 32, 32, 32);
        final EditText server = field(root, "Server URL (serve.py; https://, or http:// to the hosts of the network security config)",
                s.serverUrl(), InputType.TYPE_TEXT_VARIATION_URI);
        final EditText token = field(root, "Bearer token", s.token(), InputType.TYPE_TEXT_VARIATION_PASSWORD);
        final EditText bundleUrl = field(root, "Bundle URL (a bundle directory served over HTTPS)", s.bundleUrl(),
                InputType.TYPE_TEXT_VARIATION_URI);
        final EditText pins = field(root, "Pinned manifest SHA-256, one a line (empty: any verified bundle)", s.pins(),
                InputType.TYPE_TEXT_FLAG_MULTI_LINE);
        final TextView status = new TextView(this);
        Button save = new Button(this);
        save.setText("Save");
        save.setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                Settings.save(SettingsActivity.this, server.getText().toString(), token.getText().toString(),
                        bundleUrl.getText().toString(), pins.getText().toString());
                AppState.get(SettingsActivity.this).settingsChanged();
                status.setText("Saved.");
            }
        });
        Button install = new Button(this);
        install.setText("Download and install bundle");
        install.setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                Settings.save(SettingsActivity.this, server.getText().toString(), token.getText().toString(),
                        bundleUrl.getText().toString(), pins.getText().toString());
                String url = bundleUrl.getText().toString().trim();
                status.setText("Downloading " + url + " ...");
                AppState.get(SettingsActivity.this).download(url, new AppState.DownloadCallback() {
                    @Override
                    public void done(String message) {
                        status.setText(message);
                    }
                });
            }
        });
        root.addView(save);
        root.addView(install);
        root.addView(status);
        ScrollView scroll = new ScrollView(this);
        scroll.addView(root);
        setContentView(scroll);
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
}
