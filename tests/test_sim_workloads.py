"""Workloads: empirical arrival rates match rate_at, and parameters are validated."""

from __future__ import annotations

import numpy as np
import pytest

from tsadapt.policy.sim.workload_files import WORKLOAD_KINDS, Trace, workload_from_dict
from tsadapt.policy.sim.workloads import Bursty, Mix, Poisson, realized_rates

HORIZON_S = 2000.0


def _integral(w, duration: float, step: float = 0.01) -> float:
    t = np.arange(0.0, duration, step) + step / 2
    return float(w.rates_at(t).sum() * step)


@pytest.fixture
def rate_trace(tmp_path):
    p = tmp_path / "rates.csv"
    rows = "\n".join(f"{s},{50 + 40 * np.sin(s / 30):.3f}" for s in range(int(HORIZON_S)))
    p.write_text("second,rate\n" + rows + "\n")
    return str(p)


@pytest.fixture
def stamp_trace(tmp_path):
    p = tmp_path / "stamps.csv"
    ts = np.sort(np.random.default_rng(7).random(20000) * HORIZON_S)
    p.write_text("timestamp\n" + "\n".join(f"{x:.6f}" for x in ts) + "\n")
    return str(p)


SPECS = {
    "poisson": {"kind": "poisson", "rate": 80},
    "bursty": {"kind": "bursty", "base_rate": 20, "spike_rate": 200, "spike_s": 5, "period_s": 40},
    "diurnal": {"kind": "diurnal", "min_rate": 5, "max_rate": 150, "period_s": 300},
    "diurnal_offset": {
        "kind": "diurnal",
        "min_rate": 5,
        "max_rate": 150,
        "period_s": 700,
        "offset_s": 500,
    },
    "gamma_cv2": {"kind": "gamma", "mean_rate": 60, "cv": 2.0},
    "mmpp": {"kind": "mmpp", "rates": [150, 10], "mean_hold_s": [20, 20], "seed": 4},
    "gamma_cv05": {"kind": "gamma", "mean_rate": 60, "cv": 0.5, "interval_s": 2},
    "step": {"kind": "step", "rates": [10, 100, 40], "step_s": 300},
}


@pytest.mark.parametrize("name", [*SPECS, "trace_rates", "trace_stamps"])
def test_empirical_rate_matches_integral_of_rate_at(name, rate_trace, stamp_trace):
    if name == "trace_rates":
        spec = {"kind": "trace", "path": rate_trace}
    elif name == "trace_stamps":
        spec = {"kind": "trace", "path": stamp_trace}
    else:
        spec = SPECS[name]
    w = workload_from_dict(spec)
    a = w.arrivals(HORIZON_S, np.random.default_rng(123))
    assert np.all(np.diff(a) >= 0)
    assert a.size == 0 or (a[0] >= 0 and a[-1] < HORIZON_S)
    expected = _integral(w, HORIZON_S)
    assert len(a) == pytest.approx(expected, rel=0.03)


def test_every_kind_is_covered():
    assert set(WORKLOAD_KINDS) == {"poisson", "bursty", "diurnal", "gamma", "mmpp", "step", "trace"}


def test_bursty_spikes_where_rate_at_says():
    w = Bursty(base_rate=10, spike_rate=300, spike_s=4, period_s=20, offset_s=6)
    assert w.rate_at(5.9) == 10 and w.rate_at(6.0) == 300 and w.rate_at(9.99) == 300
    assert w.rate_at(10.0) == 10 and w.rate_at(26.5) == 300
    a = w.arrivals(4000, np.random.default_rng(1))
    in_spike = w.rates_at(a) == 300
    assert in_spike.sum() / (200 * 4 * 300) == pytest.approx(1.0, rel=0.03)
    assert (~in_spike).sum() / (200 * 16 * 10) == pytest.approx(1.0, rel=0.05)


def test_bursty_default_offset_is_mid_period():
    w = Bursty(base_rate=1, spike_rate=9, spike_s=2, period_s=10)
    assert w.offset_s == 5.0 and w.rate_at(0.0) == 1 and w.rate_at(5.5) == 9


def test_step_holds_last_rate_and_diurnal_shape():
    s = workload_from_dict({"kind": "step", "rates": [1, 2, 3], "step_s": 10})
    assert [s.rate_at(t) for t in (0, 9.99, 10, 25, 1000)] == [1, 1, 2, 3, 3]
    d = workload_from_dict({"kind": "diurnal", "min_rate": 10, "max_rate": 30, "period_s": 100})
    assert d.rate_at(0) == pytest.approx(10) and d.rate_at(50) == pytest.approx(30)
    assert d.rate_at(25) == pytest.approx(20)


def test_diurnal_offset_shifts_the_cycle():
    kw = {"kind": "diurnal", "min_rate": 10, "max_rate": 30, "period_s": 100}
    d = workload_from_dict({**kw, "offset_s": 40})
    assert d.rate_at(40) == pytest.approx(10) and d.rate_at(90) == pytest.approx(30)
    assert d.rate_at(0) == pytest.approx(workload_from_dict(kw).rate_at(60))


