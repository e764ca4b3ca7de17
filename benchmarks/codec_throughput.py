"""Codec throughput vs CompressAI, and coding overhead vs the ideal code length.

``uv run python -m benchmarks.codec_throughput`` fits a 48-channel ``EntropyBottleneck`` on synthetic data, then on one
48x28x28 latent times, interleaved in the same run, ``codec.encode_latent`` / ``codec.decode_latent`` (the
default backend) against ``EntropyBottleneck.compress`` / ``decompress`` (same work: quantize + rANS,
rANS + dequantize), the symbol-level ``encode`` / ``decode``, and the pure-Python backend. Torch runs with
one thread, like the codec. Throughput is symbols/s from the median and the best of ``--rounds`` runs;
ratios are ours over CompressAI's. Overhead: payload bits vs the sum of -log2 p of every coded symbol under the integer
tables (plus the 4 bits of each escape nibble); the 16 header bytes are reported separately. Writes
``results/codec_throughput.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import numpy as np

from training.tables import tables_from_bottleneck
import codec
from tests.tools.fit import fit_entropy_bottleneck, synthetic_latent
from codec.rans import information_bits
from benchmarks.results import Headline, Table, add_results_arguments, write_results


def _timings(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, tuple[float, float]]:
    """(median, minimum) wall time of each function, measured interleaved so machine load hits all alike.
    The minimum is the least disturbed run, the median the typical one on a busy machine."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(rounds):
        for name, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def run(rounds: int, seed: int, python_rounds: int) -> dict[str, Any]:
    """Print and return the throughput of each coder (M symbols/s) and the coding overhead rows."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    eb = fit_entropy_bottleneck(48, steps=200, seed=seed, batch=4, size=8)
    tables = tables_from_bottleneck(eb)
    print(f"fitted a 48-channel EntropyBottleneck in {time.perf_counter() - t0:.1f} s; tables {tables}")
    lat = synthetic_latent((48, 28, 28), seed=seed + 1)
    x = torch.from_numpy(lat)[None]
    sym = codec.quantize(lat, tables)
    n = sym.size
    data = codec.encode_latent(lat, 1, tables)
    strings = eb.compress(x)
    assert codec.compressai_string(data) == strings[0], "payload differs from EntropyBottleneck.compress"
    backend = codec.get_backend().name

    with torch.no_grad():
        t = _timings(
            {
                "enc_latent": lambda: codec.encode_latent(lat, 1, tables),
                "eb_compress": lambda: eb.compress(x),
                "dec_latent": lambda: codec.decode_latent(data, tables),
                "eb_decompress": lambda: eb.decompress(strings, (28, 28)),
                "enc_symbols": lambda: codec.encode(sym, 1, tables),
                "dec_symbols": lambda: codec.decode(data, tables),
            },
            rounds,
        )
    tp = _timings(
        {
            "py_enc": lambda: codec.encode(sym, 1, tables, backend="python"),
            "py_dec": lambda: codec.decode(data, tables, backend="python"),
        },
        python_rounds,
    )

    def rate(times: tuple[float, float]) -> str:
        med, best = times
        return f"{n / med / 1e6:6.2f} M symbols/s ({med * 1e3:6.2f} ms)   best {n / best / 1e6:6.2f} M/s ({best * 1e3:5.2f} ms)"

    def ratio(ours: tuple[float, float], theirs: tuple[float, float]) -> str:
        return f"{theirs[0] / ours[0]:.2f} (median)  {theirs[1] / ours[1]:.2f} (best)"

    print(f"\nthroughput, 48x28x28 latent ({n} symbols), {rounds} interleaved runs, backend {backend}:")
    print(f"  encode_latent        {rate(t['enc_latent'])}")
    print(f"  EB.compress          {rate(t['eb_compress'])}")
    print(f"  decode_latent        {rate(t['dec_latent'])}")
    print(f"  EB.decompress        {rate(t['eb_decompress'])}")
    print(f"  encode (symbols)     {rate(t['enc_symbols'])}")
    print(f"  decode (symbols)     {rate(t['dec_symbols'])}")
    print(f"  encode, python only  {rate(tp['py_enc'])}")
    print(f"  decode, python only  {rate(tp['py_dec'])}")
    print("ratios (codec throughput / CompressAI throughput, >= 1 means at least as fast):")
    print(f"  encode_latent / EB.compress         {ratio(t['enc_latent'], t['eb_compress'])}")
    print(f"  decode_latent / EB.decompress       {ratio(t['dec_latent'], t['eb_decompress'])}")
    print(f"  python-only encode / EB.compress    {ratio(tp['py_enc'], t['eb_compress'])}")
    print(f"  python-only decode / EB.decompress  {ratio(tp['py_dec'], t['eb_decompress'])}")

    overhead = []
    print("\ncoding overhead (payload bits vs ideal code length under the tables; header reported apart):")
    print(f"  {'latent':>12} {'payload B':>10} {'ideal B':>10} {'overhead':>9} {'header B':>9}")
    for c, h, w, scale in [(48, 28, 28, 1.0), (48, 14, 14, 1.0), (48, 28, 28, 0.2), (48, 7, 7, 1.0)]:
        y = synthetic_latent((c, h, w), seed=seed + h) * np.float32(scale)
        s = codec.quantize(y, tables)
        payload = len(codec.encode(s, 1, tables)) - codec.HEADER_SIZE
        ideal = information_bits(s, tables)
        note = "" if payload >= 1024 else "  (< 1 KB: the fixed 4-byte state floor dominates)"
        print(
            f"  {f'{c}x{h}x{w}' + ('' if scale == 1 else f'*{scale}'):>12} {payload:10d} {ideal / 8:10.1f} "
            f"{100 * (8 * payload / ideal - 1):8.2f}% {codec.HEADER_SIZE:9d}{note}"
        )
        overhead.append(
            [
                f"{c}x{h}x{w}" + ("" if scale == 1 else f" x{scale}"),
                payload,
                round(ideal / 8, 1),
                round(100 * (8 * payload / ideal - 1), 2),
                codec.HEADER_SIZE,
            ]
        )
    timings = {**t, **tp}
    return {
        "backend": backend,
        "symbols": n,
        "rounds": rounds,
        "msymbols_per_s": {k: {"median": n / v[0] / 1e6, "best": n / v[1] / 1e6} for k, v in timings.items()},
        "ratios_median": {
            "encode_latent / EB.compress": t["eb_compress"][0] / t["enc_latent"][0],
            "decode_latent / EB.decompress": t["eb_decompress"][0] / t["dec_latent"][0],
            "python-only encode / EB.compress": t["eb_compress"][0] / tp["py_enc"][0],
            "python-only decode / EB.decompress": t["eb_decompress"][0] / tp["py_dec"][0],
        },
        "overhead": overhead,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.codec_throughput", description="Codec vs CompressAI benchmark.")
    p.add_argument("--rounds", type=int, default=50, help="timed runs per measurement (median reported)")
    p.add_argument("--python-rounds", type=int, default=5, help="timed runs of the pure-Python backend")
    p.add_argument("--seed", type=int, default=0)
    add_results_arguments(p, "codec_throughput")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    r = run(args.rounds, args.seed, args.python_rounds)
    ratios = r["ratios_median"]
    write_results(
        args.results_name,
        title="Codec throughput vs CompressAI, and coding overhead",
        module="benchmarks.codec_throughput",
        argv=argv,
        headline=[
            Headline(
                "codec encode_latent / CompressAI EntropyBottleneck.compress throughput",
                round(ratios["encode_latent / EB.compress"], 2),
                "x",
                ">= 1x",
            ),
            Headline(
                "codec decode_latent / CompressAI EntropyBottleneck.decompress throughput",
                round(ratios["decode_latent / EB.decompress"], 2),
                "x",
                ">= 1x",
            ),
        ],
        tables=[
            Table(
                f"throughput, 48x28x28 latent, {r['rounds']} interleaved runs, backend {r['backend']}, M symbols/s",
                ["coder", "median", "best"],
                [[k, round(v["median"], 2), round(v["best"], 2)] for k, v in r["msymbols_per_s"].items()],
            ),
            Table(
                "ratios of medians (codec / CompressAI; >= 1 is at least as fast)",
                ["ratio", "value"],
                [[k, round(v, 2)] for k, v in ratios.items()],
            ),
            Table(
                "coding overhead: payload vs ideal code length under the tables",
                ["latent", "payload B", "ideal B", "overhead %", "header B"],
                r["overhead"],
            ),
        ],
        data=r,
        results_dir=args.results_dir,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
