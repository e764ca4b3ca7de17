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
import java.util.Map;

/**
 * A verified bundle directory: its manifest and entropy tables. {@link #load} checks it as
 * {@code codec.manifest.load_bundle} does: the manifest strictly, the bitstream version, the SHA-256 of every
 * listed file (a directory as a tree hash, MANIFEST.md), and the tables' id and channel count.
 */
public final class Bundle {
    static final long MAX_MANIFEST_BYTES = 1L << 20;
    private static final int CHUNK = 1 << 16;

    public final File root;
    public final Manifest manifest;
    public final EntropyTables tables;

    private Bundle(File root, Manifest manifest, EntropyTables tables) {
        this.root = root;
        this.manifest = manifest;
        this.tables = tables;
    }

    /** Reads, verifies and loads the bundle in {@code root}; {@link BundleException} names what is wrong. */
    public static Bundle load(File root) throws BundleException {
        Manifest m = readManifest(root);
        if (m.bitstreamVersion != Bitstream.FORMAT_VERSION) {
            throw new BundleException("bundle " + root + ": bitstream version " + m.bitstreamVersion
                    + ", this codec reads version " + Bitstream.FORMAT_VERSION);
        }
        verifyFiles(root, m);
        File tablesFile = new File(root, m.tablesFile);
        EntropyTables tables;
        try {
            tables = EntropyTables.load(tablesFile);
        } catch (CodecException e) {
            throw new BundleException("bundle " + root + ": cannot load entropy tables " + tablesFile.getName() + " (" + e.getMessage() + ")");
        }
        String id = hex(tables.tableId());
        if (!id.equals(m.tableId)) {
            throw new BundleException("bundle " + root + ": " + tablesFile.getName() + " has table_id " + id + ", manifest says " + m.tableId);
        }
        if (tables.numChannels() != m.latent[0]) {
            throw new BundleException("bundle " + root + ": " + tablesFile.getName() + " has " + tables.numChannels()
                    + " channels, latent has " + m.latent[0]);
        }
        return new Bundle(root, m, tables);
    }

    /** Parses {@code root/manifest.json} (no hashing). */
    public static Manifest readManifest(File root) throws BundleException {
        if (!root.isDirectory()) {
            throw new BundleException("bundle " + root + ": no such directory");
        }
        File mpath = new File(root, Manifest.MANIFEST_NAME);
        if (!mpath.isFile()) {
            throw new BundleException("bundle " + root + ": " + Manifest.MANIFEST_NAME + " is missing (not an exported bundle?)");
        }
        String text;
        try {
            text = utf8(readAll(mpath, MAX_MANIFEST_BYTES));
        } catch (IOException e) {
            throw new BundleException("bundle " + root + ": cannot read " + Manifest.MANIFEST_NAME + " (" + e.getMessage() + ")");
        }
        try {
            return Manifest.parse(text, Manifest.MANIFEST_NAME);
        } catch (ManifestException e) {
            throw new BundleException("bundle " + root + ": " + e.getMessage());
        }
    }

    /** Checks that every file the manifest lists exists and has the recorded hash. */
    public static void verifyFiles(File root, Manifest m) throws BundleException {
        if (m.files.isEmpty()) {
            throw new BundleException("bundle " + root + ": manifest 'files' lists no files");
        }
        for (Map.Entry<String, String> e : m.files.entrySet()) {
            File p = new File(root, e.getKey());
            if (!p.exists()) {
                throw new BundleException("bundle " + root + ": file " + e.getKey() + " is missing");
            }
            String actual;
            try {
                actual = pathSha256(p);
            } catch (IOException ex) {
                throw new BundleException("bundle " + root + ": cannot read " + e.getKey() + " (" + ex.getMessage() + ")");
            }
            if (!actual.equals(e.getValue())) {
                throw new BundleException("bundle " + root + ": file " + e.getKey() + " is corrupted or was replaced (sha256 "
                        + actual + ", manifest says " + e.getValue() + ")");
            }
        }
    }

    /** Refuses a bundle whose edge client needs another runtime than {@code runtime} (this app: executorch). */
    public void requireEdgeRuntime(String runtime) throws BundleException {
        if (!manifest.edge.runtime.equals(runtime)) {
            throw new BundleException("bundle " + root + ": its edge client " + manifest.edge.file + " runs on "
                    + manifest.edge.runtime + ", this app runs " + runtime + " programs (export with --target " + runtime + ")");
        }
    }

    /** The file {@code name} of the bundle (it must be listed in the manifest). */
    public File file(String name) throws BundleException {
        if (!manifest.files.containsKey(name)) {
            throw new BundleException("bundle " + root + ": '" + name + "' is not one of its files " + manifest.files.keySet());
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
