"""The ``mantis-edge`` distribution's optional extras: what each installs, and the command that names it.

``export/edge_wheel.py`` writes these into the wheel's metadata; the edge runtime names the command in the
error for a backend or transport that is not installed, so both read this one table.
"""

from __future__ import annotations

DISTRIBUTION = "mantis-edge"

NUMPY_RUNTIME_PIN = "1.4.0"
"""The executorch-numpy-runtime release this code was tested with (the ``pte`` extra pins it)."""

EXTRAS: dict[str, tuple[str, ...]] = {
    "pte": (f"executorch-numpy-runtime=={NUMPY_RUNTIME_PIN}",),
    "onnx": ("onnxruntime>=1.20",),
    "grpc": ("grpcio>=1.81.1", "grpcio-tools>=1.81.1"),
}
"""Each extra's requirements."""

USES: dict[str, str] = {
    "pte": "an edge.pte bundle without torch (Python 3.12+)",
    "onnx": "an edge.onnx bundle",
    "grpc": "grpc:// servers (http://, https:// and ws:// need no extra)",
}
"""What each extra is for, as ``mantis-edge --help`` says it."""


def install_command(extra: str) -> str:
    """``pip install 'mantis-edge[EXTRA]'``; ``KeyError`` for an extra the distribution does not have."""
    if extra not in EXTRAS:
        raise KeyError(f"{DISTRIBUTION} has no extra {extra!r}; it has {sorted(EXTRAS)}")
    return f"pip install '{DISTRIBUTION}[{extra}]'"
