"""Fidelity of the EfficientNet-Lite0 split on held-out photos: top-1 agreement with the uncompressed teacher
and bytes per image, for MANTiS and for JPEG / WebP at several qualities on the same images.

    uv run python -m benchmarks.effnet_fidelity --run runs/effnet_lite0_224 [--artifacts artifacts/effnet_lite0]

``--run`` is the training output (``stage2.safetensors``, ``teacher.safetensors``). Every held-out image
(``training.data.photos``: each held-out photo in 14 listed views) is labelled by the teacher on the
uncompressed image; MANTiS's answer goes through the real codec (bitstream bytes counted), the baselines
are decoded before the teacher classifies them. With ``--artifacts`` the bundle's ``int8_check.json``
(``calibration/check.py``: the int8 edge client on its runtime) is reported beside the float model.
Also: the teacher's own top-1 on the photos whose ImageNet class is known (``KNOWN_CLASSES``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.results import Headline, Table, write_results

MODULE = "benchmarks.effnet_fidelity"
TASK = "imagenet"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from benchmarks.baselines import DEFAULT_QUALITIES

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, required=True, help="training output directory")
    p.add_argument("--artifacts", type=Path, default=None, help="exported bundle holding int8_check.json")
    p.add_argument("--qualities", type=int, nargs="+", default=list(DEFAULT_QUALITIES), help="JPEG/WebP qualities")
    p.add_argument("--name", default="effnet_fidelity", help="results file name")
    return p.parse_args(argv)


def known_class_top1(teacher: torch.nn.Module, cfg: dict[str, Any], preprocessing: dict[str, Any]) -> list[list[Any]]:
    """Rows ``[photo, side, view, predicted class, right?]`` for every photo with a known class, whole and
    central square, classified by the teacher."""
    from benchmarks.baselines import TeacherClassifier
    from training.data import imagenet_categories
    from training.data.photos import KNOWN_CLASSES, load_photo, view_box

    names = imagenet_categories()
    classifier = TeacherClassifier(teacher, preprocessing)
    held = set(cfg["data"]["photos"]["test"])
    rows = []
    for photo, classes in KNOWN_CLASSES.items():
        image = load_photo(photo)
        for view in ("full", "center"):
            pred = int(classifier.predict([image.crop(view_box(view, *image.size))])[0, 0])
            rows.append([photo, "held out" if photo in held else "training", view, names[pred], pred in classes])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.baselines import TeacherClassifier, codec_curve
    from benchmarks.baselines import equal_accuracy
    from training.build import load_model
    from training.checkpoint import CheckpointError
    from training.data import build_datasets
    from training.evaluate import evaluate

    args = parse_args(argv)
    try:
        model, meta = load_model(args.run / "stage2.safetensors", "stage2")
        teacher, _ = load_model(args.run / "teacher.safetensors", "teacher")
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = meta["config"]
    if cfg["data"]["kind"] != "photos":
        print(f"error: {args.run} was trained on data.kind {cfg['data']['kind']!r}; this measures the photos kind", file=sys.stderr)
        return 2
    cfg["data"]["cache"] = False
    _, _, test, tasks, preprocessing = build_datasets(cfg, splits=("test",))
    items = [f"{it.photo}/{it.view}" for it in test.source.items]
    labels = np.array([[test.source.label(i)] for i in range(len(test))])
    mantis = evaluate(model, DataLoader(test, batch_size=cfg["data"]["eval_batch_size"]), tasks, desc="mantis")
    agreement, mantis_bytes = mantis["task_accuracy"][TASK], mantis["bytes_per_image"]
    classifier = TeacherClassifier(teacher, preprocessing)
    images = [test.pil(i) for i in range(len(test))]
    curves = {fmt: codec_curve(fmt, args.qualities, images, labels, classifier, [TASK]) for fmt in ("jpeg", "webp")}
    # equal agreement is only a comparison where some quality of a codec agrees less often than MANTiS
    comparable = agreement > min(p["mean_task_accuracy"] for curve in curves.values() for p in curve)
    equal = {fmt: equal_accuracy(mantis_bytes, agreement, curve) for fmt, curve in curves.items()} if comparable else {}
    reached = {fmt: e for fmt, e in equal.items() if e["reached"]}
    best = min(reached, key=lambda f: reached[f]["bytes_per_image"]) if reached else None
    int8 = None
    if args.artifacts is not None:
        path = args.artifacts / "int8_check.json"
        if not path.is_file():
            print(f"error: {path} missing: run calibration/check.py --artifacts {args.artifacts} first", file=sys.stderr)
            return 2
        int8 = json.loads(path.read_text())
    known = known_class_top1(teacher, cfg, preprocessing)
    n = len(test)
    headline = [
        Headline(
            "top-1 agreement with the uncompressed teacher (float client, real codec)", round(agreement, 4), "", f"{n} held-out images"
        ),
        Headline("MANTiS bytes per image", round(mantis_bytes, 1), "B"),
    ]
    for fmt, e in equal.items():
        headline.append(
            Headline(
                f"{fmt.upper()} bytes at MANTiS's agreement" + ("" if e["reached"] else " (not reached: at its best quality)"),
                round(e["bytes_per_image"], 1),
                "B",
                f"q{e['quality']}, agreement {e['mean_task_accuracy']:.3f}",
            )
        )
    if not comparable:
        headline.append(
            Headline(
                "bytes at equal agreement",
                "no comparison",
                "",
                f"MANTiS's agreement {agreement:.3f} is at or below every JPEG/WebP quality measured",
            )
        )
    if best is not None:
        headline.append(
            Headline(
                f"bytes at equal agreement, better of JPEG/WebP ({best.upper()}) / MANTiS",
                round(equal[best]["ratio"], 2),
                "x",
                "> 1: MANTiS needs fewer bytes",
            )
        )
    tables = [
        Table(
            f"{fmt.upper()} on the same held-out images (Pillow, strongest settings)",
            ["quality", "bytes per image", "top-1 agreement"],
            [[p["quality"], round(p["bytes_per_image"], 1), round(p["mean_task_accuracy"], 4)] for p in curve],
        )
        for fmt, curve in curves.items()
    ]
    tables.append(
        Table("Teacher top-1 on the photos with a known ImageNet class", ["photo", "side", "view", "teacher's top-1", "right"], known)
    )
    notes = [
        f"Held-out photos: {', '.join(cfg['data']['photos']['test'])}; each in the views {', '.join(sorted({it.view for it in test.source.items}))} "
        f"({n} images at {preprocessing['input_size'][0]}x{preprocessing['input_size'][1]}).",
        "Labels are the teacher's own top-1 on the uncompressed image, so agreement 1.0 means the split network answers as the whole one; "
        "it says nothing about ImageNet accuracy. With so few photos (and views of one photo being alike), one photo more or less "
        "moves the agreement by several points: read it as a smoke test of the real network, not an accuracy estimate.",
    ]
    if int8 is not None:
        headline.append(
            Headline(
                "top-1 agreement, int8 edge client on ExecuTorch (calibration/check.py)",
                round(int8["int8"]["task_accuracy"][TASK], 4),
                "",
                f"float client there: {int8['float']['task_accuracy'][TASK]:.4f}, {int8['images']} images",
            )
        )
        headline.append(Headline("int8 edge client bytes per image", round(int8["int8"]["bytes_per_image"], 1), "B"))
        notes.append(
            f"calibration/check.py compares the float and the int8 edge client, both through the real codec and the bundle's "
            f"ONNX server half, on the {int8['split']} split: latent symbol agreement {int8['symbol_agreement']:.4f}."
        )
    data = {
        "items": items,
        "labels": labels[:, 0].tolist(),
        "mantis": mantis,
        "curves": curves,
        "equal_agreement": equal,
        "known_classes": known,
        "int8_check": int8,
        "run": str(args.run),
    }
    write_results(
        args.name,
        title="EfficientNet-Lite0 split at 224x224: fidelity and bytes",
        module=MODULE,
        argv=argv,
        headline=headline,
        tables=tables,
        notes=notes,
        data=data,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
