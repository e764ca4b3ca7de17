"""The Java codec (android_demo/codec): compiled with javac, run on the shared vectors and on random cases
cross-checked byte for byte against the Python codec."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import codec

ROOT = Path(__file__).resolve().parents[2]
JAVA_DIR = ROOT / "android_demo" / "codec"
VECTORS = Path(__file__).resolve().parents[1] / "vectors"
RUNNER = "ai.mantis.codec.VectorTests"

pytestmark = pytest.mark.skipif(
    shutil.which("javac") is None or shutil.which("java") is None,
    reason="javac/java not found: install a JDK (Debian/Ubuntu: apt-get install default-jdk-headless)",
)


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("java-classes")
    sources = sorted(str(p) for p in JAVA_DIR.joinpath("src").rglob("*.java"))
    assert sources, "no Java sources found"
    proc = subprocess.run(
        ["javac", "--release", "11", "-Xlint:all", "-Werror", "-encoding", "UTF-8", "-d", str(out), *sources],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _run(classes: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["java", "-cp", str(classes), RUNNER, *args], capture_output=True, text=True, timeout=300)


def test_java_passes_the_shared_vectors(classes: Path) -> None:
    proc = _run(classes, str(VECTORS))
    last = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = re.fullmatch(r"(\d+) passed, 0 failed", last)
    assert m and int(m.group(1)) >= 200, last


def test_java_runner_fails_on_a_tampered_vector(classes: Path, tmp_path: Path) -> None:
    for p in VECTORS.iterdir():
        shutil.copy(p, tmp_path / p.name)
    target = tmp_path / "typical.mtb"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x40
    target.write_bytes(bytes(data))
    proc = _run(classes, str(tmp_path))
    assert proc.returncode == 1
    assert "FAIL typical.mtb: sha256 differs" in proc.stdout
    assert "FAIL typical: encode bytes" in proc.stdout
    assert re.search(r"\d+ passed, [1-9]\d* failed", proc.stdout)


def test_java_and_python_agree_on_random_cases(classes: Path, tmp_path: Path) -> None:
    tables = codec.EntropyTables.load(VECTORS / "tables.safetensors")
    c = tables.num_channels
    rng = np.random.default_rng(2024)
    cases = []
    for k in range(30):
        h, w = int(rng.integers(1, 20)), int(rng.integers(1, 20))
        sym = np.rint(rng.laplace(0, 1 + k % 5, size=(c, h, w))).astype(np.int64)
        wild = rng.random(sym.shape) < 0.03 * (k % 4)
        sym[wild] = rng.integers(-codec.SYMBOL_LIMIT, codec.SYMBOL_LIMIT + 1, size=int(wild.sum()))
        sym = sym.astype(np.int32)
        mask = int(rng.integers(0, 256))
        name = f"case{k}"
        sym.astype("<i4").tofile(tmp_path / f"{name}.i32")
        (tmp_path / f"{name}.py.mtb").write_bytes(codec.encode(sym, mask, tables))
        cases.append((name, sym, mask))
    (tmp_path / "cases.txt").write_text("".join(f"{n} {s.shape[0]} {s.shape[1]} {s.shape[2]} {m}\n" for n, s, m in cases))
    proc = _run(classes, "--cross", str(VECTORS / "tables.safetensors"), str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name, sym, _ in cases:
        assert (tmp_path / f"{name}.java.mtb").read_bytes() == (tmp_path / f"{name}.py.mtb").read_bytes(), name
        np.testing.assert_array_equal(np.fromfile(tmp_path / f"{name}.java.i32", dtype="<i4").reshape(sym.shape), sym)
