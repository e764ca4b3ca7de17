"""Per-layer int8 sensitivity of the edge client.

For every convolution and linear layer of the client, the client is quantized (PT2E, as for ExecuTorch
and Core ML) with everything in int8 except that one layer, and evaluated in PyTorch on held-out images
through the real codec and the eager server half. A layer whose float copy recovers much of the accuracy
(or symbol agreement) lost by the all-int8 client is sensitive: keep it in float with
``export/split.py --keep-float NAME``. The all-int8 and all-float clients are the reference rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


from calibration.int8_accuracy import compare, eager_bitstreams, serve_bitstreams
from export.calibration_set import data_config, load_split, select_samples
from export.exporter import load_source
from export.quantize import quantizable_layers, quantize_pt2e
from export.verify import eager_outputs
from training.tables import tables_from_bottleneck


def layer_sensitivity(
    checkpoint: Path,
    observer: str = "histogram",
    calibration_samples: int = 128,
    samples: int = 500,
    split: str = "val",
    layers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy and symbol agreement of the all-int8 client and of each one-layer-in-float variant."""
    model, meta, _ = load_source(checkpoint)
    task_names = [t["name"] for t in meta["tasks"]]
    cfg = data_config(meta, checkpoint, None)
    calib = select_samples(load_split(cfg, "train", task_names), "train", calibration_samples, 0, task_names)
    held = select_samples(load_split(cfg, split, task_names), split, samples, 1, task_names)
    images = [x.numpy() for x in held.batches()]
    labels = held.labels.numpy()
    tables = tables_from_bottleneck(model.entropy_bottleneck)
    server = eager_outputs(model.server.eval())
    edge = model.client.eval()
    example = calib.images[:1].clone()
    float_out = serve_bitstreams(eager_bitstreams(edge, images, tables), tables, server, len(task_names))

    def evaluate(keep: Sequence[str]) -> dict[str, Any]:
        q = quantize_pt2e(edge, example, calib.batches(), observer, keep)
        int8_out = serve_bitstreams(eager_bitstreams(q, images, tables), tables, server, len(task_names))
        r = compare(float_out, int8_out, labels, task_names, max_drop=1.0)
        return {
            "drop_points": r["drop_points"],
            "int8_task_accuracy": r["int8"]["task_accuracy"],
            "symbol_agreement": r["symbol_agreement"],
            "task_mask_agreement": r["task_mask_agreement"],
        }

    rows = {"<all int8>": evaluate(())}
    for name in layers if layers is not None else quantizable_layers(model.client):
        rows[name] = evaluate((name,))
    base = rows["<all int8>"]
    ranking = sorted(
        (n for n in rows if n != "<all int8>"),
        key=lambda n: (
            max(base["drop_points"].values()) - max(rows[n]["drop_points"].values()),
            rows[n]["symbol_agreement"] - base["symbol_agreement"],
        ),
        reverse=True,
    )
    return {
        "observer": observer,
        "split": split,
        "images": len(images),
        "float_task_accuracy": float_out.task_accuracy(labels, task_names),
        "rows": rows,
        "most_sensitive_first": ranking,
    }


def format_sensitivity(result: dict[str, Any]) -> str:
    tasks = list(result["float_task_accuracy"])
    head = f"{'kept in float':<34}" + "".join(f"{t[:10]:>11}" for t in tasks) + f"{'symbols':>9}"
    lines = [f"drop in points vs float ({result['images']} {result['split']} images, {result['observer']} observer)", head]
    for name in ["<all int8>", *result["most_sensitive_first"]]:
        r = result["rows"][name]
        lines.append(f"{name:<34}" + "".join(f"{r['drop_points'][t]:>11.2f}" for t in tasks) + f"{r['symbol_agreement']:>9.4f}")
    return "\n".join(lines)
