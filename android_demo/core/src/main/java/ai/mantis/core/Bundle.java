package ai.mantis.core;

import ai.mantis.codec.Bitstream;
import ai.mantis.codec.CodecException;
import ai.mantis.codec.EntropyTables;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * A verified bundle directory as a device holds it: its manifest and entropy tables. {@link #load} checks it as
 * {@code codec.bundle.load_bundle} does, for the device's files only ({@link Manifest#deviceFiles()}: tables
 * and edge program; the server half's files are neither needed nor hashed here): the manifest strictly, the
 * bitstream version, the SHA-256 of each device file, and the tables' id and channel count. The manifest's own
 * SHA-256 ({@link #manifestSha256()}) identifies the whole bundle: it fixes every file's hash.
 */
public final class Bundle {
    static final long MAX_MANIFEST_BYTES = 1L << 20;
    private static final int CHUNK = 1 << 16;

    private final File root;
    private final Manifest manifest;
    private final EntropyTables tables;
    private final String manifestSha256;

    private Bundle(File root, Manifest manifest, EntropyTables tables, String manifestSha256) {
        this.root = root;
        this.manifest = manifest;
        this.tables = tables;
        this.manifestSha256 = manifestSha256;
    }

    public File root() {
        return root;
    }

    public Manifest manifest() {
        return manifest;
    }

    public EntropyTables tables() {
        return tables;
    }

    /** Hex SHA-256 of {@code manifest.json}'s bytes: what a pin names, and what tells two bundles apart. */
    public String manifestSha256() {
        return manifestSha256;
    }

    /** The same verified bundle after its directory was renamed to {@code dest} (nothing is read again). */
    Bundle movedTo(File dest) {
        return new Bundle(dest, manifest, tables, manifestSha256);
    }

    /** Reads, verifies and loads the bundle in {@code root}; {@link BundleException} names what is wrong. */
    public static Bundle load(File root) throws BundleException {
        byte[] raw = readManifestBytes(root);
        Manifest m = parseManifest(root, raw);
        if (m.bitstreamVersion() != Bitstream.FORMAT_VERSION) {
            throw new BundleException("bundle " + root + ": bitstream version " + m.bitstreamVersion()
                    + ", this codec reads version " + Bitstream.FORMAT_VERSION);
        }
        verifyFiles(root, m);
        File tablesFile = new File(root, m.tablesFile());
        EntropyTables tables;
        try {
            tables = EntropyTables.load(tablesFile);
        } catch (CodecException e) {
            throw new BundleException("bundle " + root + ": cannot load entropy tables " + tablesFile.getName() + " (" + e.getMessage() + ")");
        }
        String id = hex(tables.tableId());
        if (!id.equals(m.tableId())) {
            throw new BundleException("bundle " + root + ": " + tablesFile.getName() + " has table_id " + id + ", manifest says " + m.tableId());
        }
        if (tables.numChannels() != m.latent()[0]) {
            throw new BundleException("bundle " + root + ": " + tablesFile.getName() + " has " + tables.numChannels()
                    + " channels, latent has " + m.latent()[0]);
        }
        return new Bundle(root, m, tables, hex(sha256().digest(raw)));
    }

    /** Parses {@code root/manifest.json} (no hashing). */
    public static Manifest readManifest(File root) throws BundleException {
        return parseManifest(root, readManifestBytes(root));
    }

    /** Hex SHA-256 of {@code root/manifest.json}, or null when there is none (no bundle installed). */
    public static String manifestSha256(File root) {
        File f = new File(root, Manifest.MANIFEST_NAME);
        if (!f.isFile()) {
            return null;
        }
        try {
            return hex(sha256().digest(readAll(f, MAX_MANIFEST_BYTES)));
        } catch (IOException e) {
            return null;
        }
    }

    private static byte[] readManifestBytes(File root) throws BundleException {
        if (!root.isDirectory()) {
            throw new BundleException("bundle " + root + ": no such directory");
        }
        File mpath = new File(root, Manifest.MANIFEST_NAME);
        if (!mpath.isFile()) {
            throw new BundleException("bundle " + root + ": " + Manifest.MANIFEST_NAME + " is missing (not an exported bundle?)");
        }
        try {
            return readAll(mpath, MAX_MANIFEST_BYTES);
        } catch (IOException e) {
            throw new BundleException("bundle " + root + ": cannot read " + Manifest.MANIFEST_NAME + " (" + e.getMessage() + ")");
        }
    }

    private static Manifest parseManifest(File root, byte[] raw) throws BundleException {
        String text;
        try {
            text = utf8(raw);
        } catch (IOException e) {
            throw new BundleException("bundle " + root + ": cannot read " + Manifest.MANIFEST_NAME + " (" + e.getMessage() + ")");
        }
        try {
            return Manifest.parse(text, Manifest.MANIFEST_NAME);
        } catch (ManifestException e) {
            throw new BundleException("bundle " + root + ": " + e.getMessage());
        }
    }

    /** Checks that every device file the manifest lists exists and has the recorded hash. */
    public static void verifyFiles(File root, Manifest m) throws BundleException {
        for (String name : m.deviceFiles()) {
            String want = m.files().get(name);
            if (want == null) {
                throw new BundleException("bundle " + root + ": manifest 'files' does not list (and hash) " + name);
            }
            File p = new File(root, name);
            if (!p.exists()) {
                throw new BundleException("bundle " + root + ": file " + name + " is missing");
            }
            String actual;
            try {
                actual = pathSha256(p);
            } catch (IOException ex) {
                throw new BundleException("bundle " + root + ": cannot read " + name + " (" + ex.getMessage() + ")");
            }
            if (!actual.equals(want)) {
                throw new BundleException("bundle " + root + ": file " + name + " is corrupted or was replaced (sha256 "
                        + actual + ", manifest says " + want + ")");
            }
        }
    }

    /** The device file {@code name} of the bundle (one of {@link Manifest#deviceFiles()}, verified by {@link #load}). */
    public File file(String name) throws BundleException {
        if (!manifest.deviceFiles().contains(name)) {
            throw new BundleException("bundle " + root + ": '" + name + "' is not one of the device's files " + manifest.deviceFiles());
        }
        return new File(root, name);
    }

    /** Hex SHA-256 of a file's bytes. */
    public static String fileSha256(File f) throws IOException {
        return hex(digest(f));
    }

    /**
     * Hex SHA-256 over a directory: for every file, sorted by relative POSIX path, its path, a NUL byte and the
     * raw SHA-256 of its contents (MANIFEST.md). Empty directories do not contribute.
     */
    public static String treeSha256(File dir) throws IOException {
        List<String> names = new ArrayList<>();
        collect(dir, "", names);
        Collections.sort(names);
        MessageDigest h = sha256();
        for (String name : names) {
            h.update(name.getBytes(StandardCharsets.UTF_8));
            h.update((byte) 0);
            h.update(digest(new File(dir, name)));
        }
        return hex(h.digest());
    }

    /** {@link #treeSha256} for a directory, {@link #fileSha256} for a file. */
    public static String pathSha256(File p) throws IOException {
        return p.isDirectory() ? treeSha256(p) : fileSha256(p);
    }

    private static void collect(File dir, String prefix, List<String> out) throws IOException {
        File[] children = dir.listFiles();
        if (children == null) {
            throw new IOException("cannot list directory " + dir);
        }
        for (File c : children) {
            String rel = prefix + c.getName();
            if (c.isDirectory()) {
                collect(c, rel + "/", out);
            } else if (c.isFile()) {
                out.add(rel);
            }
        }
    }

    private static byte[] digest(File f) throws IOException {
        MessageDigest h = sha256();
        byte[] buf = new byte[CHUNK];
        try (InputStream in = new FileInputStream(f)) {
            int n;
            while ((n = in.read(buf)) > 0) {
                h.update(buf, 0, n);
            }
        }
        return h.digest();
    }

    static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is required by every Java platform", e);
        }
    }

    /** Lower-case hex of {@code bytes}. */
    public static String hex(byte[] bytes) {
        StringBuilder sb = new StringBuilder(2 * bytes.length);
        for (byte v : bytes) {
            sb.append(Character.forDigit((v >> 4) & 0xF, 16)).append(Character.forDigit(v & 0xF, 16));
        }
        return sb.toString();
    }

    static byte[] readAll(File f, long limit) throws IOException {
        if (f.length() > limit) {
            throw new IOException(f.getName() + " is " + f.length() + " bytes, over the limit of " + limit);
        }
        try (InputStream in = new FileInputStream(f)) {
            return readAll(in, limit, f.getName());
        }
    }

    /** Reads a stream to its end; an IOException when it holds more than {@code limit} bytes. */
    static byte[] readAll(InputStream in, long limit, String what) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] buf = new byte[CHUNK];
        int n;
        while ((n = in.read(buf)) > 0) {
            if (out.size() + (long) n > limit) {
                throw new IOException(what + " is over the limit of " + limit + " bytes");
            }
            out.write(buf, 0, n);
        }
        return out.toByteArray();
    }

    static String utf8(byte[] data) throws IOException {
        try {
            return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(data)).toString();
        } catch (CharacterCodingException e) {
            throw new IOException("not valid UTF-8 (" + e.getMessage() + ")");
        }
    }
}
