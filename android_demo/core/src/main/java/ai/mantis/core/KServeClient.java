package ai.mantis.core;

import ai.mantis.json.Json;
import ai.mantis.json.JsonException;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.HttpURLConnection;
import java.net.MalformedURLException;
import java.net.SocketTimeoutException;
import java.net.URL;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * KServe v2 HTTP client for {@code serve.py} (WIRE.md) on {@link HttpURLConnection}: one {@code BYTES} tensor
 * {@code bitstream} in the binary tensor data extension, binary outputs, {@code Authorization: Bearer},
 * connect and read timeouts. A request that failed before any answer (refused or reset connection) or was
 * answered 503 {@code unavailable} is retried with exponential back-off, at most {@code retries} times;
 * every other answer is final, as WIRE.md says.
 */
public final class KServeClient {
    /** Largest response body read (bytes); a bigger one is refused as malformed. */
    public static final int MAX_RESPONSE_BYTES = 64 << 20;

    /** Waits between attempts (tests replace it). */
    public interface Sleeper {
        void sleep(long millis) throws InterruptedException;
    }

    private final String url;
    private final String token;
    private final int connectTimeoutMs;
    private final int readTimeoutMs;
    private final int retries;
    private final long baseDelayMs;
    private final long maxDelayMs;
    private final Sleeper sleeper;

    /**
     * @param url        {@code http://host:port} of serve.py
     * @param token      bearer token, or null/empty for none
     * @param retries    extra attempts after the first for failures before an answer and 503
     */
    public KServeClient(String url, String token, int connectTimeoutMs, int readTimeoutMs, int retries, long baseDelayMs,
                        long maxDelayMs, Sleeper sleeper) {
        String u = url.trim();
        while (u.endsWith("/")) {
            u = u.substring(0, u.length() - 1);
        }
        if (!(u.startsWith("http://") || u.startsWith("https://"))) {
            throw new IllegalArgumentException("server URL '" + url + "': expected http://HOST:PORT");
        }
        try {
            URL parsed = new URL(u);
            if (parsed.getHost().isEmpty()) {
                throw new IllegalArgumentException("server URL '" + url + "': expected http://HOST:PORT");
            }
        } catch (MalformedURLException e) {
            throw new IllegalArgumentException("server URL '" + url + "': " + e.getMessage());
        }
        if (retries < 0 || connectTimeoutMs <= 0 || readTimeoutMs <= 0 || baseDelayMs < 0 || maxDelayMs < baseDelayMs) {
            throw new IllegalArgumentException("timeouts must be positive, retries and delays non-negative");
        }
        this.url = u;
        this.token = token == null || token.trim().isEmpty() ? null : token.trim();
        this.connectTimeoutMs = connectTimeoutMs;
        this.readTimeoutMs = readTimeoutMs;
        this.retries = retries;
        this.baseDelayMs = baseDelayMs;
        this.maxDelayMs = maxDelayMs;
        this.sleeper = sleeper;
    }

    /** 10 s timeouts, 3 retries from 200 ms doubling up to 2 s (runtime_edge/transport/base.py's defaults). */
    public static KServeClient withDefaults(String url, String token) {
        return new KServeClient(url, token, 10_000, 10_000, 3, 200, 2_000, new Sleeper() {
            @Override
            public void sleep(long millis) throws InterruptedException {
                Thread.sleep(millis);
            }
        });
    }

    /** One decoded output tensor. Exactly one of {@code fp32}, {@code bool}, {@code bytes} is set. */
    public static final class Output {
        private final String name;
        private final String datatype;
        private final long[] shape;
        private final float[] fp32;
        private final boolean[] bool;
        private final byte[][] bytes;

        public String name() {
            return name;
        }

        public String datatype() {
            return datatype;
        }

        public long[] shape() {
            return shape == null ? null : shape.clone();
        }

        public float[] fp32() {
            return fp32 == null ? null : fp32.clone();
        }

        public boolean[] bool() {
            return bool == null ? null : bool.clone();
        }

        public byte[][] bytes() {
            return bytes == null ? null : deepCopy(bytes);
        }

        Output(String name, String datatype, long[] shape, float[] fp32, boolean[] bool, byte[][] bytes) {
            this.name = name;
            this.datatype = datatype;
            this.shape = shape == null ? null : shape.clone();
            this.fp32 = fp32 == null ? null : fp32.clone();
            this.bool = bool == null ? null : bool.clone();
            this.bytes = bytes == null ? null : deepCopy(bytes);
        }
    }

