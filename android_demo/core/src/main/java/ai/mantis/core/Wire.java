package ai.mantis.core;

/**
 * The wire contract ({@code codec/WIRE.md}) as Java constants. The one definition is {@code codec/wire.json};
 * the JVM tests check every value here against it.
 */
public final class Wire {
    public static final String PROTOCOL = "kserve-v2";
    public static final String BITSTREAM_INPUT = "bitstream";
    public static final String BYTES = "BYTES";
    public static final String FP32 = "FP32";
    public static final String BOOL = "BOOL";
    public static final String LOGITS_PREFIX = "logits_";
    public static final String LABELS_PREFIX = "labels_";
    public static final String ACTIVE_TASKS_OUTPUT = "active_tasks";
    public static final String TOP_K_PARAMETER = "top_k";
    public static final int TOP_K_DEFAULT = 1;
    public static final int TOP_K_MINIMUM = 1;
    public static final String HEADER_LENGTH = "Inference-Header-Content-Length";
    public static final String BINARY_DATA_SIZE = "binary_data_size";
    public static final String BINARY_DATA = "binary_data";
    public static final String BINARY_DATA_OUTPUT = "binary_data_output";
    public static final String BYTES_ELEMENT_PREFIX = "uint32-le";
    public static final String AUTH_HEADER = "Authorization";
    public static final String AUTH_SCHEME = "Bearer";
    public static final String TOKEN_ENV = "MANTIS_SERVER_TOKEN";

    private Wire() {
    }

    /** Every refusal's kind: it fixes the HTTP status and the gRPC status code (WIRE.md, section 5). */
    public enum ErrorKind {
        BAD_REQUEST("bad_request", 400, "INVALID_ARGUMENT", "the request was malformed"),
        CODEC("codec", 400, "INVALID_ARGUMENT", "the server could not decode a bitstream"),
        UNAUTHORIZED("unauthorized", 401, "UNAUTHENTICATED", "the bearer token is missing or wrong: check the token in Settings"),
        NOT_FOUND("not_found", 404, "NOT_FOUND", "the server does not serve this model: check the server URL and the bundle"),
        METHOD("method", 405, "UNIMPLEMENTED", "the server does not accept this method on this route"),
        TABLE_MISMATCH("table_mismatch", 409, "FAILED_PRECONDITION", "the server uses other entropy tables: the app's bundle and the server's bundle differ"),
        MODEL_MISMATCH("model_mismatch", 409, "FAILED_PRECONDITION", "the bitstream's latent shape or tasks do not fit the server's model: the bundles differ"),
        TIMEOUT("timeout", 408, "DEADLINE_EXCEEDED", "the request did not reach the server in time: check the network"),
        TOO_LARGE("too_large", 413, "RESOURCE_EXHAUSTED", "the request is over the server's size or image-count limit"),
        HEADERS_TOO_LARGE("headers_too_large", 431, "RESOURCE_EXHAUSTED", "the request's HTTP headers are over the server's limit"),
        RATE_LIMITED("rate_limited", 429, "RESOURCE_EXHAUSTED", "the server refused too many requests from this address: wait and retry"),
        UNAVAILABLE("unavailable", 503, "UNAVAILABLE", "the server is starting or shutting down"),
        BACKEND("backend", 500, "INTERNAL", "the server's inference backend failed");

        private final String wireName;
        private final int http;
        private final String grpc;
        /** What the refusal means for the user of the app. */
        private final String advice;

        public String wireName() {
            return wireName;
        }

        public int http() {
            return http;
        }

        public String grpc() {
            return grpc;
        }

        public String advice() {
            return advice;
        }

        ErrorKind(String wireName, int http, String grpc, String advice) {
            this.wireName = wireName;
            this.http = http;
            this.grpc = grpc;
            this.advice = advice;
        }

        /** The kind named {@code name} in an error body, or null for a name the contract does not have. */
        public static ErrorKind byName(String name) {
            for (ErrorKind k : values()) {
                if (k.wireName().equals(name)) {
                    return k;
                }
            }
            return null;
        }

        /** The first kind with HTTP status {@code status} (the contract's order), or null. */
        public static ErrorKind byStatus(int status) {
            for (ErrorKind k : values()) {
                if (k.http() == status) {
                    return k;
                }
            }
            return null;
        }
    }

    /** {@code logits_<task>}. */
    public static String logitsOutput(String task) {
        return LOGITS_PREFIX + task;
    }

    /** {@code labels_<task>}. */
    public static String labelsOutput(String task) {
        return LABELS_PREFIX + task;
    }

    /** The {@code Authorization} header value for {@code token}. */
    public static String bearer(String token) {
        return AUTH_SCHEME + " " + token;
    }
}
