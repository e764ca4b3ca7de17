"""The edge runtime on an emulated aarch64 device, compared with this machine: same bitstreams, same answers.

::

    Debian arm64 .debs (python3.13) ─► SYSROOT      PyPI aarch64 wheels + mantis-edge wheel ─► SYSROOT/opt/mantis-edge
    qemu-aarch64-static -cpu cortex-a72 -L SYSROOT SYSROOT/usr/bin/python3.13 -m runtime_edge.run ...
         --save  ─► bitstreams ══ byte for byte ══ bitstreams of runtime_edge on x86
         --server (x86 serve.py on 127.0.0.1) ─► printed answers ══ x86's printed answers

For every torch-free edge format a bundle can carry (``.pte`` on executorch-numpy-runtime, ``.onnx`` on ONNX
Runtime 1.20.1, the newest that starts under qemu 7.2: later releases crash at import while probing the CPU).
The CPU model is pinned (``-cpu cortex-a72``): qemu's default ``max`` model computed wrong int8 results.
This proves the code and the numerics on ARM; it says nothing about speed on a real board.

The sysroot is built once under the output directory, from Debian's archive with apt-get and a state directory of
its own (nothing on this machine's apt configuration changes), and reused while its package list is the same.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from codec.files import atomic_write_bytes, atomic_write_json
from runtime_edge.client import EdgeRuntime
from runtime_edge.run import save_bitstreams, send_images
from runtime_edge.transport.http import KServeClient

SUITE = "trixie"
"""Debian suite of the sysroot: its python3.13 runs the cp312+ (abi3) wheel of executorch-numpy-runtime."""
MIRROR = "http://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
DEBS = ("python3.13", "libstdc++6")
PYTHON = "usr/bin/python3.13"
PYTHON_VERSION = "3.13"
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64")
ONNXRUNTIME_PIN = "1.20.1"
CPU = "cortex-a72"
TOP_K = 3
SITE = "opt/mantis-edge"
FORMATS = {"executorch": "pte", "onnxruntime": "onnx"}
"""Edge runtimes a device runs without torch -> the mantis-edge extra that brings the runtime."""
_STAMP = ".mantis-sysroot.json"


class DeviceCheckError(RuntimeError):
    """The device check could not run (a tool or the network is missing, a command failed)."""


class SysrootUnavailable(DeviceCheckError):
    """The aarch64 sysroot cannot be built on this machine (no apt-get, dpkg-deb, qemu or archive access)."""


def _run(cmd: Sequence[str], what: str, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise DeviceCheckError(f"{what}: no result after {timeout:g} s ({' '.join(cmd[:4])} ...)") from None
    if proc.returncode != 0:
        raise DeviceCheckError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd[:6])} ...\n{(proc.stderr or proc.stdout)[-3000:]}")
    return proc


def qemu() -> str:
    """Path of ``qemu-aarch64-static`` (``SysrootUnavailable`` when it is not installed)."""
    path = shutil.which("qemu-aarch64-static")
    if path is None:
        raise SysrootUnavailable("qemu-aarch64-static is not installed (Debian: apt-get install qemu-user-static)")
    return path


def _apt_options(state: Path) -> list[str]:
    return [
        f"-oDir::Etc::SourceList={state / 'sources.list'}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={state / 'lists'}",
        f"-oDir::State::status={state / 'status'}",
        f"-oDir::Cache::Archives={state / 'archives'}",
        "-oDir::Cache::pkgcache=",
        "-oDir::Cache::srcpkgcache=",
        "-oAPT::Architecture=arm64",
        "-oAPT::Architectures::=arm64",
        "-oDebug::NoLocking=1",
        "-oAPT::Install-Recommends=false",
        "-oAcquire::Retries=3",
    ]


def build_sysroot(out: Path, mirror: str = MIRROR, timeout: float = 900.0) -> Path:
    """An aarch64 Debian ``SUITE`` root with python3.13 under ``out/sysroot``: built from the archive's arm64
    ``.deb`` files (apt-get with its own state in ``out/apt``, then ``dpkg-deb -x``), or reused when built before
    from the same package list and mirror."""
    root, state = out / "sysroot", out / "apt"
    want = {"suite": SUITE, "mirror": mirror, "packages": list(DEBS)}
    stamp = root / _STAMP
    qemu()
    if stamp.is_file() and json.loads(stamp.read_text()) == want and (root / PYTHON).is_file():
        return root
    missing = [t for t in ("apt-get", "dpkg-deb") if shutil.which(t) is None]
    if missing or not KEYRING.is_file():
        raise SysrootUnavailable(
            f"building a Debian arm64 sysroot needs apt-get, dpkg-deb and {KEYRING}; missing: {missing or [str(KEYRING)]}"
        )
    if root.exists():
        shutil.rmtree(root)
    for d in ("lists/partial", "archives/partial"):
        (state / d).mkdir(parents=True, exist_ok=True)
    for deb in (state / "archives").glob("*.deb"):  # only what this package list needs is unpacked below
        deb.unlink()
    (state / "sources.list").write_text(f"deb [arch=arm64 signed-by={KEYRING}] {mirror} {SUITE} main\n")
    (state / "status").write_text("")
    options = _apt_options(state)
    try:
        _run(["apt-get", *options, "-qq", "update"], f"apt-get update ({mirror} {SUITE}, arm64)", timeout)
        _run(["apt-get", *options, "-qq", "-y", "--download-only", "install", *DEBS], f"downloading arm64 {' '.join(DEBS)}", timeout)
    except DeviceCheckError as exc:
        raise SysrootUnavailable(str(exc)) from None
    tmp = out / "sysroot.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for deb in sorted((state / "archives").glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(tmp)], f"unpacking {deb.name}", 120)
    for link in ("lib", "bin", "sbin"):  # merged /usr: the loader is /lib/ld-linux-aarch64.so.1
        if not (tmp / link).exists():
            (tmp / link).symlink_to(f"usr/{link}")
    atomic_write_json(tmp / _STAMP, want)
    tmp.rename(root)
    return root


def find_pip() -> list[str]:
    """A pip to download aarch64 wheels with: this interpreter's, else the system ``python3``'s."""
    for python in dict.fromkeys([sys.executable, shutil.which("python3") or "", "/usr/bin/python3"]):
        if python and subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode == 0:
            return [python, "-m", "pip"]
    raise DeviceCheckError("no pip found (tried this interpreter and python3); install python3-pip")


def install_edge(root: Path, wheel: Path, extras: Sequence[str], pins: Sequence[str] = (), timeout: float = 900.0) -> Path:
    """``pip download`` the aarch64 wheels of ``mantis-edge[extras]`` (never torch; ``pins``: further requirements
    such as ``numpy==2.2.6``) and install them with the ``mantis-edge`` wheel into ``root/opt/mantis-edge/<extras>``;
    returns that directory."""
    site = root / SITE / "-".join(sorted(extras))
    pins = [*pins, *([f"onnxruntime=={ONNXRUNTIME_PIN}"] if "onnx" in extras else [])]
    platform = [a for p in WHEEL_PLATFORMS for a in ("--platform", p)]
    target = [*platform, "--python-version", PYTHON_VERSION, "--implementation", "cp", "--only-binary=:all:"]
    wheels = root.parent / "wheels"
    spec = f"{wheel}[{','.join(sorted(extras))}]"
    pip = find_pip()
    _run([*pip, "download", "-q", *target, "-d", str(wheels), spec, *pins], "pip download of the aarch64 wheels", timeout)
    if site.exists():
        shutil.rmtree(site)
    # the download above checked Requires-Python against 3.13; pip install --target checks it against its own interpreter
    _run(
        [
            *pip,
            "install",
            "-q",
            "--no-index",
            "--find-links",
            str(wheels),
            "--no-compile",
            "--ignore-requires-python",
            "--target",
            str(site),
            *target,
            spec,
            *pins,
        ],
        "pip install --target of the aarch64 wheels",
        timeout,
    )
    installed = sorted(p.name for p in site.iterdir())
    if any(name.startswith("torch") for name in installed):
        raise DeviceCheckError(f"torch was pulled into the device install {site}: {installed}")
    return site


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@dataclass
class FormatResult:
    """One edge format's comparison."""

    runtime: str
    images: int
    identical: int
    differing: list[str] = field(default_factory=list)
    answers_equal: bool = False
    answer_diff: list[str] = field(default_factory=list)
    install_bytes: int = 0
    arm_seconds: float = 0.0
    x86_seconds: float = 0.0

    @property
    def identical_share(self) -> float:
        return self.identical / self.images if self.images else 0.0


