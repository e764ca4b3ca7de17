"""Edge client programs on their runtimes: the one runner stack that devices, the export's checks and the
int8 accuracy check all use.

``load_edge_model(path, runtime)`` loads a program on the runtime a bundle's manifest names (the schema
ties each runtime to its file suffix, so nothing is guessed from the file name):

- ``executorch``: ``edge.pte`` on ``executorch-numpy-runtime`` (numpy only, no torch) where it is installed and
  loads the program, else on the official ExecuTorch runtime (``executorch.runtime``, whose Python wheel links
  libtorch); ``pte_runtime`` chooses (``auto``, ``numpy``, ``official``) and a fallback is logged (a warning; at
  info level on Python < 3.12, where the torch-free runtime cannot be installed and the official one is the only one),
- ``onnxruntime``: ``edge.onnx`` on ONNX Runtime's CPU provider,
- ``coreml``: ``edge.mlpackage`` on Core ML, macOS only.

Every model maps ``image`` float32 ``(1, 3, H, W)`` to ``(latent (1, C, h, w), task_logits (1, T))``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from codec.manifest import EDGE_INPUT, EDGE_OUTPUTS, EDGE_RUNTIMES
from runtime_edge.extras import NUMPY_RUNTIME_PIN, install_command

log = logging.getLogger(__name__)

PTE_RUNTIMES = ("auto", "numpy", "official")
"""How a ``.pte`` runs: ``numpy`` (executorch-numpy-runtime), ``official`` (executorch), ``auto`` (numpy where it
is installed and loads the program, else official, logged)."""

NUMPY_RUNTIME_PYTHON = (3, 12)
"""The oldest Python executorch-numpy-runtime has wheels for (cp312 abi3)."""

NUMPY_RUNTIME_PROGRAMS = ("1.5.1",)
"""executorch releases whose ``.pte`` programs that release loaded and ran bit-identically to the official runtime
(it is built on ExecuTorch 1.3.1; ``tests/runtime_edge/test_install.py`` checks it on every run)."""


class EdgeRuntimeError(RuntimeError):
    """The edge client cannot be loaded or run (wrong platform, missing runtime, unexpected outputs)."""


class EdgeModel(Protocol):
    """A loaded edge client: ``run(x (1,3,H,W) float32) -> (latent (1,C,h,w), task_logits (1,T))``."""

    runtime: str

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _two_outputs(outputs: list | tuple, what: str) -> tuple[np.ndarray, np.ndarray]:
    if len(outputs) != len(EDGE_OUTPUTS):
        raise EdgeRuntimeError(f"{what} returned {len(outputs)} outputs, expected {list(EDGE_OUTPUTS)}")
    return outputs[0], outputs[1]


@contextlib.contextmanager
def native_log(what: str) -> Iterator[None]:
    """Send what native code writes to stderr (fd 2) meanwhile to :mod:`logging` instead: ExecuTorch's info lines
    (``I ...``) and its CPU probing on the first run (``cpuinfo_utils``) at debug level, any other line as a warning."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode("utf-8", errors="replace").splitlines():
                if line.startswith("I ") or "cpuinfo_utils.cpp" in line:
                    log.debug("%s: %s", what, line)
                elif line.strip():
                    log.warning("%s: %s", what, line)


