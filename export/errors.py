"""Errors raised while exporting a bundle."""

from __future__ import annotations


class ExportError(RuntimeError):
    """An export cannot proceed (bad checkpoint, bad target, missing data, occupied output directory,
    or an exported half that does not match the eager model). The message names the problem."""
