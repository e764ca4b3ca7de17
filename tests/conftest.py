"""Shared pytest fixtures. Expensive artifacts (checkpoints, bundles) are built once per session."""

from __future__ import annotations

import os

import torch

# The test machines have two cores; keep torch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))
