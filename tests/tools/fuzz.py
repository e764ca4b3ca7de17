"""Fuzzing the decoder: random bytes and mutations of valid bitstreams must raise ``CodecError`` subclasses
only, and every backend must reach the same outcome.

Long run (documented in ``codec/FORMAT.md``)::

    uv run python -m tests.tools.fuzz --seconds 600 [--seed N] [--crashes DIR]

Mutations optionally re-seal the header (fix the CRC) so that they reach the payload decoder instead of
stopping at the checksum. A failing input is written to ``--crashes`` and the run exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import traceback
from pathlib import Path

import numpy as np

from codec import format as fmt
from codec.bitstream import decode
from codec.errors import CodecError
from codec.rans import available_backends
from codec.tables import EntropyTables

DEFAULT_VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def reseal(data: bytes, tables: EntropyTables) -> bytes:
    """``data`` with its CRC field recomputed (when it has a full header), so corruption reaches the payload."""
    if len(data) < fmt.HEADER_SIZE:
        return data
    head = data[: fmt.HEADER_SIZE - 2]
    return head + fmt.checksum(tables.sha256_digest, head, data[fmt.HEADER_SIZE :]).to_bytes(2, "little") + data[fmt.HEADER_SIZE :]


def rewrite_size(data: bytes, rng: random.Random) -> bytes:
    """``data`` with a random latent size (H, W) in its header, small or up to 64 x 64 (larger ones only
    make the pure-Python decoder slower), so a resealed edit reaches the payload decoder with a wrong size."""
    b = bytearray(data)
    h, w = rng.choice([(rng.randint(1, 8), rng.randint(1, 8)), (rng.randint(1, 64), rng.randint(1, 64))])
    b[4:6] = bytes((h - 1, w - 1))
    return bytes(b)


def mutate(data: bytes, rng: random.Random, tables: EntropyTables) -> bytes:
    """One to four random edits (bit flips, byte sets, cuts, inserts, word swaps, size-field edits)."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.choice([0, 0xFF, 0x0F, 0xF0, rng.randrange(256)])
        elif op == 2 and b:
            i = rng.randrange(len(b) + 1)
            del b[i : i + rng.randint(1, 8)]
        elif op == 3:
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 4 and len(b) >= fmt.HEADER_SIZE + 8:
            i = rng.randrange(fmt.HEADER_SIZE, len(b) - 3)
            b[i : i + 4] = rng.choice([b"\xff\xff\xff\xff", b"\0\0\0\0", bytes(rng.randrange(256) for _ in range(4))])
        elif op == 5 and len(b) >= fmt.HEADER_SIZE:
            b = bytearray(rewrite_size(bytes(b), rng))
        elif op == 6 and len(b) > fmt.HEADER_SIZE:
            b = b[: fmt.HEADER_SIZE] + bytearray(rng.randrange(256) for _ in range(len(b) - fmt.HEADER_SIZE))
    out = bytes(b)
    return reseal(out, tables) if rng.random() < 0.7 else out


def outcome(data: bytes, tables: EntropyTables, backends: list[str]) -> str:
    """``"ok"`` or the ``CodecError`` class name, identical across ``backends``; anything else raises
    ``AssertionError`` (with the original exception chained)."""
    results = []
    for be in backends:
        try:
            dec = decode(data, tables, backend=be)
            results.append(("ok", dec.symbols.tobytes(), dec.task_mask, dec.shape))
        except CodecError as exc:
            results.append((type(exc).__name__, b"", 0, ()))
        except Exception as exc:  # noqa: BLE001 - any other exception is the bug being hunted
            raise AssertionError(f"backend {be}: {type(exc).__name__}: {exc}") from exc
    if any(r != results[0] for r in results):
        raise AssertionError(f"backends disagree: {[(be, r[0]) for be, r in zip(backends, results)]}")
    return results[0][0]


def seeds(vector_dir: Path) -> tuple[EntropyTables, list[bytes]]:
    """The shared vectors' tables and valid bitstreams (the mutation corpus)."""
    index = json.loads((vector_dir / "index.json").read_text(encoding="utf-8"))
    tables = EntropyTables.load(vector_dir / index["tables"]["file"])
    return tables, [(vector_dir / case["bitstream"]).read_bytes() for case in index["valid"]]


def run(seconds: float, seed: int, vector_dir: Path, crashes: Path) -> int:
    tables, corpus = seeds(vector_dir)
    backends = available_backends()
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        if rng.random() < 0.1:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
            if rng.random() < 0.5 and len(data) >= 3:
                data = reseal(bytes([(fmt.MAGIC << 4) | fmt.FORMAT_VERSION, data[2]]) + tables.table_id + data[4:], tables)
        else:
            data = mutate(rng.choice(corpus), rng, tables)
        try:
            result = outcome(data, tables, backends)
        except AssertionError:
            crashes.mkdir(parents=True, exist_ok=True)
            path = crashes / f"crash-{seed}-{n}.mtb"
            path.write_bytes(data)
            traceback.print_exc()
            print(f"failing input written to {path}")
            return 1
        counts[result] = counts.get(result, 0) + 1
        n += 1
    print(f"{n} inputs in {seconds:g} s, backends {', '.join(backends)}; outcomes:")
    for name, k in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {name:26s} {k}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.tools.fuzz", description="Fuzz the bitstream decoder.")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=int(np.random.SeedSequence().entropy % 2**31))
    p.add_argument("--vectors", type=Path, default=DEFAULT_VECTORS)
    p.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"seed {args.seed}")
    return run(args.seconds, args.seed, args.vectors, args.crashes)


if __name__ == "__main__":
    raise SystemExit(main())
