"""Deterministic synthetic latents and a small fitted ``EntropyBottleneck``, for test vectors and benchmarks.

Needs torch and CompressAI (imported lazily); the codec itself does not.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def channel_params(channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel scales (geometric, 0.2..4) and locations of the synthetic latent distribution."""
    scales = np.geomspace(0.2, 4.0, channels).astype(np.float32)
    locs = (0.4 * np.sin(np.arange(channels))).astype(np.float32)
    return scales, locs


def synthetic_latent(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """float32 latent ``(..., C, H, W)``: Laplacian even channels, Gaussian odd ones, per-channel scale and shift."""
    c = shape[-3]
    scales, locs = channel_params(c)
    rng = np.random.default_rng(seed)
    lap = rng.laplace(0.0, 1.0, size=shape)
    gau = rng.normal(0.0, 1.0, size=shape)
    odd = (np.arange(c) % 2 == 1).reshape(c, 1, 1)
    x = np.where(odd, gau, lap) * scales.reshape(c, 1, 1) + locs.reshape(c, 1, 1)
    return x.astype(np.float32)


def fit_entropy_bottleneck(channels: int, *, steps: int = 300, seed: int = 0, batch: int = 8, size: int = 16) -> Any:
    """A CompressAI ``EntropyBottleneck`` fitted to :func:`synthetic_latent` data, then ``update()``-d.

    Adam on the rate of noisy samples plus the auxiliary quantile loss, single-threaded and seeded, then
    ``update(force=True, update_quantiles=True)`` (bisection for the tail quantiles).
    """
    import torch
    from compressai.entropy_models import EntropyBottleneck

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        eb = EntropyBottleneck(channels)
        opt = torch.optim.Adam(eb.parameters(), lr=1e-2)
        for step in range(steps):
            x = torch.from_numpy(synthetic_latent((batch, channels, size, size), seed=seed * 100_003 + step))
            _, likelihoods = eb(x, training=True)
            loss = -torch.log2(likelihoods).mean() + eb.loss()
            opt.zero_grad()
            loss.backward()
            opt.step()
        eb.eval()
        eb.update(force=True, update_quantiles=True)
    finally:
        torch.set_num_threads(threads)
    return eb
