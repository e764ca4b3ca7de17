"""Rate-accuracy curves and the Bjontegaard delta rate (BD-rate) between two of them. Pure numpy.

A curve is a set of operating points ``(bytes per image, accuracy)``. The BD-rate of a test curve against
a reference is the mean byte difference at equal accuracy over the accuracy range both curves cover:

1. Each curve is reduced to its Pareto front: a point that another point of the same curve matches or
   beats on both bytes and accuracy is dropped (no one would operate there; it also makes accuracy
   strictly increasing along the curve). A curve needs at least ``MIN_POINTS`` (4, as the classic cubic
   Bjontegaard fit) points on its front, else ``CurveError``.
2. ``log(bytes)`` is interpolated as a function of accuracy with a monotone piecewise-cubic Hermite
   interpolant (PCHIP, Fritsch-Carlson slopes as in SciPy's ``PchipInterpolator``): it passes through
   every point and never overshoots between them, where a global cubic polynomial can.
3. Both interpolants are integrated exactly (two-point Gauss-Legendre on every piece between the
   knots of either curve) over the overlap ``[max(lo_ref, lo_test), min(hi_ref, hi_test)]`` of their
   accuracy ranges; no extrapolation. An empty overlap is a ``CurveError``.
4. ``BD-rate = exp(mean(log bytes_test - log bytes_ref)) - 1``, in percent: -50 % means the test curve
   needs half the bytes of the reference for the same accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

MIN_POINTS = 4
METHOD = (
    "Bjontegaard delta rate: log(bytes) interpolated over accuracy with a monotone piecewise-cubic (PCHIP) "
    "interpolant through each curve's Pareto-front points (at least 4), integrated exactly over the overlap "
    "of the accuracy ranges; exp(mean difference) - 1"
)


class CurveError(ValueError):
    """A curve cannot be used for a BD-rate: too few points, bad values, or no accuracy overlap."""


@dataclass(frozen=True)
class Curve:
    """Operating points of one system; ``bytes`` > 0, ``accuracy`` finite."""

    name: str
    bytes: np.ndarray
    accuracy: np.ndarray

    @classmethod
    def from_points(cls, name: str, points: Sequence[dict[str, Any]], accuracy_key: str = "mean_task_accuracy") -> "Curve":
        """From dicts holding ``bytes_per_image`` and ``accuracy_key`` (the sweep's and the demo's points)."""
        try:
            b = [float(p["bytes_per_image"]) for p in points]
            a = [float(p[accuracy_key]) for p in points]
        except KeyError as exc:
            raise CurveError(f"curve {name!r}: a point lacks {exc}") from None
        return cls(name, np.asarray(b), np.asarray(a))

    def __post_init__(self) -> None:
        if self.bytes.shape != self.accuracy.shape or self.bytes.ndim != 1:
            raise CurveError(f"curve {self.name!r}: bytes and accuracy must be 1-d arrays of one length")
        if not (np.all(np.isfinite(self.bytes)) and np.all(np.isfinite(self.accuracy))):
            raise CurveError(f"curve {self.name!r}: bytes and accuracy must be finite")
        if np.any(self.bytes <= 0):
            raise CurveError(f"curve {self.name!r}: bytes must be positive (the rate is compared in log space)")


def pareto_front(curve: Curve) -> Curve:
    """The points no other point matches or beats on both bytes (fewer) and accuracy (higher), by accuracy."""
    order = np.lexsort((curve.bytes, -curve.accuracy))  # most accurate first, cheapest first among ties
    keep: list[int] = []
    best_bytes = np.inf
    for i in order:
        if curve.bytes[i] < best_bytes:
            keep.append(int(i))
            best_bytes = curve.bytes[i]
    keep.reverse()
    return Curve(curve.name, curve.bytes[keep], curve.accuracy[keep])


def pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson derivatives at the knots (strictly increasing ``x``), as SciPy's PCHIP."""
    h = np.diff(x)
    delta = np.diff(y) / h
    n = len(x)
    d = np.zeros(n)
    if n == 2:
        d[:] = delta[0]
        return d
    w1 = 2 * h[1:] + h[:-1]
    w2 = h[1:] + 2 * h[:-1]
    same_sign = delta[:-1] * delta[1:] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:])
    d[1:-1] = np.where(same_sign, harmonic, 0.0)
    d[0] = _end_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _end_slope(h0: float, h1: float, m0: float, m1: float) -> float:
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(d) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(d) > abs(3 * m0):
        return 3 * m0
    return float(d)


def pchip_eval(x: np.ndarray, y: np.ndarray, d: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The cubic Hermite interpolant with knots ``x``, values ``y``, slopes ``d``, at ``t`` within [x0, xn]."""
    k = np.clip(np.searchsorted(x, t, side="right") - 1, 0, len(x) - 2)
    h = x[k + 1] - x[k]
    s = (t - x[k]) / h
    h00 = (1 + 2 * s) * (1 - s) ** 2
    h10 = s * (1 - s) ** 2
    h01 = s**2 * (3 - 2 * s)
    h11 = s**2 * (s - 1)
    return h00 * y[k] + h10 * h * d[k] + h01 * y[k + 1] + h11 * h * d[k + 1]


def _interpolant(curve: Curve) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = curve.accuracy, np.log(curve.bytes)
    return x, y, pchip_slopes(x, y)


def bd_rate(reference: Curve, test: Curve, min_points: int = MIN_POINTS) -> dict[str, Any]:
    """BD-rate of ``test`` against ``reference`` (percent; negative: ``test`` needs fewer bytes).

    Returns ``{"bd_rate_percent", "overlap": [lo, hi], "points": {ref: n, test: n}, "method"}``; raises
    ``CurveError`` naming the curve when one has fewer than ``min_points`` Pareto points or the accuracy
    ranges do not overlap.
    """
    fronts = []
    for c in (reference, test):
        front = pareto_front(c)
        if len(front.bytes) < min_points:
            raise CurveError(
                f"curve {c.name!r}: {len(front.bytes)} Pareto-front points ({len(c.bytes)} in all), a BD-rate needs at least {min_points}"
            )
        fronts.append(front)
    ref, tst = fronts
    lo = max(ref.accuracy[0], tst.accuracy[0])
    hi = min(ref.accuracy[-1], tst.accuracy[-1])
    if not hi > lo:
        raise CurveError(
            f"curves {reference.name!r} (accuracy {ref.accuracy[0]:.4f} to {ref.accuracy[-1]:.4f}) and {test.name!r} "
            f"({tst.accuracy[0]:.4f} to {tst.accuracy[-1]:.4f}) do not overlap in accuracy"
        )
    knots = np.concatenate([[lo, hi], ref.accuracy, tst.accuracy])
    knots = np.unique(knots[(knots >= lo) & (knots <= hi)])
    # two-point Gauss-Legendre is exact for the cubic pieces between consecutive knots
    mid, half = (knots[1:] + knots[:-1]) / 2, (knots[1:] - knots[:-1]) / 2
    nodes = np.concatenate([mid - half / np.sqrt(3), mid + half / np.sqrt(3)])
    weights = np.concatenate([half, half])
    diff = pchip_eval(*_interpolant(tst), nodes) - pchip_eval(*_interpolant(ref), nodes)
    mean_log_diff = float(np.sum(weights * diff) / (hi - lo))
    return {
        "bd_rate_percent": float(np.expm1(mean_log_diff) * 100.0),
        "overlap": [float(lo), float(hi)],
        "points": {reference.name: len(ref.bytes), test.name: len(tst.bytes)},
        "method": METHOD,
    }
