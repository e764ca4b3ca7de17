"""The edge runtime on an emulated aarch64 device (benchmarks/device_check.py) on a few held-out images: every
torch-free edge format gives the x86 bitstreams byte for byte and the same answers from serve.py. Needs
qemu-user-static (``.ci/run`` installs it) and access to Debian's archive and PyPI; skipped, with the reason,
only when the sysroot cannot be built. The sysroot and wheels are kept in ``runs/device-ci`` and reused."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.aarch64 import FORMATS, SysrootUnavailable, build_sysroot, device_check

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "runs" / "device-ci"


@pytest.mark.slow
@pytest.mark.device
def test_aarch64_bitstreams_and_answers_equal_x86(executorch_bundle: Path, onnx_bundle: Path, images: list[Path]) -> None:  # noqa: F811
    try:
        build_sysroot(OUT)
    except SysrootUnavailable as exc:
        pytest.skip(f"no aarch64 sysroot on this machine: {exc}")
    results, _ = device_check([executorch_bundle, onnx_bundle], images, OUT)
    assert [r.runtime for r in results] == list(FORMATS)
    for r in results:
        assert r.images == len(images)
        assert r.identical == r.images, f"{r.runtime}: bitstreams differ for {r.differing}"
        assert r.answers_equal, f"{r.runtime}: answers differ: {r.answer_diff}"
        assert 0 < r.install_bytes
