#!/usr/bin/env bash
# Fetches what compiling the Android app's Java needs, without Gradle or Google's Maven:
#   android.jar (API 23)   from Debian bullseye's libandroid-23-java (the package android-sdk-platform-23
#                          links its platforms/android-23/android.jar to), through apt-get download with a
#                          separate sources list and state directory, so the system's apt setup is untouched;
#   ExecuTorch classes.jar (org.pytorch.executorch.Module/Tensor/EValue) from the npm package
#                          react-native-executorch, which ships it under android/libs/ (0.9.3: the classes of
#                          its ExecuTorch 1.3 build, the newest reachable here; the app links the version in
#                          app/src/main/assets/executorch.properties through Gradle, see README.md).
# Idempotent: both land in android_demo/.sdk/ (gitignored) and are reused. Prints the two paths on success;
# on failure says what failed on stderr and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
SDK="$PWD/.sdk"
ANDROID_JAR="$SDK/android-23.jar"
ET_JAR="$SDK/executorch-classes.jar"
RNE_VERSION="0.9.3"
SUITE="bullseye"
mkdir -p "$SDK"

fail() { echo "fetch_sdk.sh: $*" >&2; exit 1; }

if [[ ! -s "$ANDROID_JAR" ]]; then
    command -v apt-get >/dev/null || fail "apt-get not found: cannot download Debian's libandroid-23-java"
    # The mirror this machine already uses (deb822 .sources or one-line .list), else Debian's own.
    mirror="$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)"
    [[ -n "$mirror" ]] || mirror="$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v security | head -n1 || true)"
    [[ -n "$mirror" ]] || mirror="http://deb.debian.org/debian"
    apt_dir="$SDK/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
    keyring=""
    [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] && keyring="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    echo "deb ${keyring}${mirror} ${SUITE} main" > "$apt_dir/sources.list"
    opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o "Dir::State::Status=/dev/null"
          -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
    apt-get "${opts[@]}" -qq update >"$apt_dir/update.log" 2>&1 || fail "apt-get update for $SUITE from $mirror failed: $(tail -n 3 "$apt_dir/update.log")"
    (cd "$apt_dir/debs" && apt-get "${opts[@]}" -qq download libandroid-23-java >"$apt_dir/download.log" 2>&1) \
        || fail "apt-get download libandroid-23-java ($SUITE) failed: $(tail -n 3 "$apt_dir/download.log")"
    deb="$(ls "$apt_dir"/debs/libandroid-23-java_*.deb | head -n1)"
    rm -rf "$apt_dir/x" && dpkg-deb -x "$deb" "$apt_dir/x" || fail "cannot unpack $deb"
    jar="$apt_dir/x/usr/share/java/com.android.android-23.jar"
    [[ -s "$jar" ]] || fail "$deb holds no usr/share/java/com.android.android-23.jar"
    cp "$jar" "$ANDROID_JAR.tmp" && mv "$ANDROID_JAR.tmp" "$ANDROID_JAR"
    rm -rf "$apt_dir/x" "$apt_dir/debs"
fi

if [[ ! -s "$ET_JAR" ]]; then
    command -v npm >/dev/null || fail "npm not found: cannot download react-native-executorch@$RNE_VERSION"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent "react-native-executorch@$RNE_VERSION" >"$work/pack.log" 2>&1) \
        || fail "npm pack react-native-executorch@$RNE_VERSION failed: $(tail -n 3 "$work/pack.log")"
    tar -xzf "$work"/react-native-executorch-*.tgz -C "$work" package/android/libs/classes.jar \
        || fail "react-native-executorch@$RNE_VERSION has no package/android/libs/classes.jar"
    python3 -c "import sys, zipfile; sys.exit('org/pytorch/executorch/Module.class' not in zipfile.ZipFile(sys.argv[1]).namelist())" "$work/package/android/libs/classes.jar" \
        || fail "classes.jar of react-native-executorch@$RNE_VERSION lacks org.pytorch.executorch.Module"
    cp "$work/package/android/libs/classes.jar" "$ET_JAR.tmp" && mv "$ET_JAR.tmp" "$ET_JAR"
fi

echo "$ANDROID_JAR"
echo "$ET_JAR"