def test_gamma_cv_of_interarrivals():
    w = workload_from_dict({"kind": "gamma", "mean_rate": 100, "cv": 3.0})
    gaps = np.diff(w.arrivals(3000, np.random.default_rng(5)))
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.1)
    rates = w.realized_rates(w.arrivals(100, np.random.default_rng(5)), 100)
    # count std per window ~ sqrt(rate * cv^2) = 30, against 10 for Poisson
    assert rates.shape == (100,) and rates.std() > 20


def test_trace_timestamps_replay_exactly(stamp_trace):
    w = Trace(stamp_trace)
    assert w.is_timestamps
    a = w.arrivals(100.0, np.random.default_rng(0))
    b = w.arrivals(100.0, np.random.default_rng(99))
    np.testing.assert_array_equal(a, b)
    assert np.all(a < 100.0)
    assert w.rate_at(10.5) == np.count_nonzero((a >= 10) & (a < 11))


def test_trace_rates_csv(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("second,rate\n0,5\n1,7\n3,2\n")
    w = workload_from_dict({"kind": "trace", "path": "r.csv"}, base_dir=tmp_path)
    assert [w.rate_at(t) for t in (0.5, 1.5, 2.5, 3.5, 4.5)] == [5, 7, 7, 2, 0]


def test_same_seed_same_arrivals_and_mix_adds_up():
    w = workload_from_dict(SPECS["bursty"])
    a1 = w.arrivals(300, np.random.default_rng(3))
    a2 = w.arrivals(300, np.random.default_rng(3))
    np.testing.assert_array_equal(a1, a2)
    m = Mix((Poisson(10), Poisson(30)))
    assert m.rate_at(3.0) == 40
    assert len(m.arrivals(1000, np.random.default_rng(0))) == pytest.approx(40000, rel=0.03)


def test_realized_rates_bins():
    r = realized_rates(np.array([0.1, 0.2, 1.5, 2.9]), 3.0, 1.0)
    np.testing.assert_array_equal(r, [2, 1, 1])


def test_to_dict_round_trip():
    for spec in SPECS.values():
        w = workload_from_dict(spec)
        assert workload_from_dict(w.to_dict()) == w


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"rate": 3}, "missing field 'kind'"),
        ({"kind": "zipf", "rate": 3}, "unknown kind 'zipf'"),
        ({"kind": "poisson"}, "missing field 'rate'"),
        ({"kind": "poisson", "rate": -1}, "poisson.rate must be >= 0"),
        ({"kind": "poisson", "rate": "fast"}, "poisson.rate must be a number"),
        ({"kind": "poisson", "rate": True}, "poisson.rate must be a number"),
        ({"kind": "poisson", "rate": 1, "burst": 2}, "unknown field 'burst'"),
        (
            {"kind": "bursty", "base_rate": 1, "spike_rate": 5, "spike_s": 20, "period_s": 10},
            "bursty.spike_s must be <= period_s",
        ),
        (
            {"kind": "bursty", "base_rate": 1, "spike_rate": 5, "spike_s": 0, "period_s": 10},
            "bursty.spike_s must be > 0",
        ),
        ({"kind": "bursty", "base_rate": 1, "spike_rate": 5, "period_s": 10}, "'spike_s'"),
        (
            {"kind": "diurnal", "min_rate": 10, "max_rate": 5, "period_s": 10},
            "diurnal.max_rate must be >= min_rate",
        ),
        ({"kind": "diurnal", "min_rate": 1, "max_rate": 5, "period_s": 0}, "diurnal.period_s"),
        (
            {"kind": "diurnal", "min_rate": 1, "max_rate": 5, "period_s": 10, "offset_s": 10},
            "diurnal.offset_s must be < period_s",
        ),
        ({"kind": "gamma", "mean_rate": 5, "cv": 0}, "gamma.cv must be > 0"),
        ({"kind": "gamma", "mean_rate": 0, "cv": 1}, "gamma.mean_rate must be > 0"),
        ({"kind": "gamma", "mean_rate": 5, "cv": 1, "interval_s": -1}, "gamma.interval_s"),
        ({"kind": "step", "rates": [], "step_s": 1}, "step.rates must not be empty"),
        ({"kind": "step", "rates": 5, "step_s": 1}, "step.rates must be a list"),
        ({"kind": "step", "rates": [1, -2], "step_s": 1}, "step.rates[1] must be >= 0"),
        ({"kind": "step", "rates": [1], "step_s": 0}, "step.step_s must be > 0"),
        ({"kind": "trace", "path": "/nonexistent/x.csv"}, "trace.path: no such file"),
    ],
)
def test_validation_errors_name_the_field(spec, message):
    with pytest.raises(ValueError, match=__import__("re").escape(message)):
        workload_from_dict(spec)


def test_trace_bad_header(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="header"):
        Trace(str(p))
