package ai.mantis.demo;

import android.content.Context;
import android.content.SharedPreferences;

/** Server URL, bearer token, bundle URL and pinned manifest hashes, kept in the app's private preferences. */
final class Settings {
    static final String DEFAULT_SERVER = "http://10.0.2.2:8000"; // the host machine, seen from the Android emulator
    private static final String PREFS = "mantis";

    private final String serverUrl;
    private final String token;
    private final String bundleUrl;
    private final String pins;

    private Settings(String serverUrl, String token, String bundleUrl, String pins) {
        this.serverUrl = serverUrl;
        this.token = token;
        this.bundleUrl = bundleUrl;
        this.pins = pins;
    }

    String serverUrl() {
        return serverUrl;
    }

    String token() {
        return token;
    }

    String bundleUrl() {
        return bundleUrl;
    }

    /** Hex SHA-256 of accepted bundle manifests, one a line (empty: any verified bundle). */
    String pins() {
        return pins;
    }

    static Settings load(Context context) {
        SharedPreferences p = context.getSharedPreferences(PREFS, Context.MODE_PRIVATE);
        return new Settings(p.getString("server_url", DEFAULT_SERVER), p.getString("token", ""), p.getString("bundle_url", ""),
                p.getString("pins", ""));
    }

    static void save(Context context, String serverUrl, String token, String bundleUrl, String pins) {
        context.getSharedPreferences(PREFS, Context.MODE_PRIVATE).edit()
                .putString("server_url", serverUrl.trim())
                .putString("token", token.trim())
                .putString("bundle_url", bundleUrl.trim())
                .putString("pins", pins.trim())
                .apply();
    }
}
