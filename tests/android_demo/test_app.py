"""The Android app (android_demo/app) compiles, with core and codec, against Android API 23's android.jar and
ExecuTorch's Android classes, both fetched by android_demo/tools/fetch_sdk.sh (no Gradle or Google Maven here);
its ExecuTorch runtime is the exporter's version; its Gradle wrapper fits its Android Gradle Plugin; its
manifest allows cleartext HTTP only where its network security config says. The APK itself is built with
./gradlew where Gradle's and Google's repositories are reachable; see android_demo/README.md."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANDROID = ROOT / "android_demo"
FETCH = ANDROID / "tools" / "fetch_sdk.sh"
VERSION_FILE = ANDROID / "app" / "src" / "main" / "assets" / "executorch.properties"
ANDROID_NS = "{http://schemas.android.com/apk/res/android}"

# The minimum Gradle version of each Android Gradle Plugin release, from the plugin's compatibility table
# ("Update Gradle", https://developer.android.com/build/releases/gradle-plugin#updating-gradle).
AGP_MIN_GRADLE = {
    "8.0": "8.0", "8.1": "8.0", "8.2": "8.2", "8.3": "8.4", "8.4": "8.6", "8.5": "8.7", "8.6": "8.7", "8.7": "8.9",
    "8.8": "8.10.2",
}

# Which ExecuTorch the Android classes of react-native-executorch (fetch_sdk.sh) belong to: 0.9.1-0.9.3 carry the
# classes.jar and libexecutorch.so of its "ExecuTorch 1.3" build (the same blobs as its commit bumping to 1.3).
RNE_EXECUTORCH = {"0.9.3": "1.3"}

needs_javac = pytest.mark.skipif(shutil.which("javac") is None, reason="javac not found: install a JDK (apt-get install default-jdk-headless)")


def version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def app_executorch_version() -> str:
    values = dict(line.split("=", 1) for line in VERSION_FILE.read_text().splitlines() if line and not line.startswith("#"))
    return values["executorch"].strip()


@pytest.fixture(scope="module")
def sdk() -> tuple[Path, Path]:
    proc = subprocess.run(["bash", str(FETCH)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        reason = f"android_demo/tools/fetch_sdk.sh could not fetch android.jar / ExecuTorch classes: {proc.stderr.strip()[-500:]}"
        print(reason)
        pytest.skip(reason)
    android_jar, executorch_jar = (Path(line) for line in proc.stdout.split())
    return android_jar, executorch_jar


@needs_javac
def test_app_core_and_codec_compile_for_android_api_23(sdk: tuple[Path, Path], tmp_path: Path) -> None:
    android_jar, executorch_jar = sdk
    sources = sorted(str(p) for d in ("codec/src/main", "core/src/main", "app/src/main", "app/src/androidTest") for p in (ANDROID / d).rglob("*.java"))
    proc = subprocess.run(
        ["javac", "-source", "8", "-target", "8", "-Xlint:all", "-Xlint:-options", "-Werror", "-encoding", "UTF-8",
         "-bootclasspath", str(android_jar), "-cp", str(executorch_jar), "-d", str(tmp_path), *sources],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("ai/mantis/demo/MainActivity", "ai/mantis/demo/ExecuTorchEdgeModel", "ai/mantis/demo/EdgeProgramTest", "ai/mantis/core/KServeClient", "ai/mantis/codec/Bitstream"):
        data = (tmp_path / f"{name}.class").read_bytes()
        assert data[:4] == b"\xca\xfe\xba\xbe" and int.from_bytes(data[6:8], "big") == 52, name  # Java 8 class files
    refs = subprocess.run(["javap", "-c", "-p", str(tmp_path / "ai/mantis/demo/ExecuTorchEdgeModel.class")], capture_output=True, text=True, timeout=60).stdout
    assert "org/pytorch/executorch/Module.load" in refs and "org/pytorch/executorch/Tensor.fromBlob" in refs and "org/pytorch/executorch/EValue.from" in refs
    # the program's method is loaded and run once when the bundle is loaded, not on the first photo
    assert "org/pytorch/executorch/Module.loadMethod" in refs and "org/pytorch/executorch/Module.destroy" in refs


def test_compile_check_classes_are_of_the_pinned_runtimes_line() -> None:
    """The compile check's ExecuTorch classes are the newest reachable here (react-native-executorch's, ExecuTorch
    1.3); the app links the pinned version. Same major version, no newer than the pin: the Java API the app
    calls (Module.load/loadMethod/forward/destroy, Tensor.fromBlob/shape/getDataAsFloatArray, EValue.from/
    isTensor/toTensor) has these signatures from 1.3 to 1.4.1; see android_demo/README.md."""
    rne = re.search(r'^RNE_VERSION="([^"]+)"', FETCH.read_text(), re.M).group(1)
    assert rne in RNE_EXECUTORCH, f"fetch_sdk.sh takes react-native-executorch {rne}: add which ExecuTorch it carries"
    compile_check = version(RNE_EXECUTORCH[rne])
    pinned = version(app_executorch_version())
    assert compile_check[0] == pinned[0] and compile_check <= pinned[:2]


def test_executorch_version_is_defined_once() -> None:
    pinned = app_executorch_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert f"executorch=={pinned}" in project["project"]["dependencies"], "the exporter's pin differs from the app's runtime"
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert [p["version"] for p in lock["package"] if p["name"] == "executorch"] == [pinned]
    gradle = (ANDROID / "app" / "build.gradle").read_text()
    assert 'file("src/main/assets/executorch.properties")' in gradle
    assert '"org.pytorch:executorch-android:${executorch.getProperty("executorch")}"' in gradle
    assert not re.search(r"executorch-android:\d", gradle), "a second, literal ExecuTorch version in app/build.gradle"


def test_gradle_wrapper_fits_the_android_gradle_plugin() -> None:
    agp = re.search(r'id "com\.android\.application" version "([\d.]+)"', (ANDROID / "build.gradle").read_text()).group(1)
    props = (ANDROID / "gradle" / "wrapper" / "gradle-wrapper.properties").read_text()
    gradle = re.search(r"distributions/gradle-([\d.]+)-(?:bin|all)\.zip", props).group(1)
    minor = ".".join(agp.split(".")[:2])
    assert minor in AGP_MIN_GRADLE, f"AGP {agp} is not in the compatibility table of this test: add its minimum Gradle"
    assert version(gradle) >= version(AGP_MIN_GRADLE[minor]), f"Gradle {gradle} is older than AGP {agp}'s minimum {AGP_MIN_GRADLE[minor]}"
    assert version(gradle)[0] == version(AGP_MIN_GRADLE[minor])[0], "a Gradle major version AGP 8 was not released for"
    with zipfile.ZipFile(ANDROID / "gradle" / "wrapper" / "gradle-wrapper.jar") as jar:
        assert "org/gradle/wrapper/GradleWrapperMain.class" in jar.namelist()
    gradlew = ANDROID / "gradlew"
    assert gradlew.stat().st_mode & 0o111 and "org.gradle.wrapper.GradleWrapperMain" in gradlew.read_text()


def test_manifest_allows_cleartext_only_to_the_configured_hosts() -> None:
    manifest = ElementTree.parse(ANDROID / "app" / "src" / "main" / "AndroidManifest.xml").getroot()
    app = manifest.find("application")
    assert app.get(f"{ANDROID_NS}networkSecurityConfig") == "@xml/network_security_config"
    assert app.get(f"{ANDROID_NS}usesCleartextTraffic") is None
    nsc = ElementTree.parse(ANDROID / "app" / "src" / "main" / "res" / "xml" / "network_security_config.xml").getroot()
    assert nsc.find("base-config").get("cleartextTrafficPermitted") == "false"
    hosts = [d.text for c in nsc.findall("domain-config") if c.get("cleartextTrafficPermitted") == "true" for d in c.findall("domain")]
    assert hosts == ["10.0.2.2", "localhost", "127.0.0.1"]
    provider = app.find("provider")
    assert provider.get(f"{ANDROID_NS}exported") == "false" and provider.get(f"{ANDROID_NS}grantUriPermissions") == "true"


@needs_javac
def test_fetch_script_is_idempotent(sdk: tuple[Path, Path]) -> None:
    before = [p.stat().st_mtime_ns for p in sdk]
    proc = subprocess.run(["bash", str(FETCH)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and [Path(x) for x in proc.stdout.split()] == list(sdk)
    assert [p.stat().st_mtime_ns for p in sdk] == before