    /** An answer: outputs by name and the bytes that crossed the wire in the HTTP bodies. */
    public static final class InferResult {
        private final Map<String, Output> outputs;
        /** Request body bytes (JSON header + BYTES tensor), not counting HTTP headers. */
        private final int requestBytes;
        /** Response body bytes, not counting HTTP headers. */
        private final int responseBytes;
        private final double elapsedMs;
        private final int attempts;

        public Map<String, Output> outputs() {
            return outputs;
        }

        public int requestBytes() {
            return requestBytes;
        }

        public int responseBytes() {
            return responseBytes;
        }

        public double elapsedMs() {
            return elapsedMs;
        }

        public int attempts() {
            return attempts;
        }

        InferResult(Map<String, Output> outputs, int requestBytes, int responseBytes, double elapsedMs, int attempts) {
            this.outputs = outputs;
            this.requestBytes = requestBytes;
            this.responseBytes = responseBytes;
            this.elapsedMs = elapsedMs;
            this.attempts = attempts;
        }
    }

    private static byte[][] deepCopy(byte[][] rows) {
        byte[][] out = new byte[rows.length][];
        for (int i = 0; i < rows.length; i++) {
            out[i] = rows[i].clone();
        }
        return out;
    }

    /** Body and JSON-header length of an infer request carrying {@code bitstreams}. */
    static byte[][] buildRequest(List<byte[]> bitstreams, int topK) {
        ByteArrayOutputStream payload = new ByteArrayOutputStream();
        for (byte[] b : bitstreams) {
            byte[] len = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt(b.length).array();
            payload.write(len, 0, 4);
            payload.write(b, 0, b.length);
        }
        String header = "{\"inputs\":[{\"name\":\"" + Wire.BITSTREAM_INPUT + "\",\"shape\":[" + bitstreams.size()
                + "],\"datatype\":\"" + Wire.BYTES + "\",\"parameters\":{\"" + Wire.BINARY_DATA_SIZE + "\":" + payload.size()
                + "}}],\"parameters\":{\"" + Wire.TOP_K_PARAMETER + "\":" + topK + ",\"" + Wire.BINARY_DATA_OUTPUT + "\":true}}";
        byte[] head = header.getBytes(StandardCharsets.UTF_8);
        byte[] body = new byte[head.length + payload.size()];
        System.arraycopy(head, 0, body, 0, head.length);
        System.arraycopy(payload.toByteArray(), 0, body, head.length, payload.size());
        return new byte[][] {body, String.valueOf(head.length).getBytes(StandardCharsets.US_ASCII)};
    }

    /** Sends {@code bitstreams} as one request to model {@code model} and decodes the answer. */
    public InferResult infer(String model, List<byte[]> bitstreams, int topK) throws TransportException {
        if (bitstreams.isEmpty()) {
            throw new IllegalArgumentException("infer needs at least one bitstream");
        }
        if (topK < Wire.TOP_K_MINIMUM) {
            throw new IllegalArgumentException(Wire.TOP_K_PARAMETER + " must be >= " + Wire.TOP_K_MINIMUM + ", got " + topK);
        }
        byte[][] req = buildRequest(bitstreams, topK);
        byte[] body = req[0];
        String headLen = new String(req[1], StandardCharsets.US_ASCII);
        long start = System.nanoTime();
        String last = "";
        Wire.ErrorKind lastKind = null;
        for (int attempt = 0; attempt <= retries; attempt++) {
            if (attempt > 0) {
                try {
                    sleeper.sleep(Math.min(maxDelayMs, baseDelayMs << Math.min(attempt - 1, 20)));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new TransportException.Unreachable("server " + url + ": interrupted while waiting to retry", lastKind, attempt);
                }
            }
            HttpURLConnection conn = null;
            try {
                conn = (HttpURLConnection) new URL(url + "/v2/models/" + model + "/infer").openConnection();
                conn.setConnectTimeout(connectTimeoutMs);
                conn.setReadTimeout(readTimeoutMs);
                conn.setRequestMethod("POST");
                conn.setDoOutput(true);
                conn.setUseCaches(false);
                conn.setInstanceFollowRedirects(false);
                conn.setRequestProperty(Wire.HEADER_LENGTH, headLen);
                conn.setRequestProperty("Content-Type", "application/octet-stream");
                if (token != null) {
                    conn.setRequestProperty(Wire.AUTH_HEADER, Wire.bearer(token));
                }
                try (OutputStream out = conn.getOutputStream()) {
                    out.write(body);
                }
                int status = conn.getResponseCode();
                InputStream in = status >= 400 ? conn.getErrorStream() : conn.getInputStream();
                byte[] data = in == null ? new byte[0] : readBody(in);
                if (status == Wire.ErrorKind.UNAVAILABLE.http()) {
                    lastKind = Wire.ErrorKind.UNAVAILABLE;
                    last = "HTTP 503: " + errorReason(data);
                    continue;
                }
                if (status >= 400) {
                    throw rejected(status, data);
                }
                if (status != 200) {
                    throw new TransportException.Malformed("server " + url + ": unexpected HTTP status " + status);
                }
                Map<String, Output> outputs = parseResponse(data, conn.getHeaderField(Wire.HEADER_LENGTH));
                double ms = (System.nanoTime() - start) / 1e6;
                return new InferResult(outputs, body.length, data.length, ms, attempt + 1);
            } catch (SocketTimeoutException e) {
                throw new TransportException.Unreachable("server " + url + ": no answer within "
                        + Math.max(connectTimeoutMs, readTimeoutMs) / 1000.0 + " s", null, attempt + 1);
            } catch (UnknownHostException e) {
                throw new TransportException.Unreachable("server " + url + ": cannot resolve host (" + e.getMessage() + ")", null, attempt + 1);
            } catch (IOException e) {
                lastKind = null;
                last = e.getClass().getSimpleName() + ": " + e.getMessage();
            } finally {
                if (conn != null) {
                    conn.disconnect();
                }
            }
        }
        String advice = lastKind == null ? "check the server URL in Settings and that serve.py is running" : lastKind.advice() + "; try again later";
        throw new TransportException.Unreachable("server " + url + " unreachable after " + (retries + 1) + " attempts: " + last
                + " (" + advice + ")", lastKind, retries + 1);
    }

