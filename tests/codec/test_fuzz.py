"""Fuzzing the decoder with hypothesis: random bytes and mutated valid streams raise CodecError subclasses only,
and all backends agree. ``MANTIS_FUZZ_EXAMPLES`` raises the example count for a deeper run; the long
fuzzer is ``uv run python -m tests.tools.fuzz --seconds 600``."""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec import format as fmt
from tests.tools.fuzz import DEFAULT_VECTORS, mutate, outcome, reseal, rewrite_size, seeds
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
@given(st.binary(min_size=fmt.HEADER_SIZE - 4, max_size=96), st.integers(0, 255))
def test_random_bodies_behind_a_valid_header(body: bytes, mask: int) -> None:
    """Magic, version and table id are right and the CRC matches: the size fields and payload decoder see garbage."""
    data = reseal(bytes([(fmt.MAGIC << 4) | fmt.FORMAT_VERSION, mask]) + TABLES.table_id + body, TABLES)
    outcome(data, TABLES, BACKENDS)


@FUZZ
@given(st.integers(0, len(CORPUS) - 1), st.integers(0, 2**32 - 1))
def test_mutated_valid_streams(which: int, seed: int) -> None:
    data = mutate(CORPUS[which], random.Random(seed), TABLES)
    outcome(data, TABLES, BACKENDS)


def test_corpus_itself_decodes() -> None:
    assert all(outcome(data, TABLES, BACKENDS) == "ok" for data in CORPUS)


def test_size_rewrites_reach_the_payload_decoder() -> None:
    """A resealed edit of the latent size passes every header check: the payload decoder refuses the
    payload of another size (or, rarely, the size fits it)."""
    rng = random.Random(1234)
    seen: dict[str, int] = {}
    for _ in range(400):
        data = reseal(rewrite_size(rng.choice(CORPUS), rng), TABLES)
        result = outcome(data, TABLES, BACKENDS)
        seen[result] = seen.get(result, 0) + 1
    assert set(seen) <= {"ok", "PayloadError"} and seen.get("PayloadError", 0) > 0, seen
