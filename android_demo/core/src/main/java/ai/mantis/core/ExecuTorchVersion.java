package ai.mantis.core;

import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Which {@code edge.pte} programs this app's ExecuTorch runtime can run, judged by the exporter's version that
 * the manifest records ({@code producer.executorch}). ExecuTorch keeps programs from older releases loadable by
 * newer runtimes of the same major version and promises nothing forward, so a program is runnable when it
 * comes from the same major version and a release no newer than the runtime. Local tags ({@code +cpu}) are
 * ignored; a pre-release counts as the release it precedes.
 */
public final class ExecuTorchVersion {
    /** The manifest's {@code producer} key that names the exporter's executorch version. */
    public static final String PRODUCER_KEY = "executorch";
    private static final Pattern RELEASE = Pattern.compile("^(\\d+)\\.(\\d+)(?:\\.(\\d+))?(?:(?:a|b|rc|\\.dev|\\.post)\\d*)*(?:\\+[A-Za-z0-9.]+)?$");

    private final int major;
    private final int minor;
    private final int patch;
    private final String text;

    private ExecuTorchVersion(int major, int minor, int patch, String text) {
        this.major = major;
        this.minor = minor;
        this.patch = patch;
        this.text = text;
    }

    /** Parses {@code 1.5.1}, {@code 1.5}, {@code 1.5.1+cpu}, {@code 1.6.0rc2}, ...; null for anything else. */
    public static ExecuTorchVersion parse(String text) {
        Matcher m = text == null ? null : RELEASE.matcher(text.trim());
        if (m == null || !m.matches()) {
            return null;
        }
        try {
            return new ExecuTorchVersion(Integer.parseInt(m.group(1)), Integer.parseInt(m.group(2)),
                    m.group(3) == null ? 0 : Integer.parseInt(m.group(3)), text.trim());
        } catch (NumberFormatException e) {
            return null;
        }
    }

    public int major() {
        return major;
    }

    public int minor() {
        return minor;
    }

    public int patch() {
        return patch;
    }

    @Override
    public String toString() {
        return text;
    }

    /** Orders by (major, minor, patch). */
    public int compareRelease(ExecuTorchVersion other) {
        if (major != other.major) {
            return Integer.compare(major, other.major);
        }
        if (minor != other.minor) {
            return Integer.compare(minor, other.minor);
        }
        return Integer.compare(patch, other.patch);
    }

    /**
     * Refuses a bundle whose {@code edge.pte} the runtime {@code runtime} (this app's version) cannot run,
     * with a message saying what to do.
     */
    public static void requireRunnable(Manifest manifest, String runtime) throws BundleException {
        ExecuTorchVersion rt = parse(runtime);
        if (rt == null) {
            throw new IllegalArgumentException("runtime version '" + runtime + "' is not an ExecuTorch release number");
        }
        String produced = manifest.producer().get(PRODUCER_KEY);
        if (produced == null) {
            throw new BundleException("the manifest does not say which executorch wrote " + manifest.edge().file()
                    + " (producer.executorch is missing): this app runs programs from ExecuTorch " + rt.major + ".x up to " + rt
                    + "; export the bundle again");
        }
        ExecuTorchVersion p = parse(produced);
        if (p == null) {
            throw new BundleException(manifest.edge().file() + " was written by executorch '" + produced
                    + "' (producer.executorch), not a release this app can judge: it runs programs from ExecuTorch " + rt.major
                    + ".x up to " + rt);
        }
        if (p.major != rt.major) {
            throw new BundleException(manifest.edge().file() + " was written by executorch " + p + ", this app's runtime is ExecuTorch "
                    + rt + " (another major version): export with executorch " + rt);
        }
        if (p.compareRelease(rt) > 0) {
            throw new BundleException(manifest.edge().file() + " was written by executorch " + p + ", newer than this app's runtime "
                    + rt + " (ExecuTorch does not promise that newer programs load on older runtimes): update the app, or export with executorch "
                    + rt);
        }
    }
}
