"""Writes the data of the Android instrumented test that runs a bundle's ``edge.pte`` on a phone or emulator.

    uv run python -m benchmarks.android_device_check --bundle artifacts/demo \\
        --out android_demo/app/src/androidTest/assets/device-check [--images 6]

It copies the bundle's device files (``manifest.json``, the tables, ``edge.pte``) to ``OUT/bundle/`` and, for a
few photos (scikit-learn's sample photos, cropped and scaled), writes the edge client's input as
``runtime_edge.preprocess`` computes it (``NAME.input.f32``), the Python edge client's outputs
(``NAME.latent.f32``, ``NAME.logits.f32``, little-endian float32) and the Python codec's bitstream
(``NAME.mtb``); ``OUT/cases.txt`` lists the names. ``EdgeProgramTest`` (app/src/androidTest) runs the same
inputs through ExecuTorch's Android runtime and compares (android_demo/README.md says how to run it).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

import codec
from runtime_edge.client import EdgeRuntime


def sample_images(count: int) -> list[tuple[str, Image.Image]]:
    """``count`` photos: crops and scalings of scikit-learn's two sample photos."""
    from sklearn.datasets import load_sample_image

    rng = np.random.default_rng(0)
    sources = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    out = []
    for i in range(count):
        src = sources[i % 2]
        h, w = src.shape[:2]
        ch, cw = int(rng.integers(h // 3, h + 1)), int(rng.integers(w // 3, w + 1))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        out.append((f"photo{i}", Image.fromarray(src[y : y + ch, x : x + cw], "RGB")))
    return out


def write_device_check(bundle: Path, out: Path, count: int) -> list[str]:
    """Writes the bundle's device files and ``count`` cases to ``out``; returns the case names."""
    rt = EdgeRuntime(bundle)
    manifest = rt.bundle.manifest
    if manifest.edge.runtime != "executorch":
        raise SystemExit(f"{bundle}: the edge client runs on {manifest.edge.runtime}; the Android app runs executorch bundles")
    if out.exists():
        shutil.rmtree(out)
    (out / "bundle").mkdir(parents=True)
    for name in ("manifest.json", manifest.tables["file"], manifest.edge.file):
        shutil.copy2(bundle / name, out / "bundle" / name)
    names = []
    for name, img in sample_images(count):
        x = rt.preprocess(img)
        latent, logits = rt.run_model(x)
        mask = rt.bundle.task_mask(logits)
        x.astype("<f4").tofile(out / f"{name}.input.f32")
        latent.astype("<f4").tofile(out / f"{name}.latent.f32")
        logits.astype("<f4").tofile(out / f"{name}.logits.f32")
        (out / f"{name}.mtb").write_bytes(codec.encode(codec.quantize(latent, rt.bundle.tables), mask, rt.bundle.tables))
        names.append(name)
    (out / "cases.txt").write_text("".join(f"{n}\n" for n in names))
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True, help="an export/split.py --target executorch bundle")
    ap.add_argument("--out", type=Path, required=True, help="android_demo/app/src/androidTest/assets/device-check")
    ap.add_argument("--images", type=int, default=6)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = write_device_check(args.bundle, args.out, args.images)
    print(f"{len(names)} cases written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
