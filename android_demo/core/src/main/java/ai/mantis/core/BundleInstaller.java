package ai.mantis.core;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.HttpURLConnection;
import java.net.URL;
import java.util.Set;

/**
 * Copies a bundle's device files ({@code manifest.json}, tables, edge program) from a {@link Source} (the app's
 * assets, or an HTTP(S) server) into a staging directory next to {@code dest}, verifies it with
 * {@link Bundle#load}, runs every further {@link Check} on it (runtime version, manifest pin, loading the
 * program), and only then swaps it into place. A bundle refused at any step is deleted and the installed one
 * stays as it was.
 */
public final class BundleInstaller {
    /** Largest single bundle file copied (bytes). */
    public static final long MAX_FILE_BYTES = 512L << 20;
    private static final int CHUNK = 1 << 16;

    /** Where the bundle's files come from, by bundle-relative path. */
    public interface Source {
        InputStream open(String name) throws IOException;

        /** Names the source in messages. */
        String describe();
    }

    /** A requirement the staged, verified bundle must meet before it replaces the installed one. */
    public interface Check {
        void check(Bundle staged) throws BundleException;
    }

    private BundleInstaller() {
    }

    /**
     * A bundle directory served over HTTP(S) at {@code baseUrl/<file>} (e.g. {@code python -m http.server} in the
     * bundle); {@code cleartextHosts} as {@link Urls#parse}. Redirects are not followed.
     */
    public static Source http(String baseUrl, final int timeoutMs, Set<String> cleartextHosts) throws UrlException {
        String t = baseUrl.trim();
        final String base = Urls.parse(t.endsWith("/") ? t : t + "/", "bundle URL", cleartextHosts).toString();
        return new Source() {
            @Override
            public InputStream open(String name) throws IOException {
                // Urls.parse admitted http(s) only, so this is an HttpURLConnection
                HttpURLConnection conn = (HttpURLConnection) new URL(base + name).openConnection();
                conn.setConnectTimeout(timeoutMs);
                conn.setReadTimeout(timeoutMs);
                conn.setInstanceFollowRedirects(false);
                int status = conn.getResponseCode();
                if (status != 200) {
                    conn.disconnect();
                    throw new IOException("GET " + base + name + ": HTTP " + status);
                }
                return conn.getInputStream();
            }

            @Override
            public String describe() {
                return base;
            }
        };
    }

    /** Copies, verifies, checks and installs the bundle at {@code dest}; the bundle that is now there. */
    public static Bundle install(Source source, File dest, Check... checks) throws BundleException {
        File parent = dest.getAbsoluteFile().getParentFile();
        File staging = new File(parent, dest.getName() + ".staging");
        deleteTree(staging);
        if (!staging.mkdirs()) {
            throw new BundleException("cannot create " + staging);
        }
        try {
            copy(source, Manifest.MANIFEST_NAME, staging, Bundle.MAX_MANIFEST_BYTES);
            Manifest m = Bundle.readManifest(staging);
            for (String name : m.deviceFiles()) {
                copy(source, name, staging, MAX_FILE_BYTES);
            }
            Bundle staged = Bundle.load(staging);
            for (Check c : checks) {
                c.check(staged);
            }
            File old = new File(parent, dest.getName() + ".old");
            deleteTree(old);
            if (dest.exists() && !dest.renameTo(old)) {
                throw new BundleException("cannot move the previous bundle " + dest + " aside");
            }
            if (!staging.renameTo(dest)) {
                if (old.exists() && !old.renameTo(dest)) {
                    throw new BundleException("cannot move the verified bundle into " + dest + ", nor the previous one back");
                }
                throw new BundleException("cannot move the verified bundle into " + dest);
            }
            deleteTree(old);
            return staged.movedTo(dest);
        } catch (BundleException e) {
            deleteTree(staging);
            throw new BundleException("bundle from " + source.describe() + " refused: " + e.getMessage());
        }
    }

    private static void copy(Source source, String name, File dir, long limit) throws BundleException {
        File out = new File(dir, name);
        File parent = out.getParentFile();
        if (!parent.isDirectory() && !parent.mkdirs()) {
            throw new BundleException("cannot create " + parent);
        }
        try (InputStream in = source.open(name); OutputStream os = new FileOutputStream(out)) {
            byte[] buf = new byte[CHUNK];
            long total = 0;
            int n;
            while ((n = in.read(buf)) > 0) {
                total += n;
                if (total > limit) {
                    throw new BundleException(name + " is over the limit of " + limit + " bytes");
                }
                os.write(buf, 0, n);
            }
        } catch (IOException e) {
            throw new BundleException("cannot copy " + name + " (" + e.getMessage() + ")");
        }
    }

    static void deleteTree(File f) {
        File[] children = f.listFiles();
        if (children != null) {
            for (File c : children) {
                deleteTree(c);
            }
        }
        if (f.exists() && !f.delete()) {
            f.deleteOnExit();
        }
    }
}