def arm_command(root: Path, site: Path, bundle: Path, images: Sequence[Path], mode: list[str], runtime: str) -> list[str]:
    """``runtime_edge.run`` on the emulated device (``-P``: this checkout is not on its path; ``mode``: ``--save DIR``
    or ``--server URL``); a ``.pte`` on the torch-free runtime, explicitly."""
    pte = ["--pte-runtime", "numpy"] if runtime == "executorch" else []
    return [
        qemu(),
        "-cpu",
        CPU,
        "-L",
        str(root),
        str(root / PYTHON),
        "-P",
        "-m",
        "runtime_edge.run",
        "--artifacts",
        str(bundle),
        *mode,
        "--top-k",
        str(TOP_K),
        *pte,
        *map(str, images),
    ]


def x86_run(bundle: Path, runtime: str, images: Sequence[Path], save_dir: Path, server_url: str) -> str:
    """The same run on this machine, in this process (a ``.pte`` on the official runtime, the one that wrote it):
    writes the bitstreams to ``save_dir`` and returns what ``run.py --server`` prints."""
    edge = EdgeRuntime(bundle, pte_runtime="official" if runtime == "executorch" else "auto")
    save_bitstreams(edge, list(images), save_dir, io.StringIO())
    out = io.StringIO()
    with KServeClient(server_url, timeout=30.0) as client:
        send_images(edge, client, edge.model_name, list(images), TOP_K, 1, out)
    return out.getvalue()


