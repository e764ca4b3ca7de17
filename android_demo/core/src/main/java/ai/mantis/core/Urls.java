package ai.mantis.core;

import java.net.MalformedURLException;
import java.net.URL;
import java.util.Locale;
import java.util.Set;

/**
 * The URLs the app is given (server, bundle directory): {@code https://} to any host, {@code http://} only to the
 * hosts allowed cleartext (the app's network security config lists them: the emulator's host and loopback by
 * default), everything else ({@code file://}, {@code content://}, {@code ftp://}, no scheme) refused with a
 * message, before any connection is opened.
 */
public final class Urls {
    private Urls() {
    }

    /**
     * {@code text} as an HTTP(S) URL; {@code what} names it in messages ("server URL", "bundle URL").
     * {@code cleartextHosts} are the hosts plain {@code http://} may reach (lower case).
     */
    public static URL parse(String text, String what, Set<String> cleartextHosts) throws UrlException {
        String t = text == null ? "" : text.trim();
        if (t.isEmpty()) {
            throw new UrlException(what + " is empty: enter https://HOST[:PORT]/...");
        }
        int colon = t.indexOf(':');
        String scheme = colon > 0 ? t.substring(0, colon).toLowerCase(Locale.ROOT) : "";
        if (!t.contains("://") || scheme.isEmpty()) {
            throw new UrlException(what + " '" + t + "' has no scheme: enter https://HOST[:PORT]/...");
        }
        if (scheme.equals("file") || scheme.equals("content")) {
            throw new UrlException(what + " '" + t + "': " + scheme + ":// is not supported; serve the files over HTTPS "
                    + "(e.g. python -m http.server behind TLS, or plain HTTP to an allowed host)");
        }
        if (!scheme.equals("http") && !scheme.equals("https")) {
            throw new UrlException(what + " '" + t + "': " + scheme + ":// is not supported, only https:// (and http:// to "
                    + "the hosts allowed cleartext)");
        }
        URL url;
        try {
            url = new URL(t);
        } catch (MalformedURLException e) {
            throw new UrlException(what + " '" + t + "' is not a valid URL (" + e.getMessage() + ")");
        }
        String host = url.getHost() == null ? "" : url.getHost().toLowerCase(Locale.ROOT);
        if (host.isEmpty()) {
            throw new UrlException(what + " '" + t + "' names no host");
        }
        if (url.getUserInfo() != null) {
            throw new UrlException(what + " '" + t + "' carries a user name or password: put the token in Settings' token field");
        }
        if (scheme.equals("http") && !cleartextHosts.contains(host)) {
            throw new UrlException(what + " '" + t + "': plain HTTP to " + host + " is not allowed (the token and the data "
                    + "would travel unencrypted); use https://, or allow " + host + " cleartext in the app's network "
                    + "security config (allowed now: " + cleartextHosts + ")");
        }
        return url;
    }
}