    private static byte[] readBody(InputStream in) throws IOException {
        try (InputStream s = in) {
            return Bundle.readAll(s, MAX_RESPONSE_BYTES, "response body");
        }
    }

    private TransportException.Rejected rejected(int status, byte[] data) {
        Wire.ErrorKind kind = null;
        String message = new String(data, StandardCharsets.UTF_8).trim();
        try {
            Object doc = Json.parse(message);
            if (doc instanceof Map) {
                Map<?, ?> m = (Map<?, ?>) doc;
                if (m.get("kind") instanceof String) {
                    kind = Wire.ErrorKind.byName((String) m.get("kind"));
                }
                if (m.get("error") instanceof String) {
                    message = (String) m.get("error");
                }
            }
        } catch (JsonException e) {
            // not a JSON error body: the status alone names the kind, the text is quoted as it came
        }
        if (kind == null) {
            kind = Wire.ErrorKind.byStatus(status);
        }
        return new TransportException.Rejected(url, status, kind, message.isEmpty() ? "(empty body)" : message);
    }

    private static String errorReason(byte[] data) {
        String text = new String(data, StandardCharsets.UTF_8).trim();
        try {
            Object doc = Json.parse(text);
            if (doc instanceof Map && ((Map<?, ?>) doc).get("error") instanceof String) {
                return (String) ((Map<?, ?>) doc).get("error");
            }
        } catch (JsonException e) {
            // quoted as it came
        }
        return text.isEmpty() ? "(empty body)" : text;
    }

    /** Splits a response body into its outputs (binary extension, or JSON {@code data}). */
    static Map<String, Output> parseResponse(byte[] body, String headerLength) throws TransportException.Malformed {
        int jsonLen = body.length;
        if (headerLength != null) {
            try {
                jsonLen = Integer.parseInt(headerLength.trim());
            } catch (NumberFormatException e) {
                throw new TransportException.Malformed(Wire.HEADER_LENGTH + " is not an integer ('" + headerLength + "')");
            }
            if (jsonLen < 0 || jsonLen > body.length) {
                throw new TransportException.Malformed("inference header length " + jsonLen + " exceeds the body (" + body.length + " bytes)");
            }
        }
        Object doc;
        try {
            doc = Json.parse(Bundle.utf8(java.util.Arrays.copyOf(body, jsonLen)));
        } catch (JsonException | IOException e) {
            throw new TransportException.Malformed("response header is not JSON (" + e.getMessage() + ")");
        }
        if (!(doc instanceof Map) || !(((Map<?, ?>) doc).get("outputs") instanceof List)) {
            throw new TransportException.Malformed("response has no 'outputs' list");
        }
        Map<String, Output> outputs = new LinkedHashMap<>();
        int pos = jsonLen;
        for (Object o : (List<?>) ((Map<?, ?>) doc).get("outputs")) {
            if (!(o instanceof Map) || !(((Map<?, ?>) o).get("name") instanceof String)) {
                throw new TransportException.Malformed("response output without a name: " + o);
            }
            Map<?, ?> spec = (Map<?, ?>) o;
            String name = (String) spec.get("name");
            Object dt = spec.get("datatype");
            long[] shape = shape(name, spec.get("shape"));
            long count = 1;
            for (long d : shape) {
                count *= d;
            }
            if (count > MAX_RESPONSE_BYTES) {
                throw new TransportException.Malformed("output '" + name + "': shape too large");
            }
            Object params = spec.get("parameters");
            Object size = params instanceof Map ? ((Map<?, ?>) params).get(Wire.BINARY_DATA_SIZE) : null;
            byte[] binary = null;
            if (size != null) {
                if (!(size instanceof Long) || (Long) size < 0 || (Long) size > body.length - pos) {
                    throw new TransportException.Malformed("output '" + name + "': binary data truncated or size invalid (" + size + ")");
                }
                binary = java.util.Arrays.copyOfRange(body, pos, pos + (int) (long) (Long) size);
                pos += binary.length;
            }
            outputs.put(name, decode(name, dt, shape, (int) count, binary, spec.get("data")));
        }
        return outputs;
    }

