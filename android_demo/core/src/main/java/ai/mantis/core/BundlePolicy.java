package ai.mantis.core;

import java.util.Collections;
import java.util.LinkedHashSet;
import java.util.Locale;
import java.util.Set;

/**
 * What this app requires of a bundle beyond its integrity (which {@link Bundle#load} checks): an ExecuTorch edge
 * client from an executorch release its runtime can run ({@link ExecuTorchVersion}), and, when manifests are
 * pinned, a manifest whose SHA-256 is one of the pins. A pinned manifest fixes the hash of every file, so a
 * pin authenticates a bundle downloaded over a channel that does not.
 */
public final class BundlePolicy implements BundleInstaller.Check {
    public static final String EDGE_RUNTIME = "executorch";

    private final String runtimeVersion;
    private final Set<String> pins;

    /**
     * @param runtimeVersion this app's ExecuTorch version
     * @param pins           hex SHA-256 of the accepted manifests; empty: any manifest (hashes still checked)
     */
    public BundlePolicy(String runtimeVersion, Set<String> pins) throws BundleException {
        if (ExecuTorchVersion.parse(runtimeVersion) == null) {
            throw new IllegalArgumentException("runtime version '" + runtimeVersion + "' is not an ExecuTorch release number");
        }
        Set<String> p = new LinkedHashSet<>();
        for (String pin : pins) {
            String h = pin.trim().toLowerCase(Locale.ROOT);
            if (!h.matches("[0-9a-f]{64}")) {
                throw new BundleException("manifest pin '" + pin + "' is not a hex SHA-256 (64 hex digits)");
            }
            p.add(h);
        }
        this.runtimeVersion = runtimeVersion;
        this.pins = Collections.unmodifiableSet(p);
    }

    public String runtimeVersion() {
        return runtimeVersion;
    }

    public Set<String> pins() {
        return pins;
    }

    /** Parses pins, one hex SHA-256 a line; blank lines and lines starting with '#' are skipped. */
    public static Set<String> parsePins(String text) {
        Set<String> out = new LinkedHashSet<>();
        for (String line : text.split("\n")) {
            String t = line.trim();
            if (!t.isEmpty() && !t.startsWith("#")) {
                out.add(t);
            }
        }
        return out;
    }

    @Override
    public void check(Bundle bundle) throws BundleException {
        Manifest m = bundle.manifest();
        if (!m.edge().runtime().equals(EDGE_RUNTIME)) {
            throw new BundleException("bundle " + bundle.root() + ": its edge client " + m.edge().file() + " runs on "
                    + m.edge().runtime() + ", this app runs " + EDGE_RUNTIME + " programs (export with --target " + EDGE_RUNTIME + ")");
        }
        ExecuTorchVersion.requireRunnable(m, runtimeVersion);
        if (!pins.isEmpty() && !pins.contains(bundle.manifestSha256())) {
            throw new BundleException("bundle " + bundle.root() + ": its manifest (sha256 " + bundle.manifestSha256()
                    + ") is not one of the " + pins.size() + " pinned manifest(s); add its hash in Settings if you trust it");
        }
    }
}
