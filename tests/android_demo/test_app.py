"""The Android app (android_demo/app) compiles, with core and codec, against Android API 23's android.jar and
ExecuTorch's Android classes, both fetched by android_demo/tools/fetch_sdk.sh (no Gradle or Google Maven here).
The APK itself is built in Android Studio; see android_demo/README.md."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ANDROID = Path(__file__).resolve().parents[2] / "android_demo"
FETCH = ANDROID / "tools" / "fetch_sdk.sh"

pytestmark = pytest.mark.skipif(shutil.which("javac") is None, reason="javac not found: install a JDK (apt-get install default-jdk-headless)")


@pytest.fixture(scope="module")
def sdk() -> tuple[Path, Path]:
    proc = subprocess.run(["bash", str(FETCH)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        reason = f"android_demo/tools/fetch_sdk.sh could not fetch android.jar / ExecuTorch classes: {proc.stderr.strip()[-500:]}"
        print(reason)
        pytest.skip(reason)
    android_jar, executorch_jar = (Path(line) for line in proc.stdout.split())
    return android_jar, executorch_jar


def test_app_core_and_codec_compile_for_android_api_23(sdk: tuple[Path, Path], tmp_path: Path) -> None:
    android_jar, executorch_jar = sdk
    sources = sorted(str(p) for d in ("codec/src/main", "core/src/main", "app/src/main") for p in (ANDROID / d).rglob("*.java"))
    proc = subprocess.run(
        ["javac", "-source", "8", "-target", "8", "-Xlint:all", "-Xlint:-options", "-Werror", "-encoding", "UTF-8",
         "-bootclasspath", str(android_jar), "-cp", str(executorch_jar), "-d", str(tmp_path), *sources],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("ai/mantis/demo/MainActivity", "ai/mantis/demo/ExecuTorchEdgeModel", "ai/mantis/core/KServeClient", "ai/mantis/codec/Bitstream"):
        data = (tmp_path / f"{name}.class").read_bytes()
        assert data[:4] == b"\xca\xfe\xba\xbe" and int.from_bytes(data[6:8], "big") == 52, name  # Java 8 class files
    refs = subprocess.run(["javap", "-c", "-p", str(tmp_path / "ai/mantis/demo/ExecuTorchEdgeModel.class")], capture_output=True, text=True, timeout=60).stdout
    assert "org/pytorch/executorch/Module.load" in refs and "org/pytorch/executorch/Tensor.fromBlob" in refs and "org/pytorch/executorch/EValue.from" in refs


def test_fetch_script_is_idempotent(sdk: tuple[Path, Path]) -> None:
    before = [p.stat().st_mtime_ns for p in sdk]
    proc = subprocess.run(["bash", str(FETCH)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and [Path(x) for x in proc.stdout.split()] == list(sdk)
    assert [p.stat().st_mtime_ns for p in sdk] == before
