package ai.mantis.demo;

import ai.mantis.core.Bundle;
import ai.mantis.core.BundleException;
import ai.mantis.core.BundleInstaller;
import ai.mantis.core.BundlePolicy;
import ai.mantis.core.UrlException;

import android.content.Context;
import android.content.res.AssetManager;
import android.content.res.XmlResourceParser;

import org.xmlpull.v1.XmlPullParser;
import org.xmlpull.v1.XmlPullParserException;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.LinkedHashSet;
import java.util.Locale;
import java.util.Properties;
import java.util.Set;

/**
 * Where the app's bundle comes from (its assets' {@code bundle/}, or a URL) and what it requires of one; the
 * decisions themselves are {@code core}'s ({@link ai.mantis.core.BundleSync}, {@link BundlePolicy},
 * {@link BundleInstaller}). Runs on the worker thread.
 */
final class Bundles {
    static final String ASSET_DIR = "bundle";
    /** Manifest pins shipped with the app (optional): one hex SHA-256 a line. */
    static final String PINS_ASSET = "bundle-pins.txt";
    static final String VERSION_ASSET = "executorch.properties";
    private static final String ASSETS_RECORD = "bundle.assets-sha256";

    private Bundles() {
    }

    static File installed(Context context) {
        return new File(context.getFilesDir(), "bundle");
    }

    /** This app's ExecuTorch runtime version (the asset app/build.gradle takes the dependency from). */
    static String runtimeVersion(Context context) throws IOException {
        Properties p = new Properties();
        try (InputStream in = context.getAssets().open(VERSION_ASSET)) {
            p.load(in);
        }
        String v = p.getProperty("executorch");
        if (v == null) {
            throw new IOException("assets/" + VERSION_ASSET + " has no executorch version");
        }
        return v.trim();
    }

    /** The policy: this runtime, and the pins shipped in the assets plus those entered in Settings. */
    static BundlePolicy policy(Context context) throws BundleException {
        Set<String> pins = new LinkedHashSet<>(BundlePolicy.parsePins(Settings.load(context).pins()));
        byte[] shipped = asset(context, PINS_ASSET);
        if (shipped != null) {
            pins.addAll(BundlePolicy.parsePins(new String(shipped, StandardCharsets.UTF_8)));
        }
        try {
            return new BundlePolicy(runtimeVersion(context), pins);
        } catch (IOException e) {
            throw new BundleException("the app's ExecuTorch version is unreadable (" + e.getMessage() + ")");
        }
    }

    /** Hex SHA-256 of the assets' bundle manifest, or null when the app ships no bundle. */
    static String assetsManifestSha256(Context context) {
        byte[] data = asset(context, ASSET_DIR + "/" + ai.mantis.core.Manifest.MANIFEST_NAME);
        return data == null ? null : sha256(data);
    }

    /** The assets' manifest hash recorded when they were last installed, or null. */
    static String assetsInstalled(Context context) {
        byte[] data = read(new File(context.getFilesDir(), ASSETS_RECORD));
        return data == null ? null : new String(data, StandardCharsets.US_ASCII).trim();
    }

    /** Installs the assets' bundle (every check before the swap) and records which assets it came from. */
    static Bundle installFromAssets(Context context, BundleInstaller.Check... extra) throws BundleException {
        String sha = assetsManifestSha256(context);
        Bundle b = BundleInstaller.install(assets(context.getAssets()), installed(context), checks(context, extra));
        File record = new File(context.getFilesDir(), ASSETS_RECORD);
        File tmp = new File(context.getFilesDir(), ASSETS_RECORD + ".tmp");
        try (FileOutputStream out = new FileOutputStream(tmp)) {
            out.write((sha + "\n").getBytes(StandardCharsets.US_ASCII));
            out.getFD().sync();
        } catch (IOException e) {
            throw new BundleException("cannot record the installed assets (" + e.getMessage() + ")");
        }
        if (!tmp.renameTo(record)) {
            throw new BundleException("cannot record the installed assets in " + record);
        }
        return b;
    }

    /** Verifies the installed bundle and checks it against the policy. */
    static Bundle openInstalled(Context context) throws BundleException {
        Bundle b = Bundle.load(installed(context));
        policy(context).check(b);
        return b;
    }

    /** Downloads, verifies, checks and installs the bundle at {@code url} (a directory served over HTTP(S)). */
    static Bundle download(Context context, String url, BundleInstaller.Check... extra) throws BundleException, UrlException {
        return BundleInstaller.install(BundleInstaller.http(url, 15_000, cleartextHosts(context)), installed(context), checks(context, extra));
    }

    private static BundleInstaller.Check[] checks(Context context, BundleInstaller.Check... extra) throws BundleException {
        BundleInstaller.Check[] all = new BundleInstaller.Check[extra.length + 1];
        all[0] = policy(context);
        System.arraycopy(extra, 0, all, 1, extra.length);
        return all;
    }

    /**
     * The hosts res/xml/network_security_config.xml allows cleartext HTTP (the domains of its
     * {@code domain-config cleartextTrafficPermitted="true"}): one list for Android's network stack and the app.
     */
    static Set<String> cleartextHosts(Context context) {
        Set<String> hosts = new LinkedHashSet<>();
        int id = context.getResources().getIdentifier("network_security_config", "xml", context.getPackageName());
        if (id == 0) {
            return hosts;
        }
        XmlResourceParser xml = context.getResources().getXml(id);
        try {
            boolean cleartext = false;
            boolean inDomain = false;
            for (int ev = xml.getEventType(); ev != XmlPullParser.END_DOCUMENT; ev = xml.next()) {
                if (ev == XmlPullParser.START_TAG && "domain-config".equals(xml.getName())) {
                    cleartext = xml.getAttributeBooleanValue(null, "cleartextTrafficPermitted", false);
                } else if (ev == XmlPullParser.END_TAG && "domain-config".equals(xml.getName())) {
                    cleartext = false;
                } else if (ev == XmlPullParser.START_TAG && "domain".equals(xml.getName())) {
                    inDomain = true;
                } else if (ev == XmlPullParser.END_TAG && "domain".equals(xml.getName())) {
                    inDomain = false;
                } else if (ev == XmlPullParser.TEXT && inDomain && cleartext) {
                    hosts.add(xml.getText().trim().toLowerCase(Locale.ROOT));
                }
            }
        } catch (XmlPullParserException | IOException e) {
            hosts.clear(); // unreadable: no cleartext at all
        } finally {
            xml.close();
        }
        return hosts;
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

    private static byte[] asset(Context context, String name) {
        try (InputStream in = context.getAssets().open(name)) {
            return readAll(in);
        } catch (IOException e) {
            return null;
        }
    }

    private static byte[] read(File f) {
        try (InputStream in = new java.io.FileInputStream(f)) {
            return readAll(in);
        } catch (IOException e) {
            return null;
        }
    }

    private static byte[] readAll(InputStream in) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] buf = new byte[1 << 14];
        int n;
        while ((n = in.read(buf)) > 0) {
            out.write(buf, 0, n);
        }
        return out.toByteArray();
    }

    static String sha256(byte[] data) {
        try {
            return Bundle.hex(MessageDigest.getInstance("SHA-256").digest(data));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is required by every Java platform", e);
        }
    }
}
