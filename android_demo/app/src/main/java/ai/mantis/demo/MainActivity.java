package ai.mantis.demo;

import android.app.Activity;
import android.content.ActivityNotFoundException;
import android.content.ClipData;
import android.content.Intent;
import android.net.Uri;
import android.os.Bundle;
import android.provider.MediaStore;
import android.view.View;
import android.widget.Button;
import android.widget.ImageView;
import android.widget.LinearLayout;
import android.widget.ScrollView;
import android.widget.TextView;

/**
 * Picks an image (camera or gallery) and shows what {@link AppState} makes of it: each active task's labels, the
 * bytes sent and received, the time per stage. Holds no state of its own: a rotation or a trip to Settings
 * finds the preview, the answer and any request in flight where they were.
 */
public final class MainActivity extends Activity implements AppState.Listener {
    private static final int PICK = 1;
    private static final int CAPTURE = 2;

    private AppState state;
    private ImageView image;
    private TextView status;
    private TextView result;

    @Override
    protected void onCreate(Bundle saved) {
        super.onCreate(saved);
        state = AppState.get(this);
        LinearLayout root = new LinearLayout(this);
        root.setOrientation(LinearLayout.VERTICAL);
        root.setPadding(32, 32, 32, 32);
        LinearLayout buttons = new LinearLayout(this);
        buttons.addView(button("Camera", new Runnable() {
            @Override
            public void run() {
                capture();
            }
        }));
        buttons.addView(button("Gallery", new Runnable() {
            @Override
            public void run() {
                Intent pick = new Intent(Intent.ACTION_GET_CONTENT);
                pick.setType("image/*");
                pick.addCategory(Intent.CATEGORY_OPENABLE);
                start(pick, PICK, "No app to pick an image from is installed.");
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
        status = new TextView(this);
        result = new TextView(this);
        result.setTextIsSelectable(true);
        root.addView(buttons);
        root.addView(status);
        root.addView(image);
        root.addView(result);
        ScrollView scroll = new ScrollView(this);
        scroll.addView(root);
        setContentView(scroll);
    }

    private void capture() {
        Uri out = CaptureProvider.uri();
        Intent take = new Intent(MediaStore.ACTION_IMAGE_CAPTURE);
        take.putExtra(MediaStore.EXTRA_OUTPUT, out);
        take.setClipData(ClipData.newRawUri("photo", out));
        take.addFlags(Intent.FLAG_GRANT_WRITE_URI_PERMISSION | Intent.FLAG_GRANT_READ_URI_PERMISSION);
        if (take.resolveActivity(getPackageManager()) == null) {
            state.say("No camera app is installed: pick an image from the gallery instead.");
            return;
        }
        start(take, CAPTURE, "No camera app is installed: pick an image from the gallery instead.");
    }

    private void start(Intent intent, int request, String missing) {
        try {
            startActivityForResult(intent, request);
        } catch (ActivityNotFoundException | SecurityException e) {
            state.say(missing);
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

    @Override
    protected void onStart() {
        super.onStart();
        state.setListener(this);
        changed();
    }

    @Override
    protected void onResume() {
        super.onResume();
        // cheap unless the installed bundle or the assets changed (BundleSync)
        state.sync();
    }

    @Override
    protected void onStop() {
        state.setListener(null);
        super.onStop();
    }

    @Override
    public void changed() {
        status.setText(state.status());
        result.setText(state.busy() ? "Working ...\n\n" + state.result() : state.result());
        image.setImageBitmap(state.preview());
    }

    @Override
    protected void onActivityResult(int requestCode, int resultCode, Intent data) {
        super.onActivityResult(requestCode, resultCode, data);
        if (resultCode != RESULT_OK) {
            return;
        }
        if (requestCode == CAPTURE) {
            state.classify(CaptureProvider.file(this));
        } else if (requestCode == PICK && data != null && data.getData() != null) {
            state.classify(data.getData());
        }
    }
}