@contextlib.contextmanager
def torch_logs_errors_only() -> Iterator[None]:
    """torch's loggers pass errors only meanwhile. Importing the official runtime imports the whole exporter
    (``executorch.exir``), whose import-time notices (a deprecation warning from ``torch.utils._pytree``) are about
    exporting, not about running a program; call this after ``import torch``, which sets those loggers up."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class ExecuTorchModel:
    """``.pte`` program on the official ExecuTorch runtime (XNNPACK-delegated int8 kernels where exported so)."""

    runtime = "executorch"

    def __init__(self, path: Path) -> None:
        try:
            import torch

            with torch_logs_errors_only():
                from executorch.runtime import Runtime
        except ImportError as exc:
            raise OfficialRuntimeMissing(
                f"{path.name}: the official ExecuTorch runtime is not installed ({exc}): pip install executorch (brings torch);"
                f" without torch: {install_command('pte')} (Python 3.12+)"
            ) from None
        self._torch = torch
        self._name = path.name
        self._first = True
        try:
            with native_log(path.name):
                self._method = Runtime.get().load_program(path).load_method("forward")
        except Exception as exc:  # the runtime raises plain RuntimeError/ValueError with its own codes
            raise EdgeRuntimeError(f"ExecuTorch cannot load {path}: {exc}") from None

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inputs = [self._torch.from_numpy(np.ascontiguousarray(x, np.float32))]
        if self._first:
            with native_log(self._name):
                outputs = self._method.execute(inputs)
            self._first = False
        else:
            outputs = self._method.execute(inputs)
        latent, logits = _two_outputs(outputs, "the .pte program")
        return latent.detach().numpy().copy(), logits.detach().numpy().copy()


class OfficialRuntimeMissing(EdgeRuntimeError):
    """The official ExecuTorch runtime (``executorch``, with torch) is not installed."""


class NumpyRuntimeMissing(EdgeRuntimeError):
    """executorch-numpy-runtime is not installed (or not installable: it needs Python 3.12+)."""


def numpy_runtime_installable() -> bool:
    """Whether this Python can install executorch-numpy-runtime (3.12+)."""
    return sys.version_info >= NUMPY_RUNTIME_PYTHON


class NumpyExecuTorchModel:
    """``.pte`` program on executorch-numpy-runtime: the ExecuTorch C++ core and XNNPACK with numpy tensors, no torch.

    ``producer`` is the executorch version that wrote the program (the manifest's ``producer``); a program this
    runtime cannot load is an :class:`EdgeRuntimeError` naming both versions."""

    runtime = "executorch"

    def __init__(self, path: Path, producer: str | None = None) -> None:
        try:
            import executorch_numpy_runtime as en
        except ImportError as exc:
            if numpy_runtime_installable():
                raise NumpyRuntimeMissing(
                    f"{path.name}: executorch-numpy-runtime is not installed ({exc}): {install_command('pte')}"
                ) from None
            raise NumpyRuntimeMissing(
                f"{path.name}: executorch-numpy-runtime needs Python 3.12+, this is {platform.python_version()}: run the edge"
                f" runtime in a Python 3.12+ venv with {install_command('pte')} (runtime_edge/README.md), or use --pte-runtime official"
            ) from None
        self.version = f"executorch-numpy-runtime {en.__version__} (ExecuTorch {en.__et_version__})"
        self._name = path.name
        self._first = True
        try:
            with native_log(path.name):
                self._method = en.Runtime.get().load_program(str(path)).load_method("forward")
        except en.ExecuTorchError as exc:
            tested = ", ".join(NUMPY_RUNTIME_PROGRAMS)
            raise EdgeRuntimeError(
                f"{self.version} cannot load {path} (a program from executorch {producer or 'of unknown version'};"
                f" tested: executorch-numpy-runtime {NUMPY_RUNTIME_PIN} with programs from executorch {tested}):"
                f" {type(exc).__name__}: {exc}"
            ) from None

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inputs = [np.ascontiguousarray(x, np.float32)]
        if self._first:
            with native_log(self._name):
                outputs = self._method(inputs)
            self._first = False
        else:
            outputs = self._method(inputs)
        return _two_outputs(outputs, "the .pte program")


def load_pte(path: Path, pte_runtime: str = "auto", producer: str | None = None) -> EdgeModel:
    """``.pte`` on the runtime ``pte_runtime`` names; ``auto`` tries the torch-free one first and logs a fallback."""
    if pte_runtime not in PTE_RUNTIMES:
        raise EdgeRuntimeError(f"unknown .pte runtime {pte_runtime!r}; choose one of {list(PTE_RUNTIMES)}")
    if pte_runtime == "official":
        return ExecuTorchModel(path)
    if pte_runtime == "numpy":
        return NumpyExecuTorchModel(path, producer)
    try:
        return NumpyExecuTorchModel(path, producer)
    except EdgeRuntimeError as exc:
        reason = exc
    try:
        model = ExecuTorchModel(path)
    except OfficialRuntimeMissing:
        if not isinstance(reason, NumpyRuntimeMissing):
            raise EdgeRuntimeError(f"{reason}; and the official ExecuTorch runtime is not installed (pip install executorch)") from None
        if numpy_runtime_installable():
            raise EdgeRuntimeError(
                f"{path.name} needs a .pte runtime and none is installed: {install_command('pte')}"
                " (executorch-numpy-runtime: numpy only, no torch)"
            ) from None
        raise EdgeRuntimeError(
            f"{path.name} needs a .pte runtime and none is installed: {install_command('pte')} in a Python 3.12+ venv"
            f" (this is {platform.python_version()}), or here pip install executorch (brings torch)"
        ) from None
    if isinstance(reason, NumpyRuntimeMissing) and not numpy_runtime_installable():
        # The only .pte runtime this Python can have: an expected choice, logged below the default level.
        log.info("%s runs on the official ExecuTorch runtime (imports torch): %s", path.name, reason)
    else:
        log.warning("%s; running %s on the official ExecuTorch runtime instead (imports torch)", reason, path.name)
    return model


class OnnxModel:
    """``.onnx`` edge client on ONNX Runtime's CPU provider; its tensors must carry the manifest's names."""

    runtime = "onnxruntime"

    def __init__(self, path: Path) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EdgeRuntimeError(f"{path.name} needs ONNX Runtime, which is not installed ({exc}): {install_command('onnx')}") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EdgeRuntimeError(f"ONNX Runtime cannot load {path}: {exc}") from None
        inputs = [i.name for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        if inputs != [EDGE_INPUT] or not set(EDGE_OUTPUTS) <= set(outputs):
            raise EdgeRuntimeError(
                f"{path.name}: inputs {inputs} and outputs {outputs}; an edge client has input {EDGE_INPUT!r} and outputs {list(EDGE_OUTPUTS)}"
            )

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        latent, logits = self._session.run(list(EDGE_OUTPUTS), {EDGE_INPUT: np.ascontiguousarray(x, np.float32)})
        return latent, logits


def coreml_available() -> tuple[bool, str]:
    """Core ML prediction needs macOS; ``(ok, reason)``."""
    if platform.system() != "Darwin":
        return False, f"Core ML prediction needs macOS, this is {platform.system()}"
    return True, ""


class CoreMLModel:
    """``.mlpackage`` edge client; Core ML predicts on macOS only."""

    runtime = "coreml"

    def __init__(self, path: Path) -> None:
        ok, reason = coreml_available()
        if not ok:
            raise EdgeRuntimeError(
                f"{path.name} is a Core ML model: {reason}; export the bundle with --target executorch or --target onnx for this device"
            )
        try:
            import coremltools as ct
        except ImportError as exc:
            raise EdgeRuntimeError(f"{path.name} needs coremltools: pip install coremltools ({exc})") from None
        self._model = ct.models.MLModel(str(path))

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._model.predict({EDGE_INPUT: np.ascontiguousarray(x, np.float32)})
        try:
            return np.asarray(out[EDGE_OUTPUTS[0]]), np.asarray(out[EDGE_OUTPUTS[1]])
        except KeyError as exc:
            raise EdgeRuntimeError(f"Core ML model has no output {exc}; it has {sorted(out)}") from None


_LOADERS = {"onnxruntime": OnnxModel, "coreml": CoreMLModel}  # executorch: load_pte


def load_edge_model(path: Path, runtime: str, pte_runtime: str = "auto", producer: str | None = None) -> EdgeModel:
    """Load the program at ``path`` on ``runtime`` (one of the manifest's edge runtimes); ``pte_runtime`` and
    ``producer`` (the executorch version that wrote it) as in :func:`load_pte`."""
    if runtime not in EDGE_RUNTIMES:
        raise EdgeRuntimeError(f"unknown edge runtime {runtime!r}; this code runs {sorted(EDGE_RUNTIMES)}")
    suffix = EDGE_RUNTIMES[runtime]
    if not str(path).endswith(suffix):
        raise EdgeRuntimeError(f"{path.name} is not a {runtime} program (expected a {suffix} file)")
    if runtime == "executorch":
        return load_pte(Path(path), pte_runtime, producer)
    return _LOADERS[runtime](Path(path))
