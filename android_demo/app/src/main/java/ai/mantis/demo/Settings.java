package ai.mantis.demo;

import android.content.Context;
import android.content.SharedPreferences;

/** Server URL, bearer token and bundle URL, kept in the app's private preferences. */
final class Settings {
    static final String DEFAULT_SERVER = "http://10.0.2.2:8000"; // the host machine, seen from the Android emulator
    private static final String PREFS = "mantis";

    final String serverUrl;
    final String token;
    final String bundleUrl;

    private Settings(String serverUrl, String token, String bundleUrl) {
        this.serverUrl = serverUrl;
        this.token = token;
        this.bundleUrl = bundleUrl;
    }

    static Settings load(Context context) {
        SharedPreferences p = context.getSharedPreferences(PREFS, Context.MODE_PRIVATE);
        return new Settings(p.getString("server_url", DEFAULT_SERVER), p.getString("token", ""), p.getString("bundle_url", ""));
    }

    static void save(Context context, String serverUrl, String token, String bundleUrl) {
        context.getSharedPreferences(PREFS, Context.MODE_PRIVATE).edit()
                .putString("server_url", serverUrl.trim())
                .putString("token", token.trim())
                .putString("bundle_url", bundleUrl.trim())
                .apply();
    }
}
