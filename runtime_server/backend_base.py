"""What every inference backend of the server half is (``runtime_server/backends.py`` picks one), and the
error of one that cannot run here."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class BackendUnavailableError(RuntimeError):
    """The chosen backend cannot run here, or the bundle lacks what it needs."""


class Backend(Protocol):
    name: str
    device: str

    def run(self, latents: np.ndarray) -> list[np.ndarray]:
        """Per-task logits for a batch of latents, in the manifest's task order."""
        ...
