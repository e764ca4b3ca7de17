package ai.mantis.json;

/** The text is not one valid JSON value (RFC 8259), or is one this reader refuses; the message gives the offset. */
public final class JsonException extends Exception {
    private static final long serialVersionUID = 1L;

    public JsonException(String message) {
        super(message);
    }
}
