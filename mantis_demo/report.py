"""Derived numbers and the written report: bytes at equal accuracy, the bandwidth table, report.json/.md, plots."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks.baselines import equal_accuracy
from benchmarks.results import Headline, Table, write_results
from codec.files import atomic_write, atomic_write_json, atomic_write_text

BANDWIDTHS_MBIT = (1.0, 10.0, 100.0)
TARGET_RATIO = 5.0

BANDWIDTH_FORMULA = (
    "T(R) = t_edge + 8 * B / R + t_server, with R the uplink rate in bit/s and B the payload bytes per image "
    "(the bitstream, or the JPEG file). MANTiS: t_edge = preprocessing + int8 edge client + quantization and "
    "rANS coding (medians), t_server = entropy decoding + the server half as serve.py measures them (means "
    "from its /metrics; the HTTP protocol and the batching window are left out, as for JPEG). JPEG: t_edge = "
    "resizing to the model input + Pillow JPEG encoding, t_server = JPEG decoding + the full teacher (batch 1, "
    "PyTorch float; medians). Teacher on the edge: T = preprocessing + the full teacher (batch 1, PyTorch "
    "float; median), nothing sent. Everything is measured in this run on this machine (edge and server are "
    "the same CPU here); the answer's way back and the network's round-trip latency are left out for all three."
)


def summarize_ms(values: Sequence[float]) -> dict[str, float]:
    """Mean, p50, p95 and max of a list of milliseconds (an empty list raises)."""
    if len(values) == 0:
        raise ValueError("no timings to summarise")
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
        "n": int(a.size),
    }


def equal_accuracy_summary(mantis_bytes: float, mantis_accuracy: float, curves: dict[str, Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """:func:`equal_accuracy` against each named curve, plus ``target_ratio`` and ``meets_target``: every
    ratio at least :data:`TARGET_RATIO`. Where no quality reaches MANTiS's accuracy, the ratio at the most
    accurate one is a lower bound, and it counts as such."""
    eq: dict[str, Any] = {key: equal_accuracy(mantis_bytes, mantis_accuracy, curve) for key, curve in curves.items()}
    eq["target_ratio"] = TARGET_RATIO
    eq["meets_target"] = all(eq[key]["ratio"] >= TARGET_RATIO for key in curves)
    return eq


def transfer_ms(num_bytes: float, mbit_s: float) -> float:
    return 8.0 * num_bytes / (mbit_s * 1e6) * 1e3


def bandwidth_table(
    mantis_edge_ms: float,
    mantis_server_ms: float,
    mantis_bytes: float,
    jpeg_edge_ms: float,
    jpeg_server_ms: float,
    jpeg_bytes: float,
    teacher_edge_ms: float,
    rates_mbit: Sequence[float] = BANDWIDTHS_MBIT,
) -> list[dict[str, float]]:
    """End-to-end time per image at each uplink rate, by :data:`BANDWIDTH_FORMULA`."""
    rows = []
    for r in rates_mbit:
        rows.append(
            {
                "mbit_s": float(r),
                "mantis_ms": mantis_edge_ms + transfer_ms(mantis_bytes, r) + mantis_server_ms,
                "jpeg_ms": jpeg_edge_ms + transfer_ms(jpeg_bytes, r) + jpeg_server_ms,
                "teacher_on_edge_ms": teacher_edge_ms,
            }
        )
    return rows


SWEEP_CURVES = {"film": ("MANTiS float (sweep)", "r*-"), "no_film": ("No-FiLM float (sweep)", "m^--")}


def sweep_section(sweep: dict[str, Any], baselines: dict[str, Sequence[dict[str, Any]]], sweep_dir: str) -> dict[str, Any]:
    """The MANTiS (``film``) and No-FiLM curves of a sweep's ``curves.json`` and their BD-rates (percent,
    ``training.curves``) against each baseline, the best baseline (the one MANTiS saves least against),
    and No-FiLM against MANTiS. A comparison that cannot be made holds ``error`` instead."""
    from training.curves import Curve, CurveError, bd_rate

    curves = {k: sweep["curves"][k]["points"] for k in SWEEP_CURVES if k in sweep.get("curves", {})}
    if "film" not in curves:
        raise ValueError(f"sweep {sweep_dir}: no 'film' curve in its curves.json (run training/sweep.py with --variants film)")

    def bd(ref: Curve, test: Curve) -> dict[str, Any]:
        try:
            return bd_rate(ref, test)
        except CurveError as exc:
            return {"error": str(exc)}

    film = Curve.from_points("MANTiS", curves["film"])
    out: dict[str, Any] = {"dir": sweep_dir, "curves": curves, "method": sweep["method"], "vs_baselines": {}}
    for fmt, pts in baselines.items():
        out["vs_baselines"][fmt] = bd(Curve.from_points(fmt.upper(), pts), film)
    valid = {k: v for k, v in out["vs_baselines"].items() if "bd_rate_percent" in v}
    if valid:
        best = max(valid, key=lambda k: valid[k]["bd_rate_percent"])
        out["vs_best_baseline"] = {"format": best, **valid[best]}
    if "no_film" in curves:
        out["no_film_vs_film"] = bd(film, Curve.from_points("No-FiLM", curves["no_film"]))
    return out


def int8_curve_section(curve: dict[str, Any], baselines: dict[str, Sequence[dict[str, Any]]], curve_dir: str) -> dict[str, Any]:
    """MANTiS's int8 curve (``calibration/int8_curve.py``'s report) and its BD-rate against each baseline and
    the best one (the format it saves least against); a comparison that cannot be made holds ``error``."""
    from training.curves import Curve, CurveError
    from training.sweep import compare_to_baselines

    keys = ("beta", "bytes_per_image", "mean_task_accuracy", "task_accuracy", "float", "symbol_agreement", "images")
    points = [{k: p[k] for k in keys} for p in curve["points"]]
    try:
        vs = compare_to_baselines(Curve.from_points("MANTiS int8", points), baselines)
    except CurveError as exc:
        vs = {fmt: {"error": str(exc)} for fmt in baselines}
    out: dict[str, Any] = {
        "dir": curve_dir,
        "target": curve["target"],
        "method": curve["method"],
        "points": points,
        "vs_baselines": {fmt: vs[fmt] for fmt in baselines},
    }
    if "best" in vs:
        out["vs_best_baseline"] = vs["best"]
    return out


def plot_rate_accuracy(report: dict[str, Any], path: str | os.PathLike) -> None:
    """Bytes per image (log) vs mean and per-task accuracy: JPEG and WebP curves, and MANTiS as a point
    (int8 end to end, float) or, with a sweep, as its MANTiS and No-FiLM curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import PercentFormatter

    tasks = list(report["edge_int8"]["task_accuracy"])
    panels = ["mean"] + tasks
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)

    def acc(entry: dict[str, Any], panel: str) -> float:
        return entry["mean_task_accuracy"] if panel == "mean" else entry["task_accuracy"][panel]

    for ax, panel in zip(axes[0], panels):
        for key, style in (("jpeg", "o-"), ("webp", "s-")):
            pts = sorted(report[key], key=lambda p: p["bytes_per_image"])
            ax.plot([p["bytes_per_image"] for p in pts], [acc(p, panel) for p in pts], style, ms=4, label=f"{key.upper()} + teacher")
        e = report["edge_int8"]
        if "sweep" in report:
            for key, pts in report["sweep"]["curves"].items():
                label, style = SWEEP_CURVES[key]
                ax.plot([p["bytes_per_image"] for p in pts], [acc(p, panel) for p in pts], style, ms=7, label=label)
        if "int8_curve" in report:
            pts = report["int8_curve"]["points"]
            ax.plot([p["bytes_per_image"] for p in pts], [acc(p, panel) for p in pts], "r*-", ms=10, label="MANTiS int8 (device path)")
        if "sweep" not in report and "int8_curve" not in report:
            ax.plot([e["bytes_per_image"]], [acc(e, panel)], "r*", ms=14, label="MANTiS int8 (end to end)")
        if "bytes_per_image" in report["float"] and "sweep" not in report and "int8_curve" not in report:
            f = report["float"]
            ax.plot([f["bytes_per_image"]], [acc(f, panel)], "kx", ms=10, label="MANTiS float")
        if "teacher" in report:
            ax.axhline(acc(report["teacher"], panel), color="gray", ls="--", lw=1, label="teacher, lossless input")
        ax.set_xscale("log")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel("bytes per image")
        ax.set_ylabel("accuracy")
        ax.set_title("mean task accuracy" if panel == "mean" else f"task: {panel}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110), suffix=Path(path).suffix)
    plt.close(fig)


def plot_bandwidth(report: dict[str, Any], path: str | os.PathLike) -> None:
    """End-to-end time per image vs uplink rate for the three ways to get an answer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["bandwidth"]["rows"]
    rates = [r["mbit_s"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(rates, [r["mantis_ms"] for r in rows], "r*-", label="MANTiS int8")
    ax.plot(rates, [r["jpeg_ms"] for r in rows], "o-", label=f"JPEG q{report['bandwidth']['jpeg_quality']} + teacher on server")
    ax.plot(rates, [r["teacher_on_edge_ms"] for r in rows], "s--", label="teacher on the edge")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("uplink (Mbit/s)")
    ax.set_ylabel("time per image (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110), suffix=Path(path).suffix)
    plt.close(fig)


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f} %"


def _fmt_bytes(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def render_markdown(report: dict[str, Any]) -> str:
    """The human-readable report: setup, accuracy and bytes, equal-accuracy comparison, latency, bandwidth."""
    tasks = list(report["edge_int8"]["task_accuracy"])
    ds = report["dataset"]
    e, f = report["edge_int8"], report["float"]
    lines = [
        "# MANTiS demo report",
        "",
        f"Model `{report['model_name']}`, edge client `{report['edge']['file']}` ({report['edge']['runtime']}), "
        f"server backend `{report['server']['backend']}`. Held-out set: {ds['images']} images "
        f"({ds['height']}x{ds['width']} PNG), tasks {', '.join(f'`{t}`' for t in tasks)}. "
        f"Wall time {report['wall_s']:.0f} s.",
        "",
        "Accuracy of a task counts the images whose ground truth involves that task; an answer counts only "
        "when the task was active for the image (the detector's mask) and its top-1 label is right.",
        "",
        "## Accuracy and bytes",
        "",
        "| system | bytes per image | " + " | ".join(tasks) + " | mean |",
        "| --- | ---: | " + " | ".join("---:" for _ in tasks) + " | ---: |",
    ]

    def row(name: str, nbytes: str, entry: dict[str, Any]) -> str:
        cells = " | ".join(_pct(entry["task_accuracy"][t]) for t in tasks)
        return f"| {name} | {nbytes} | {cells} | {_pct(entry['mean_task_accuracy'])} |"

    lines.append(row("MANTiS float (PyTorch, in process)", _fmt_bytes(f["bytes_per_image"]) if "bytes_per_image" in f else "-", f))
    lines.append(row("**MANTiS int8, end to end** (.pte -> HTTP -> serve.py)", f"**{_fmt_bytes(e['bytes_per_image'])}**", e))
    if "teacher" in report:
        lines.append(row("teacher, lossless input", _fmt_bytes(report["teacher"]["bytes_per_image"]), report["teacher"]))
    for key in ("jpeg", "webp"):
        for p in sorted(report[key], key=lambda q: q["quality"]):
            lines.append(row(f"{key.upper()} q{p['quality']} + teacher", _fmt_bytes(p["bytes_per_image"]), p))
    eq = report["equal_accuracy"]
    lines += [
        "",
        "![rate vs accuracy](rate_accuracy.png)",
        "",
        "## Bytes at equal accuracy",
        "",
        f"MANTiS int8 end to end: {_fmt_bytes(e['bytes_per_image'])} bytes per image at "
        f"{_pct(e['mean_task_accuracy'])} mean task accuracy. The baseline is the smallest quality whose mean task "
        f"accuracy (teacher on the decoded image) reaches that. Target: at least {TARGET_RATIO:g}x fewer bytes.",
        "",
        "| baseline | quality | bytes per image | mean accuracy | reaches MANTiS | bytes ratio |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for key in ("jpeg", "webp"):
        b = eq[key]
        ratio = f"{b['ratio']:.1f}x" if b["reached"] else f"> {b['ratio']:.1f}x"
        lines.append(
            f"| {key.upper()} | {b['quality']} | {_fmt_bytes(b['bytes_per_image'])} | {_pct(b['mean_task_accuracy'])} | "
            f"{'yes' if b['reached'] else 'no (most accurate quality shown)'} | {ratio} |"
        )
    bound = any(not eq[k]["reached"] for k in ("jpeg", "webp"))
    lines += [
        "",
        f"Target met: **{'yes' if eq['meets_target'] else 'no'}**"
        + (
            ' ("> Nx": no measured quality of that codec is as accurate as MANTiS; the ratio at its most accurate'
            " quality is a lower bound)."
            if bound
            else "."
        ),
        "",
    ]
    if "int8_curve" in report:
        lines += _int8_curve_markdown(report["int8_curve"])
    if "sweep" in report:
        lines += _sweep_markdown(report["sweep"])
    lines += [
        "## Latency (ms per image)",
        "",
    ]
    lat = report["latency_ms"]
    lines += ["| stage | mean | p50 | p95 | max |", "| --- | ---: | ---: | ---: | ---: |"]
    names = {
        "edge_encode": "edge encode (preprocessing + int8 edge client)",
        "entropy_coding": "entropy coding (quantize + rANS)",
        "server": "server (HTTP round trip on loopback)",
        "end_to_end": "end to end (image file to answer)",
    }
    for key, label in names.items():
        s = lat[key]
        lines.append(f"| {label} | {s['mean']:.2f} | {s['p50']:.2f} | {s['p95']:.2f} | {s['max']:.2f} |")
    inside = report["edge_int8"].get("server_side_ms")
    if inside:
        lines += [
            "",
            f"Inside serve.py (means per image, from its /metrics): entropy decoding {inside['decode']:.2f} ms, "
            f"batching queue {inside['queue']:.2f} ms, server half {inside['server_half']:.2f} ms, whole request "
            f"{inside['request']:.2f} ms. One client sends one image at a time here, so every batch waits out the "
            "batching window (`--max-queue-delay-ms`); the rest of the round trip is HTTP on both ends.",
        ]
    bw = report["bandwidth"]
    lines += [
        "",
        "## Bandwidth",
        "",
        f"JPEG at quality {bw['jpeg_quality']} ({_fmt_bytes(bw['jpeg_bytes'])} bytes, "
        + ("the equal-accuracy point) " if eq["jpeg"]["reached"] else "the most accurate JPEG, still less accurate than MANTiS) ")
        + f"against MANTiS ({_fmt_bytes(bw['mantis_bytes'])} bytes) and the whole teacher on the edge.",
        "",
        BANDWIDTH_FORMULA,
        "",
        f"Measured: MANTiS t_edge = {bw['mantis_edge_ms']:.2f} ms, t_server = {bw['mantis_server_ms']:.2f} ms; "
        f"JPEG t_edge = {bw['jpeg_edge_ms']:.2f} ms, t_server = {bw['jpeg_server_ms']:.2f} ms; "
        f"teacher on the edge {bw['teacher_edge_ms']:.2f} ms.",
        "",
        "| uplink | MANTiS int8 | JPEG + teacher on server | teacher on the edge |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for r in bw["rows"]:
        lines.append(f"| {r['mbit_s']:g} Mbit/s | {r['mantis_ms']:.2f} ms | {r['jpeg_ms']:.2f} ms | {r['teacher_on_edge_ms']:.2f} ms |")
    lines += ["", "![bandwidth](bandwidth.png)", ""]
    if "wire" in report:
        lines += wire_markdown(report["wire"])
    if report.get("stages_s"):
        lines += ["## Where the time went", "", "| stage | seconds |", "| --- | ---: |"]
        lines += [f"| {k} | {v:.1f} |" for k, v in report["stages_s"].items()]
        lines.append("")
    return "\n".join(lines)


def wire_markdown(wire: dict[str, Any]) -> list[str]:
    """The "Bytes on the wire" section: per payload and transport, bytes per image counted on the socket,
    and the equal-accuracy comparison on wire bytes next to the one on payload bytes."""
    q = wire["qualities"]
    lines = [
        "## Bytes on the wire",
        "",
        f"{wire['images']} held-out images sent one configuration after another through a TCP proxy on loopback that counts "
        "every byte crossing the socket each way (protocol headers, framing, handshakes and connection set-up included), "
        f"divided by the images. JPEG q{q['jpeg']} and WebP q{q['webp']} are the equal-accuracy qualities above, sent as the "
        "same BYTES tensor; serve.py refuses them (they are no bitstreams), so only their uplink is comparable.",
        "",
        "| payload | transport | payload bytes | uplink per image | uplink / payload | downlink per image |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in wire["rows"]:
        down = f"{r['down_per_image']:.1f}" if r["refused"] == 0 else f"({r['down_per_image']:.1f}, refusals)"
        lines.append(
            f"| {r['payload']} | {r['transport']} | {_fmt_bytes(r['payload_bytes'])} | {r['up_per_image']:.1f} | "
            f"{r['up_ratio']:.2f}x | {down} |"
        )
    lines += ["", "| check | measured | target | met |", "| --- | ---: | --- | --- |"]
    for c in wire["checks"]:
        lines.append(f"| {c['what']} | {c['value']:.2f} | {c['limit']} | {'yes' if c['met'] else '**no**'} |")
    lines.append("")
    return lines


def _bd_cell(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"n/a ({r['error']})"
    lo, hi = r["overlap"]
    return f"{r['bd_rate_percent']:+.1f} % (accuracy {_pct(lo)} to {_pct(hi)})"


def _sweep_markdown(sw: dict[str, Any]) -> list[str]:
    lines = [
        "## Rate-accuracy curves (sweep)",
        "",
        f"From `{sw['dir']}` (`training/sweep.py`): float models, real bitstreams, on the same held-out images.",
        "",
        "| curve | beta' | bytes per image | mean accuracy |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, pts in sw["curves"].items():
        lines += [
            f"| {SWEEP_CURVES[key][0]} | {p['beta']:g} | {_fmt_bytes(p['bytes_per_image'])} | {_pct(p['mean_task_accuracy'])} |"
            for p in pts
        ]
    lines += ["", "| comparison | BD-rate |", "| --- | --- |"]
    for fmt, r in sw["vs_baselines"].items():
        lines.append(f"| MANTiS vs {fmt.upper()} + teacher | {_bd_cell(r)} |")
    if "vs_best_baseline" in sw:
        lines.append(
            f"| **MANTiS vs the best baseline ({sw['vs_best_baseline']['format'].upper()})** | **{_bd_cell(sw['vs_best_baseline'])}** |"
        )
    if "no_film_vs_film" in sw:
        lines.append(f"| No-FiLM vs MANTiS | {_bd_cell(sw['no_film_vs_film'])} |")
    lines += ["", f"BD-rate: {sw['method']}; negative = fewer bytes at equal accuracy.", ""]
    return lines


def _int8_curve_markdown(c: dict[str, Any]) -> list[str]:
    lines = [
        "## MANTiS int8 rate-accuracy curve",
        "",
        f"Stage 2 trained at each beta' (`{c['dir']}`), exported as int8 bundles ({c['target']}) and run on the device "
        "path over the held-out images (`calibration/int8_curve.py`).",
        "",
        "| beta' | int8 bytes per image | int8 mean accuracy | float bytes per image | float mean accuracy |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {p['beta']:g} | {_fmt_bytes(p['bytes_per_image'])} | {_pct(p['mean_task_accuracy'])} | "
        f"{_fmt_bytes(p['float']['bytes_per_image'])} | {_pct(p['float']['mean_task_accuracy'])} |"
        for p in c["points"]
    ]
    lines += ["", "| comparison | BD-rate |", "| --- | --- |"]
    for fmt, r in c["vs_baselines"].items():
        lines.append(f"| MANTiS int8 vs {fmt.upper()} + teacher | {_bd_cell(r)} |")
    if "vs_best_baseline" in c:
        lines.append(
            f"| **MANTiS int8 vs the best baseline ({c['vs_best_baseline']['format'].upper()})** | **{_bd_cell(c['vs_best_baseline'])}** |"
        )
    lines += ["", f"BD-rate: {c['method']}; negative = fewer bytes at equal accuracy.", ""]
    return lines


def finalize(report: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Add the equal-accuracy comparison and the bandwidth table, then write report.json, report.md, plots.

    ``report`` must already hold the measured sections (see ``pipeline.demo``); returns it completed.
    """
    out = Path(out_dir)
    e = report["edge_int8"]
    eq = equal_accuracy_summary(e["bytes_per_image"], e["mean_task_accuracy"], {k: report[k] for k in ("jpeg", "webp")})
    report["equal_accuracy"] = eq

    m = report["measured_compute_ms"]
    jq = eq["jpeg"]["quality"]
    jpeg_point = next(p for p in report["jpeg"] if p["quality"] == jq)
    bw = {
        "formula": BANDWIDTH_FORMULA,
        "jpeg_quality": jq,
        "jpeg_bytes": jpeg_point["bytes_per_image"],
        "mantis_bytes": e["bytes_per_image"],
        "mantis_edge_ms": m["mantis_edge"],
        "mantis_server_ms": m["mantis_server"],
        "jpeg_edge_ms": jpeg_point["encode_ms"],
        "jpeg_server_ms": jpeg_point["decode_ms"] + m["teacher"],
        "teacher_edge_ms": m["teacher_preprocess"] + m["teacher"],
    }
    bw["rows"] = bandwidth_table(
        bw["mantis_edge_ms"],
        bw["mantis_server_ms"],
        bw["mantis_bytes"],
        bw["jpeg_edge_ms"],
        bw["jpeg_server_ms"],
        bw["jpeg_bytes"],
        bw["teacher_edge_ms"],
    )
    report["bandwidth"] = bw
    for value in _walk_numbers(report):
        if not math.isfinite(value):
            raise ValueError("report holds a non-finite number; refusing to write it")
    out.mkdir(parents=True, exist_ok=True)
    plot_rate_accuracy(report, out / "rate_accuracy.png")
    plot_bandwidth(report, out / "bandwidth.png")
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    return report


def _walk_numbers(obj: Any) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in _walk_numbers(x)]
    if isinstance(obj, (list, tuple)):
        return [v for x in obj for v in _walk_numbers(x)]
    return []


