package ai.mantis.core;

/**
 * What the app does with its bundle when it starts or comes back to the screen, decided from manifest hashes
 * alone ({@link Bundle#manifestSha256}: a few KB to read, where verifying the bundle hashes megabytes):
 * install the bundle shipped in the assets when the assets changed since they were last installed (first
 * start, or an app update bringing new tables), load the installed bundle when it differs from the one loaded
 * (Settings installed another), and otherwise keep the loaded one.
 */
public final class BundleSync {
    /** The outcome of {@link #decide}. */
    public enum Action {
        /** The loaded bundle is the installed one (or the installed one was refused already): nothing to do. */
        KEEP,
        /** Verify and load the installed bundle. */
        LOAD_INSTALLED,
        /** Install the assets' bundle (verified, checked, then swapped in), then load it. */
        INSTALL_FROM_ASSETS,
        /** No bundle installed and none in the assets: say so. */
        NONE
    }

    private BundleSync() {
    }

    /**
     * @param loaded          manifest hash of the bundle in memory, or null
     * @param refused         manifest hash of the installed bundle last refused (not verified or not runnable), or null
     * @param installed       manifest hash of the installed bundle, or null
     * @param assets          manifest hash of the bundle in the app's assets, or null when it ships none
     * @param assetsInstalled the assets' manifest hash recorded when they were last installed, or null
     */
    public static Action decide(String loaded, String refused, String installed, String assets, String assetsInstalled) {
        if (assets != null && !assets.equals(assetsInstalled)) {
            return Action.INSTALL_FROM_ASSETS;
        }
        if (installed == null) {
            return Action.NONE;
        }
        return installed.equals(loaded) || installed.equals(refused) ? Action.KEEP : Action.LOAD_INSTALLED;
    }
}
