"""Fuzzing the decoder with hypothesis: random bytes and mutated valid streams raise CodecError subclasses only,
and all backends agree. ``MANTIS_FUZZ_EXAMPLES`` raises the example count for a deeper run; the long
fuzzer is ``uv run python -m tests.tools.fuzz --seconds 600``."""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec import format as fmt
from tests.tools.fuzz import DEFAULT_VECTORS, mutate, outcome, reseal, rewrite_dims, seeds
from codec.rans import available_backends

TABLES, CORPUS = seeds(DEFAULT_VECTORS)
BACKENDS = available_backends()
FUZZ = settings(
    max_examples=int(os.environ.get("MANTIS_FUZZ_EXAMPLES", "300")),
    deadline=None,
    derandomize="MANTIS_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(st.binary(max_size=128))
def test_random_bytes(data: bytes) -> None:
    outcome(data, TABLES, BACKENDS)


@FUZZ
@given(st.binary(min_size=fmt.HEADER_SIZE - 6, max_size=96), st.integers(0, 255))
def test_random_bodies_behind_a_valid_header(body: bytes, mask: int) -> None:
    """Magic, version and table id are right and the CRC matches: the dims and payload decoder see garbage."""
    data = reseal(fmt.MAGIC + bytes([fmt.FORMAT_VERSION, mask]) + TABLES.table_id + body, TABLES)
    outcome(data, TABLES, BACKENDS)


@FUZZ
@given(st.integers(0, len(CORPUS) - 1), st.integers(0, 2**32 - 1))
def test_mutated_valid_streams(which: int, seed: int) -> None:
    data = mutate(CORPUS[which], random.Random(seed), TABLES)
    outcome(data, TABLES, BACKENDS)


def test_corpus_itself_decodes() -> None:
    assert all(outcome(data, TABLES, BACKENDS) == "ok" for data in CORPUS)


def test_dims_rewrites_reach_the_shape_checks() -> None:
    """The mutator's dims edits keep the payload length (in bytes, format 2) equal to the data, so a resealed
    edit is never stopped by the length checks: it reaches the shape checks and the payload decoder."""
    rng = random.Random(1234)
    seen: dict[str, int] = {}
    for _ in range(400):
        data = reseal(rewrite_dims(rng.choice(CORPUS), rng, TABLES), TABLES)
        result = outcome(data, TABLES, BACKENDS)
        seen[result] = seen.get(result, 0) + 1
    assert "TruncatedError" not in seen and "TrailingDataError" not in seen, seen
    assert seen.get("ShapeError", 0) > 0 and sum(v for k, v in seen.items() if k != "ShapeError") > 0, seen
