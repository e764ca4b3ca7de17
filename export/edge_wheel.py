"""Build ``mantis-edge``: the wheel a device installs (``codec/`` + ``runtime_edge/``, no torch, no training code).

    uv run python export/edge_wheel.py --out dist
    pip install "dist/mantis_edge-0.1.0-py3-none-any.whl[pte]"    # .pte on executorch-numpy-runtime (Python 3.12+)
    pip install "dist/mantis_edge-0.1.0-py3-none-any.whl[onnx]"   # .onnx on ONNX Runtime

It requires numpy and Pillow; the extras ``pte`` and ``onnx`` add one edge backend each, ``grpc`` the gRPC transport. The wheel is written directly (it is a zip
with a ``.dist-info``; PEP 427), byte for byte the same for the same sources, atomically.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import sys
import tomllib
import zipfile
from pathlib import Path

from codec.files import atomic_write_bytes
from runtime_edge.models import NUMPY_RUNTIME_PIN

REPO = Path(__file__).resolve().parents[1]
NAME = "mantis-edge"
PACKAGES = ("codec", "runtime_edge")
REQUIRES_PYTHON = ">=3.10"
REQUIRES = ("numpy>=2", "pillow")
EXTRAS = {
    "pte": (f"executorch-numpy-runtime=={NUMPY_RUNTIME_PIN}",),
    "onnx": ("onnxruntime>=1.20",),
    "grpc": ("grpcio>=1.81.1", "grpcio-tools>=1.81.1"),  # grpc:// servers only; http:// and ws:// need nothing
}
SCRIPTS = {"mantis-edge": "runtime_edge.run:main"}
_EPOCH = (1980, 1, 1, 0, 0, 0)


def project_version(pyproject: Path = REPO / "pyproject.toml") -> str:
    """The project's version, from ``pyproject.toml``."""
    return str(tomllib.loads(pyproject.read_text())["project"]["version"])


def wheel_files(root: Path = REPO) -> dict[str, bytes]:
    """``{archive path: bytes}`` of the packages' modules and data files (the globs of ``pyproject.toml``'s
    ``tool.setuptools.package-data``), sorted."""
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"].get("package-data", {})
    files: dict[str, bytes] = {}
    for pkg in PACKAGES:
        paths = {p for pattern in ["*.py", *package_data.get(pkg, [])] for p in (root / pkg).glob(pattern) if p.is_file()}
        for path in sorted(paths):
            files[f"{pkg}/{path.name}"] = path.read_bytes()
    return files


def metadata(version: str) -> str:
    """The wheel's ``METADATA`` (core metadata 2.1)."""
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {NAME}",
        f"Version: {version}",
        "Summary: MANTiS edge runtime: image -> int8 edge client -> entropy-coded bitstream -> KServe v2 server",
        f"Requires-Python: {REQUIRES_PYTHON}",
        *(f"Requires-Dist: {r}" for r in REQUIRES),
    ]
    for extra, reqs in EXTRAS.items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {r}; extra == "{extra}"' for r in reqs]
    return "\n".join(lines) + "\n"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(out_dir: Path, root: Path = REPO) -> Path:
    """Write ``mantis_edge-VERSION-py3-none-any.whl`` into ``out_dir`` and return its path."""
    version = project_version(root / "pyproject.toml")
    dist_info = f"{NAME.replace('-', '_')}-{version}.dist-info"
    files = wheel_files(root)
    files[f"{dist_info}/METADATA"] = metadata(version).encode()
    files[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: mantis export/edge_wheel.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{dist_info}/entry_points.txt"] = ("[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in SCRIPTS.items())).encode()
    record = f"{dist_info}/RECORD"
    files[record] = ("\n".join([*(_record_line(p, d) for p, d in files.items()), f"{record},,"]) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            info = zipfile.ZipInfo(path, _EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    target = Path(out_dir) / f"{NAME.replace('-', '_')}-{version}-py3-none-any.whl"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, buf.getvalue())
    return target


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="build the mantis-edge wheel (codec + runtime_edge, extras pte, onnx and grpc)")
    p.add_argument("--out", type=Path, default=REPO / "dist", help="directory for the wheel (default dist/)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    path = build_wheel(args.out)
    print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