def compare_format(
    bundle: Path, runtime: str, images: Sequence[Path], root: Path, site: Path, server_url: str, work: Path, timeout: float
) -> FormatResult:
    """Bitstreams and answers of ``bundle`` on the emulated device against this machine's, on ``images``."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1", "LANG": "C.UTF-8", "HOME": str(root)}
    dirs = {side: work / runtime / side for side in ("arm", "x86")}
    for d in dirs.values():
        if d.exists():
            shutil.rmtree(d)
    t = time.perf_counter()
    _run(
        arm_command(root, site, bundle, images, ["--save", str(dirs["arm"])], runtime),
        f"{runtime} edge run under qemu",
        timeout,
        env=env,
        cwd=work,
    )
    arm_answers = _run(
        arm_command(root, site, bundle, images, ["--server", server_url], runtime),
        f"{runtime} edge run under qemu, answers from {server_url}",
        timeout,
        env=env,
        cwd=work,
    ).stdout
    arm_seconds = time.perf_counter() - t
    t = time.perf_counter()
    x86_answers = x86_run(bundle, runtime, images, dirs["x86"], server_url)
    x86_seconds = time.perf_counter() - t
    differing = [
        img.name for img in images if (dirs["arm"] / f"{img.stem}.mtb").read_bytes() != (dirs["x86"] / f"{img.stem}.mtb").read_bytes()
    ]
    a, b = arm_answers.splitlines(), x86_answers.splitlines()
    diff = [f"arm: {x!r} / x86: {y!r}" for x, y in zip(a, b) if x != y] + (
        [f"{len(a)} lines on arm, {len(b)} on x86"] if len(a) != len(b) else []
    )
    return FormatResult(
        runtime, len(images), len(images) - len(differing), differing, not diff, diff[:10], tree_bytes(site), arm_seconds, x86_seconds
    )


def write_heldout(config: Path, n: int, out_dir: Path) -> list[Path]:
    """The first ``n`` images of the test split of a training config, as JPEG files (quality 95, what a camera
    hands the device)."""
    from training.config import load_config
    from training.data import build_datasets

    _, _, test, _, _ = build_datasets(load_config(config), splits=("test",))
    if len(test) < n:
        raise DeviceCheckError(f"{config}: the test split has {len(test)} images, {n} were asked for")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = out_dir / f"heldout_{i:05d}.jpg"
        if not path.is_file():
            buf = io.BytesIO()
            test.pil(i).save(buf, "JPEG", quality=95)
            atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def format_report(results: Sequence[FormatResult], sysroot_seconds: float) -> str:
    """A table of the comparison, one row per edge format."""
    lines = [
        f"aarch64 (qemu-aarch64-static -cpu {CPU}, Debian {SUITE} python{PYTHON_VERSION}) vs x86_64; sysroot ready in {sysroot_seconds:.1f} s",
        f"  {'runtime':<12}{'images':>7}{'identical':>11}{'share':>9}  {'answers':<9}{'install MB':>11}{'arm s':>8}{'x86 s':>8}",
    ]
    for r in results:
        lines.append(
            f"  {r.runtime:<12}{r.images:>7}{r.identical:>11}{100 * r.identical_share:>8.2f}%  {'same' if r.answers_equal else 'DIFFER':<9}"
            f"{r.install_bytes / 1e6:>11.1f}{r.arm_seconds:>8.1f}{r.x86_seconds:>8.1f}"
        )
        lines += [f"    bitstream differs: {n}" for n in r.differing[:10]]
        lines += [f"    answer differs: {d}" for d in r.answer_diff]
    return "\n".join(lines)


def device_check(
    bundles: Sequence[Path], images: Sequence[Path], out: Path, mirror: str = MIRROR, pins: Sequence[str] = (), timeout: float = 1800.0
) -> tuple[list[FormatResult], float]:
    """Compare every bundle whose edge runtime a device runs without torch (:data:`FORMATS`) on ``images``, the
    device's packages installed with ``pins``; returns the results and the seconds the sysroot took (built or reused)."""
    from export.edge_wheel import build_wheel
    from codec.bundle import load_bundle
    from runtime_server.process import ServerProcess

    runtimes = {}
    for bundle in bundles:
        runtime = load_bundle(bundle).manifest.edge.runtime
        if runtime not in FORMATS:
            raise DeviceCheckError(
                f"{bundle}: its edge client runs on {runtime}, which needs more than a torch-free device; the check runs {sorted(FORMATS)}"
            )
        runtimes[Path(bundle)] = runtime
    out = Path(out).resolve()  # apt reads a relative Dir:: option against its own root, not the working directory
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    root = build_sysroot(out, mirror)
    sysroot_seconds = time.perf_counter() - t
    wheel = build_wheel(out / "dist")
    results = []
    for bundle, runtime in runtimes.items():
        site = install_edge(root, wheel, [FORMATS[runtime]], pins)
        with ServerProcess(bundle, out / f"serve_{runtime}.log", ["--backend", "onnxruntime"]) as server:
            results.append(compare_format(bundle.resolve(), runtime, [p.resolve() for p in images], root, site, server.url, out, timeout))
    return results, sysroot_seconds
