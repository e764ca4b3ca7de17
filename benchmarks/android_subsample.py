"""How far the Android app's subsampled photo decoding moves the edge client's input from runtime_edge's.

    uv run python -m benchmarks.android_subsample [--out-dir results]

The app decodes a photo with BitmapFactory's ``inSampleSize`` (``core.Subsample.forModel``: the largest power of
two that keeps each side at least twice the model's input size), then resizes it with Pillow's bilinear
arithmetic (``core.Preprocess``). ``runtime_edge.preprocess`` resizes the full image. This measures the
difference of the two inputs, in 8-bit levels, on the natural photos that ship with scikit-learn and on a
large synthetic photo: Java computes the sample size and the tensor, the decoder's subsampling is modelled
by averaging each ``s x s`` block (what JPEG's scaled IDCT approximates; a phone's decoder rounds its own way,
so this measures the resampling trade-off, not a device).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.results import Headline, Table, write_results
from codec.manifest import Preprocessing
from runtime_edge.preprocess import preprocess

REPO = Path(__file__).resolve().parents[1]
ANDROID = REPO / "android_demo"
RUNNER = "ai.mantis.core.CoreTests"


@dataclass
class Case:
    name: str
    width: int
    height: int
    input_size: tuple[int, int]
    sample: int
    max_levels: float
    mean_levels: float


def compile_core(out: Path) -> Path:
    """javac of android_demo's codec and core (with the CoreTests driver) into ``out``."""
    sources = sorted(str(p) for d in ("codec/src/main", "core/src") for p in (ANDROID / d).rglob("*.java"))
    subprocess.run(
        ["javac", "--release", "11", "-encoding", "UTF-8", "-d", str(out), *sources], check=True, capture_output=True, timeout=300
    )
    return out


def java(classes: Path, *args: str) -> str:
    proc = subprocess.run(["java", "-cp", str(classes), RUNNER, *args], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
    return proc.stdout


def box_subsample(pixels: np.ndarray, s: int) -> np.ndarray:
    """Each ``s x s`` block averaged (rounded), the trailing partial blocks dropped: a model of a decoder's subsampling."""
    h, w = pixels.shape[0] // s, pixels.shape[1] // s
    blocks = pixels[: h * s, : w * s].reshape(h, s, w, s, 3).astype(np.float64)
    return np.floor(blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)


def synthetic_photo(width: int, height: int, seed: int) -> np.ndarray:
    """Smooth shapes, edges and sensor-like noise: a stand-in for a camera photo of ``width x height``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width * 200, yy / height * 180, (xx + yy) / (width + height) * 120 + 60], axis=-1)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.03, 0.2) * width
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, size=3)
    img += rng.normal(0, 6, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def photos() -> dict[str, np.ndarray]:
    """scikit-learn's two sample photos (640x427 JPEG) and a 4000x3000 synthetic one."""
    from sklearn.datasets import load_sample_image

    return {
        "china.jpg": load_sample_image("china.jpg"),
        "flower.jpg": load_sample_image("flower.jpg"),
        "synthetic-12MP": synthetic_photo(4000, 3000, seed=3),
    }


def measure(classes: Path, images: dict[str, np.ndarray], input_size: tuple[int, int], work: Path) -> list[Case]:
    """Java (subsampled) vs Python (full image) preprocessing of each image at ``input_size``."""
    spec = Preprocessing(input_size=input_size, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    (work / "spec.json").write_text(json.dumps(spec.to_dict()))
    lines, cases = [], []
    for i, (name, pixels) in enumerate(images.items()):
        h, w = pixels.shape[:2]
        s = int(java(classes, "subsample", str(w), str(h), str(input_size[0]), str(input_size[1])).split()[0])
        small = box_subsample(pixels, s)
        (work / f"p{i}.rgb").write_bytes(np.ascontiguousarray(small).tobytes())
        lines.append(f"p{i} {small.shape[1]} {small.shape[0]}\n")
        cases.append(Case(name, w, h, input_size, s, 0.0, 0.0))
    (work / "cases.txt").write_text("".join(lines))
    java(classes, "preprocess", str(work / "spec.json"), str(work))
    scale = np.asarray(spec.std, dtype=np.float32).reshape(1, 3, 1, 1) * 255
    for i, (case, pixels) in enumerate(zip(cases, images.values())):
        want = preprocess(Image.fromarray(pixels, "RGB"), spec)
        got = np.fromfile(work / f"p{i}.java.f32", dtype="<f4").reshape(want.shape)
        levels = np.abs(got - want) * scale
        case.max_levels, case.mean_levels = float(levels.max()), float(levels.mean())
    return cases


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=None, help="where results/android_subsample.json goes (default: results/)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        classes = compile_core(Path(tmp) / "classes")
        images = photos()
        cases = []
        for size in ((224, 224), (64, 64)):
            work = Path(tmp) / f"w{size[0]}"
            work.mkdir()
            cases += measure(classes, images, size, work)
    rows = [
        [c.name, f"{c.width}x{c.height}", f"{c.input_size[0]}x{c.input_size[1]}", c.sample, round(c.max_levels, 3), round(c.mean_levels, 3)]
        for c in cases
    ]
    worst_mean = max(c.mean_levels for c in cases)
    write_results(
        "android_subsample",
        title="Android photo subsampling vs runtime_edge preprocessing",
        module="benchmarks.android_subsample",
        argv=argv,
        headline=[Headline("mean input difference, subsampled decode vs full image (worst image)", round(worst_mean, 3), "8-bit levels")],
        tables=[
            Table(
                "Java (subsampled, core.Subsample + core.Preprocess) vs runtime_edge.preprocess (full image)",
                ["image", "size", "model input", "inSampleSize", "max |diff| (levels)", "mean |diff| (levels)"],
                rows,
            )
        ],
        notes=[
            "The decoder's subsampling is modelled by s x s block means; a phone's JPEG decoder (scaled IDCT) rounds differently.",
            "Without subsampling (inSampleSize 1) the Java tensor equals runtime_edge.preprocess bit for bit (tests/android_demo/test_core.py).",
        ],
        data={"cases": [c.__dict__ for c in cases]},
        results_dir=args.out_dir,
    )
    for row in rows:
        print(*row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
