package ai.mantis.json;

import java.io.File;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * Command-line driver for {@code tests/android_demo/test_java_json.py}: for every {@code DIR/*.json} (UTF-8 text, any
 * content) prints {@code NAME OK CANONICAL} or {@code NAME ERR MESSAGE}. The canonical form names each value's
 * type and exact value so that Python can compare it with {@code json.loads}: {@code n}, {@code t},
 * {@code f}; {@code i<decimal>}; {@code d<16 hex digits of the IEEE bits>}; {@code s<hex of the UTF-16 code
 * units>}; {@code [a,b]}; {@code {k:v,...}} in document order.
 */
public final class JsonCases {
    private JsonCases() {
    }

    static String canonical(Object v) {
        if (v == null) {
            return "n";
        }
        if (v instanceof Boolean) {
            return (Boolean) v ? "t" : "f";
        }
        if (v instanceof Long || v instanceof BigInteger) {
            return "i" + v;
        }
        if (v instanceof Double) {
            return "d" + String.format("%016x", Double.doubleToRawLongBits((Double) v));
        }
        if (v instanceof String) {
            StringBuilder sb = new StringBuilder("s");
            for (char c : ((String) v).toCharArray()) {
                sb.append(String.format("%04x", (int) c));
            }
            return sb.toString();
        }
        if (v instanceof List) {
            StringBuilder sb = new StringBuilder("[");
            for (Object o : (List<?>) v) {
                sb.append(sb.length() > 1 ? "," : "").append(canonical(o));
            }
            return sb.append(']').toString();
        }
        StringBuilder sb = new StringBuilder("{");
        for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
            sb.append(sb.length() > 1 ? "," : "").append(canonical(e.getKey())).append(':').append(canonical(e.getValue()));
        }
        return sb.append('}').toString();
    }

    public static void main(String[] args) throws Exception {
        File[] files = new File(args[0]).listFiles();
        Arrays.sort(files);
        for (File f : files) {
            String name = f.getName();
            if (!name.endsWith(".json")) {
                continue;
            }
            String text = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(Files.readAllBytes(f.toPath()))).toString();
            String stem = name.substring(0, name.length() - ".json".length());
            try {
                System.out.println(stem + " OK " + canonical(Json.parse(text)));
            } catch (JsonException e) {
                System.out.println(stem + " ERR " + e.getMessage().replace('\n', ' '));
            }
        }
    }
}