    private static long[] shape(String name, Object value) throws TransportException.Malformed {
        if (!(value instanceof List)) {
            throw new TransportException.Malformed("output '" + name + "': no shape");
        }
        List<?> dims = (List<?>) value;
        long[] out = new long[dims.size()];
        for (int i = 0; i < out.length; i++) {
            if (!(dims.get(i) instanceof Long) || (Long) dims.get(i) < 0) {
                throw new TransportException.Malformed("output '" + name + "': bad shape " + dims);
            }
            out[i] = (Long) dims.get(i);
        }
        return out;
    }

    private static Output decode(String name, Object datatype, long[] shape, int count, byte[] binary, Object data)
            throws TransportException.Malformed {
        List<?> json = data instanceof List ? (List<?>) data : null;
        if (binary == null && json == null) {
            throw new TransportException.Malformed("output '" + name + "': neither binary data nor 'data'");
        }
        if (Wire.FP32.equals(datatype)) {
            float[] v = new float[count];
            if (binary != null) {
                if (binary.length != 4 * count) {
                    throw new TransportException.Malformed("output '" + name + "': " + binary.length + " bytes for " + count + " FP32 values");
                }
                ByteBuffer.wrap(binary).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(v);
            } else {
                checkCount(name, json.size(), count);
                for (int i = 0; i < count; i++) {
                    if (!(json.get(i) instanceof Number)) {
                        throw new TransportException.Malformed("output '" + name + "': non-numeric value");
                    }
                    v[i] = ((Number) json.get(i)).floatValue();
                }
            }
            return new Output(name, Wire.FP32, shape, v, null, null);
        }
        if (Wire.BOOL.equals(datatype)) {
            boolean[] v = new boolean[count];
            if (binary != null) {
                checkCount(name, binary.length, count);
                for (int i = 0; i < count; i++) {
                    v[i] = binary[i] != 0;
                }
            } else {
                checkCount(name, json.size(), count);
                for (int i = 0; i < count; i++) {
                    v[i] = Boolean.TRUE.equals(json.get(i));
                }
            }
            return new Output(name, Wire.BOOL, shape, null, v, null);
        }
        if (Wire.BYTES.equals(datatype)) {
            List<byte[]> elems = new ArrayList<>();
            if (binary != null) {
                ByteBuffer buf = ByteBuffer.wrap(binary).order(ByteOrder.LITTLE_ENDIAN);
                while (buf.hasRemaining()) {
                    if (buf.remaining() < 4) {
                        throw new TransportException.Malformed("output '" + name + "': element " + elems.size() + " has a truncated 4-byte length prefix");
                    }
                    long n = buf.getInt() & 0xFFFFFFFFL;
                    if (n > buf.remaining()) {
                        throw new TransportException.Malformed("output '" + name + "': element " + elems.size() + " claims " + n + " bytes but only " + buf.remaining() + " remain");
                    }
                    byte[] e = new byte[(int) n];
                    buf.get(e);
                    elems.add(e);
                }
            } else {
                for (Object e : json) {
                    elems.add(String.valueOf(e).getBytes(StandardCharsets.UTF_8));
                }
            }
            checkCount(name, elems.size(), count);
            return new Output(name, Wire.BYTES, shape, null, null, elems.toArray(new byte[0][]));
        }
        throw new TransportException.Malformed("output '" + name + "': unsupported datatype " + datatype);
    }

    private static void checkCount(String name, int got, int count) throws TransportException.Malformed {
        if (got != count) {
            throw new TransportException.Malformed("output '" + name + "': " + got + " values for " + count + " elements");
        }
    }
}