def write_demo_results(report: dict[str, Any], argv: list[str] | None, results_dir: Path) -> Path:
    """The demo's published summary, ``RESULTS_DIR/demo.json``: accuracy and bytes of MANTiS int8 end to end,
    bytes at equal accuracy against JPEG and WebP, latency, and the run's wall time."""
    e, eq, lat = report["edge_int8"], report["equal_accuracy"], report["latency_ms"]
    headline = [
        Headline("demo: MANTiS int8 end to end, mean task accuracy", round(100 * e["mean_task_accuracy"], 2), "%"),
        Headline("demo: MANTiS int8 bitstream bytes per image", round(e["bytes_per_image"], 1), "B"),
    ] + [
        Headline(
            f"demo: {key.upper()} bytes / MANTiS bytes at equal accuracy" + ("" if eq[key]["reached"] else " (lower bound)"),
            round(eq[key]["ratio"], 1),
            "x",
            f">= {eq['target_ratio']:g}x",
        )
        for key in ("jpeg", "webp")
    ]
    best = report.get("int8_curve", {}).get("vs_best_baseline")
    if best:
        headline.append(
            Headline(
                f"demo: MANTiS int8 curve vs the better of JPEG/WebP ({best['format'].upper()}), BD-rate",
                round(best["bd_rate_percent"], 1),
                "%",
                "<= -90 %",
            )
        )
    tasks = report["dataset"]["tasks"]
    accuracy_rows = [
        ["MANTiS float", *[round(100 * report["float"]["task_accuracy"][t], 2) for t in tasks], "", ""],
        ["MANTiS int8 end to end", *[round(100 * e["task_accuracy"][t], 2) for t in tasks], round(e["bytes_per_image"], 1), ""],
    ]
    accuracy_rows += [
        [
            f"{key.upper()} q{eq[key]['quality']} + teacher",
            *["" for _ in tasks],
            round(eq[key]["bytes_per_image"], 1),
            round(100 * eq[key]["mean_task_accuracy"], 2),
        ]
        for key in ("jpeg", "webp")
    ]
    return write_results(
        "demo",
        title="The main job (./mantis demo): MANTiS int8 end to end on the built-in data vs JPEG and WebP",
        module="./mantis demo",
        argv=argv,
        headline=headline,
        tables=[
            Table(
                f"{report['dataset']['images']} held-out images, {report['dataset']['height']}x{report['dataset']['width']}; accuracy %",
                ["model", *tasks, "bytes per image", "mean accuracy %"],
                accuracy_rows,
            ),
            Table(
                "latency per image, ms (edge and server on this CPU)",
                ["stage", "p50", "p95"],
                [[k, round(v["p50"], 2), round(v["p95"], 2)] for k, v in lat.items()],
            ),
            Table(
                "stages, seconds",
                ["stage", "seconds"],
                [[k, round(v, 1)] for k, v in report["stages_s"].items()] + [["whole run", report["wall_s"]]],
            ),
        ],
        data={
            k: report[k]
            for k in ("model_name", "config", "dataset", "edge_int8", "equal_accuracy", "latency_ms", "stages_s", "wall_s", "int8_curve")
            if k in report
        },
        results_dir=results_dir,
    )
