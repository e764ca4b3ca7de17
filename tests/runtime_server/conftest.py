"""Fixtures the server tests share: the ONNX bundle loaded, and one valid bitstream coded with its tables."""

from __future__ import annotations

import numpy as np
import pytest

import codec
from codec.bundle import Bundle, load_bundle


@pytest.fixture(scope="module")
def bundle(onnx_bundle) -> Bundle:
    return load_bundle(onnx_bundle)


@pytest.fixture(scope="module")
def good(bundle: Bundle) -> bytes:
    latent = np.random.default_rng(0).standard_normal(bundle.latent_shape).astype(np.float32)
    return codec.encode_latent(latent, 1, bundle.tables)
