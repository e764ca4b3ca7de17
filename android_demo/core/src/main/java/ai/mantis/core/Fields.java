package ai.mantis.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Strict reader of one JSON object (as {@link ai.mantis.json.Json} parses it): typed required and optional
 * keys, then {@link #done()} refuses the rest. Messages follow {@code codec/manifest.py}'s.
 */
final class Fields {
    final Map<String, Object> doc;
    final String where;
    private final Set<String> seen = new HashSet<>();

    @SuppressWarnings("unchecked")
    Fields(Object doc, String where) throws ManifestException {
        if (!(doc instanceof Map)) {
            throw new ManifestException(where + ": must be a JSON object, got " + Manifest.typeName(doc));
        }
        this.doc = (Map<String, Object>) doc;
        this.where = where;
    }

    boolean has(String key) {
        return doc.containsKey(key);
    }

    private Object raw(String key) throws ManifestException {
        seen.add(key);
        if (!doc.containsKey(key)) {
            throw new ManifestException(where + "." + key + ": missing");
        }
        return doc.get(key);
    }

    private ManifestException wrongType(String key, String expected, Object value) {
        return new ManifestException(where + "." + key + ": expected " + expected + ", got " + Manifest.repr(value));
    }

    String string(String key) throws ManifestException {
        Object v = raw(key);
        if (!(v instanceof String)) {
            throw wrongType(key, "a string", v);
        }
        return (String) v;
    }

    /** A non-empty string. */
    String nonEmpty(String key) throws ManifestException {
        String v = string(key);
        if (v.isEmpty()) {
            throw new ManifestException(where + "." + key + ": invalid value ''");
        }
        return v;
    }

    long integer(String key) throws ManifestException {
        Object v = raw(key);
        if (!(v instanceof Long)) {
            throw wrongType(key, "an integer", v);
        }
        return (Long) v;
    }

    long positiveInt(String key) throws ManifestException {
        long v = integer(key);
        if (v <= 0) {
            throw new ManifestException(where + "." + key + ": invalid value " + v);
        }
        return v;
    }

    @SuppressWarnings("unchecked")
    List<Object> list(String key) throws ManifestException {
        Object v = raw(key);
        if (!(v instanceof List)) {
            throw wrongType(key, "a list", v);
        }
        return (List<Object>) v;
    }

    Object object(String key) throws ManifestException {
        Object v = raw(key);
        if (!(v instanceof Map)) {
            throw wrongType(key, "an object", v);
        }
        return v;
    }

    /** A value for a sub-parser, or null when absent and optional. */
    Object sub(String key, boolean required) throws ManifestException {
        seen.add(key);
        if (!doc.containsKey(key)) {
            if (required) {
                throw new ManifestException(where + "." + key + ": missing");
            }
            return null;
        }
        return doc.get(key);
    }

    String choice(String key, List<String> supported) throws ManifestException {
        String v = string(key);
        if (!supported.contains(v)) {
            throw new ManifestException(where + "." + key + ": unsupported value " + Manifest.repr(v)
                    + "; this code supports " + Manifest.repr(supported));
        }
        return v;
    }

    void done() throws ManifestException {
        List<String> unknown = new ArrayList<>();
        for (String k : doc.keySet()) {
            if (!seen.contains(k)) {
                unknown.add(k);
            }
        }
        if (!unknown.isEmpty()) {
            Collections.sort(unknown);
            throw new ManifestException(where + ": unknown keys " + Manifest.repr(unknown));
        }
    }
}
