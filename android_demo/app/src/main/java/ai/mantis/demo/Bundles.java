package ai.mantis.demo;

import ai.mantis.core.Bundle;
import ai.mantis.core.BundleException;
import ai.mantis.core.BundleInstaller;

import android.content.Context;
import android.content.res.AssetManager;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;

/** Where the app's bundle comes from: its assets ({@code assets/bundle/}) or a URL, always verified. */
final class Bundles {
    static final String ASSET_DIR = "bundle";

    private Bundles() {
    }

    static File installed(Context context) {
        return new File(context.getFilesDir(), "bundle");
    }

    /** The installed bundle, verified; on first start it is installed from the assets. */
    static Bundle open(Context context) throws BundleException {
        File dir = installed(context);
        if (!new File(dir, "manifest.json").isFile()) {
            return BundleInstaller.install(assets(context.getAssets()), dir);
        }
        Bundle b = Bundle.load(dir);
        b.requireEdgeRuntime("executorch");
        return b;
    }

    /** Downloads, verifies and installs the bundle at {@code url} (a directory served over HTTP). */
    static Bundle download(Context context, String url) throws BundleException {
        Bundle b = BundleInstaller.install(BundleInstaller.http(url, 15_000), installed(context));
        b.requireEdgeRuntime("executorch");
        return b;
    }

    private static BundleInstaller.Source assets(final AssetManager assets) {
        return new BundleInstaller.Source() {
            @Override
            public InputStream open(String name) throws IOException {
                return assets.open(ASSET_DIR + "/" + name, AssetManager.ACCESS_STREAMING);
            }

            @Override
            public String describe() {
                return "the app's assets/" + ASSET_DIR;
            }
        };
    }
}
