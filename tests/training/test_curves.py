"""BD-rate math (training/curves.py) on cases that can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from training.curves import Curve, CurveError, bd_rate, pareto_front, pchip_eval, pchip_slopes

ACC = np.array([0.90, 0.93, 0.95, 0.96, 0.97])
BYTES = np.array([40.0, 50.0, 60.0, 80.0, 100.0])


def test_identical_curves_give_zero() -> None:
    a = Curve("a", BYTES, ACC)
    r = bd_rate(a, Curve("b", BYTES.copy(), ACC.copy()))
    assert r["bd_rate_percent"] == 0.0
    assert r["overlap"] == [0.90, 0.97]


def test_half_the_bytes_everywhere_gives_minus_50_and_double_gives_plus_100() -> None:
    ref = Curve("ref", BYTES, ACC)
    assert bd_rate(ref, Curve("half", BYTES / 2, ACC))["bd_rate_percent"] == pytest.approx(-50.0, abs=1e-9)
    assert bd_rate(ref, Curve("double", BYTES * 2, ACC))["bd_rate_percent"] == pytest.approx(100.0, abs=1e-9)


def test_linear_log_bytes_integrates_exactly_over_the_overlap() -> None:
    # log(bytes) = k * acc on both; test is shifted by 0.01 in accuracy -> log ratio = -0.01 k everywhere
    acc = np.linspace(0.90, 0.98, 5)
    k = 50.0
    ref = Curve("ref", np.exp(k * acc), acc)
    test = Curve("test", np.exp(k * acc), acc + 0.01)
    r = bd_rate(ref, test)
    assert r["overlap"] == pytest.approx([0.91, 0.98])
    assert r["bd_rate_percent"] == pytest.approx((np.exp(-0.01 * k) - 1) * 100, rel=1e-9)


def test_pchip_matches_scipy_and_does_not_overshoot() -> None:
    scipy_interp = pytest.importorskip("scipy.interpolate")
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(0, 1, 8))
    y = np.cumsum(rng.uniform(0, 1, 8))  # monotone data
    t = np.linspace(x[0], x[-1], 200)
    ours = pchip_eval(x, y, pchip_slopes(x, y), t)
    assert np.allclose(ours, scipy_interp.PchipInterpolator(x, y)(t), atol=1e-12)
    assert np.all(np.diff(ours) >= -1e-12)


def test_dominated_points_are_dropped() -> None:
    c = Curve("c", np.array([40.0, 45.0, 50.0, 60.0]), np.array([0.90, 0.89, 0.93, 0.93]))
    front = pareto_front(c)
    assert front.bytes.tolist() == [40.0, 50.0] and front.accuracy.tolist() == [0.90, 0.93]


def test_too_few_points_and_no_overlap_are_refused_by_name() -> None:
    ref = Curve("ref", BYTES, ACC)
    with pytest.raises(CurveError, match="'short'.*at least 4"):
        bd_rate(ref, Curve("short", BYTES[:3], ACC[:3]))
    with pytest.raises(CurveError, match="do not overlap"):
        bd_rate(ref, Curve("far", BYTES, ACC - 0.2))
    with pytest.raises(CurveError, match="positive"):
        Curve("zero", np.array([0.0, 1, 2, 3]), ACC[:4])
    with pytest.raises(CurveError, match="lacks 'bytes_per_image'"):
        Curve.from_points("p", [{"mean_task_accuracy": 0.9}])
