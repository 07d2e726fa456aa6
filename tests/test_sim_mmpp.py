"""Markov-modulated arrivals (``mmpp``) and the production-like training workloads
(``onoff`` bursts, minute-scale ``swing``), measured on generated sample paths."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tsadapt.policy.learn.scenario_gen import outside_latency, random_scenario, random_workload
from tsadapt.policy.learn.train_config import RandomiseConfig
from tsadapt.policy.sim.workload_files import workload_from_dict
from tsadapt.policy.sim.workloads import MMPP, realized_rates

CFG = RandomiseConfig(max_rate_rps=200.0)


def gap_cv(arrivals: np.ndarray) -> float:
    gaps = np.diff(arrivals)
    return float(gaps.std() / gaps.mean())


@pytest.mark.parametrize(
    ("on_s", "off_s", "min_cv"), [(0.5, 4.5, 10.0), (0.3, 6.0, 15.0), (2.0, 2.0, 1.5)]
)
def test_on_off_bursts_reach_a_high_interarrival_cv(on_s: float, off_s: float, min_cv: float):
    w = MMPP(rates=(500.0, 0.0), mean_hold_s=(on_s, off_s), seed=7)
    a = w.arrivals(3600.0, np.random.default_rng(1))
    assert gap_cv(a) >= min_cv
    assert len(a) / 3600.0 == pytest.approx(w.mean_rate(), rel=0.15)


def test_swing_is_minute_scale_and_tenfold() -> None:
    w = MMPP(rates=(20.0, 200.0), mean_hold_s=(60.0, 60.0), seed=3)
    rates = realized_rates(w.arrivals(3600.0, np.random.default_rng(2)), 3600.0, 10.0)
    assert np.quantile(rates, 0.9) / np.quantile(rates, 0.1) >= 7.0
    ends, _ = w.path(3600.0)
    holds = np.diff(ends[ends < 3600.0])
    assert 30.0 <= holds.mean() <= 90.0  # about a minute per level


def test_rate_at_is_the_arrivals_intensity_and_a_function_of_time() -> None:
    spec = {"kind": "mmpp", "rates": [100.0, 5.0], "mean_hold_s": [2.0, 5.0], "seed": 11}
    w, again = workload_from_dict(spec), workload_from_dict(spec)
    t = np.linspace(0.0, 600.0, 6001)
    late_first = again.rates_at(np.asarray([599.0]))  # reading far first: the same path
    assert np.array_equal(w.rates_at(t), again.rates_at(t))
    assert late_first[0] == w.rate_at(599.0)
    a = w.arrivals(600.0, np.random.default_rng(0))
    expected = np.trapezoid(w.rates_at(t), t)
    assert len(a) == pytest.approx(expected, rel=0.05)
    assert w.to_dict() == spec


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"rates": [1.0], "mean_hold_s": [1.0]}, "rates"),
        ({"rates": [1.0, 2.0], "mean_hold_s": [1.0]}, "mean_hold_s"),
        ({"rates": [1.0, -2.0], "mean_hold_s": [1.0, 1.0]}, "rates[1]"),
        ({"rates": [1.0, 2.0], "mean_hold_s": [1.0, 0.0]}, "mean_hold_s[1]"),
        ({"rates": [1.0, 2.0], "mean_hold_s": [1.0, 1.0], "seed": -1}, "seed"),
    ],
)
def test_bad_mmpp_names_the_field(spec: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"mmpp.{field}".replace("[", r"\[")):
        workload_from_dict({"kind": "mmpp", **spec})


@pytest.mark.parametrize("seed", range(5))
def test_generated_onoff_has_the_mean_rate_and_cv_of_ten(seed: int) -> None:
    cfg = replace(
        CFG, onoff_on_share=(0.05, 0.08), onoff_mean_on_s=(0.3, 1.0), onoff_off_share=(0.0, 0.0)
    )
    spec = random_workload(np.random.default_rng(seed), "onoff", 40.0, cfg, 120.0)
    w = workload_from_dict(spec)
    a = w.arrivals(7200.0, np.random.default_rng(seed))
    assert gap_cv(a) >= 10.0
    assert w.mean_rate() == pytest.approx(40.0, rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_generated_swing_swings_by_its_ratio(seed: int) -> None:
    cfg = replace(CFG, swing_ratio=(10.0, 10.0), swing_hold_s=(60.0, 60.0))
    w = workload_from_dict(random_workload(np.random.default_rng(seed), "swing", 50.0, cfg, 120.0))
    assert max(w.rates) / min(w.rates) == pytest.approx(10.0)
    assert w.mean_rate() == pytest.approx(50.0)
    rates = realized_rates(w.arrivals(3600.0, np.random.default_rng(seed)), 3600.0, 10.0)
    assert np.quantile(rates, 0.9) / np.quantile(rates, 0.1) >= 6.0


def test_gamma_cv_range_reaches_ten() -> None:
    cfg = replace(CFG, gamma_cv=(10.0, 10.0))
    w = workload_from_dict(random_workload(np.random.default_rng(0), "gamma", 50.0, cfg, 120.0))
    assert gap_cv(w.arrivals(3600.0, np.random.default_rng(0))) >= 7.0


def test_outside_latency_is_drawn_and_bounded_by_the_slo() -> None:
    cfg = replace(CFG, overhead_prob=1.0, overhead_scale_log=(5.0, 5.0))
    q = outside_latency(np.random.default_rng(0), cfg, slo_ms=1000.0)
    assert q is not None and q == sorted(q) and max(q) > 20.0  # calibrated p100 ~10 ms x 5
    tight = outside_latency(np.random.default_rng(0), cfg, slo_ms=40.0)
    assert np.quantile(tight, 0.99) <= 0.3 * 40.0 + 1e-6
    assert outside_latency(np.random.default_rng(0), CFG, slo_ms=40.0) is None


def test_random_scenarios_carry_outside_latency_and_new_kinds() -> None:
    cfg = replace(CFG, overhead_prob=1.0, kinds=("onoff", "swing"), shared_budget_prob=0.0)
    scs = [random_scenario(np.random.default_rng(s), cfg, 120.0) for s in range(6)]
    assert all(m.overhead_quantiles_ms for sc in scs for m in sc.models)
    assert {w.workload.kind for sc in scs for w in sc.workload} == {"mmpp"}


def test_overhead_prob_zero_keeps_the_old_draws() -> None:
    a = random_scenario(np.random.default_rng(5), CFG, 120.0)
    b = random_scenario(np.random.default_rng(5), replace(CFG, overhead_prob=0.0), 120.0)
    assert a == b and all(m.overhead_quantiles_ms is None for m in a.models)
