"""The device side: image -> preprocessing -> edge client -> quantize -> rANS -> bitstream.

``EdgeRuntime(artifacts_dir)`` reads an exported bundle (:func:`codec.bundle.load_bundle`: manifest,
file hashes, entropy tables) and loads its edge client on the runtime the manifest names
(:mod:`runtime_edge.models`)::

    image ─► preprocess (manifest) ─► edge client ─► latent y ─► codec.quantize ─► codec.encode ─► bitstream
                                              └────► task logits ─► task mask (manifest's rule) ─┘

Nothing here imports ``training/``: a device needs the bundle, ``codec/`` and this package.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Union

import numpy as np
from PIL import Image

import codec
from codec.bundle import load_bundle
from runtime_edge.models import EdgeModel, EdgeRuntimeError, load_edge_model
from runtime_edge.preprocess import DEFAULT_MAX_PIXELS, load_image, preprocess

ImageInput = Union[Image.Image, str, os.PathLike]


@dataclass
class EncodedImage:
    """One image's bitstream, its task mask (bit t = task t active) and where the time went (ms)."""

    bitstream: bytes
    task_mask: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_bytes(self) -> int:
        return len(self.bitstream)


class EdgeRuntime:
    """The edge half of MANTiS for one bundle: ``encode(image) -> EncodedImage``. ``pte_runtime`` chooses the
    runtime of an ``edge.pte`` (:data:`runtime_edge.models.PTE_RUNTIMES`)."""

    def __init__(
        self, artifacts_dir: str | os.PathLike, verify: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS, pte_runtime: str = "auto"
    ) -> None:
        self.bundle = load_bundle(artifacts_dir, verify=verify)
        edge = self.bundle.manifest.edge
        producer = self.bundle.manifest.producer.get("executorch")
        self.model: EdgeModel = load_edge_model(self.bundle.path(edge.file), edge.runtime, pte_runtime, producer)
        self.latent_shape = self.bundle.latent_shape
        self.num_tasks = self.bundle.edge_tasks
        self.max_pixels = max_pixels

    @property
    def model_name(self) -> str:
        return self.bundle.manifest.model_name

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """The edge client's input for ``image``, as the manifest's preprocessing says."""
        return preprocess(image, self.bundle.manifest.preprocessing)

    def run_model(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Edge client on a preprocessed ``(1,3,H,W)`` batch; returns ``(latent (C,h,w), task_logits (T,))``."""
        latent, logits = self.model.run(np.ascontiguousarray(x, dtype=np.float32))
        latent = np.asarray(latent, dtype=np.float32)
        logits = np.asarray(logits, dtype=np.float32).reshape(-1)
        if latent.shape != (1, *self.latent_shape):
            raise EdgeRuntimeError(f"edge client returned a latent of shape {latent.shape}, manifest says {(1, *self.latent_shape)}")
        if logits.size != self.num_tasks:
            raise EdgeRuntimeError(f"edge client returned {logits.size} task logits, bundle has {self.num_tasks} tasks")
        if not (np.all(np.isfinite(latent)) and np.all(np.isfinite(logits))):
            raise EdgeRuntimeError("edge client produced non-finite values (NaN/inf)")
        return latent[0], logits

    def encode(self, image: ImageInput) -> EncodedImage:
        """Preprocess as the manifest says, run the edge client, quantize and entropy-code the latent."""
        t0 = time.perf_counter()
        img = image if isinstance(image, Image.Image) else load_image(image, self.max_pixels)
        x = self.preprocess(img)
        t1 = time.perf_counter()
        latent, logits = self.run_model(x)
        t2 = time.perf_counter()
        mask = self.bundle.task_mask(logits)
        symbols = codec.quantize(latent, self.bundle.tables)
        bitstream = codec.encode(symbols, mask, self.bundle.tables)
        t3 = time.perf_counter()
        timings = {
            "preprocess_ms": (t1 - t0) * 1000.0,
            "edge_ms": (t2 - t1) * 1000.0,
            "entropy_ms": (t3 - t2) * 1000.0,
            "total_ms": (t3 - t0) * 1000.0,
        }
        return EncodedImage(bitstream=bytes(bitstream), task_mask=mask, timings=timings)

    def active_tasks(self, task_mask: int) -> list[str]:
        """Names of the tasks whose bit is set in ``task_mask``."""
        return [name for t, name in enumerate(self.bundle.task_names) if task_mask >> t & 1]
