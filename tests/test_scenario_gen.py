"""Randomised training scenarios, and the multi-tenant (shared-budget) family."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tsadapt.policy.learn.scenario_gen import (
    one_worker_capacity_rps,
    random_scenario,
    shared_budget_scenario,
)
from tsadapt.policy.learn.train_config import RandomiseConfig

CFG = RandomiseConfig(max_rate_rps=200.0)
DURATION_S = 120.0


def _model_dict(m) -> dict:
    return {
        "slo_ms": m.slo_ms,
        "profile": {"alpha_ms": m.latency.alpha_ms, "beta_ms": m.latency.beta_ms},
        "max_batch": m.max_batch,
    }


@pytest.mark.parametrize("seed", range(12))
def test_shared_budget_peaks_take_turns_for_one_spare_worker(seed: int) -> None:
    sc = shared_budget_scenario(np.random.default_rng(seed), CFG, DURATION_S)
    n = len(sc.models)
    assert n in (2, 3)
    assert sc.budget.workers == n + 1 == sum(d.capacity for d in sc.devices)
    period = sc.workload[0].workload.period_s
    t = np.linspace(0.0, period, 2000, endpoint=False)
    centres = []
    for m, entry in zip(sc.models, sc.workload, strict=True):
        assert entry.workload.period_s == period
        rates = entry.workload.rates_at(t)
        cap = one_worker_capacity_rps(_model_dict(m))
        assert rates.max() >= 1.2 * cap - 1e-6, "a peak needs a second worker"
        assert rates.min() <= 0.5 * cap + 1e-6, "a trough fits in one worker"
        assert m.max_workers >= 2
        angle = 2 * np.pi * t[rates >= rates.max() - 1e-9] / period  # circular mean of the peak
        centres.append(np.arctan2(np.sin(angle).mean(), np.cos(angle).mean()) % (2 * np.pi))
    ordered = np.sort(centres)
    gaps = np.diff(np.append(ordered, ordered[0] + 2 * np.pi)) / (2 * np.pi)
    assert gaps.min() >= 1 / n - 0.1 - 1e-3, f"peaks at {ordered} (radians) do not take turns"


def test_one_worker_capacity_uses_largest_batch_within_half_the_slo() -> None:
    m = {"slo_ms": 100.0, "profile": {"alpha_ms": 2.0, "beta_ms": 10.0}, "max_batch": 64}
    # batch 20 takes 50 ms = half the SLO: 20 requests per 50 ms
    assert one_worker_capacity_rps(m) == pytest.approx(400.0)
    assert one_worker_capacity_rps({**m, "max_batch": 4}) == pytest.approx(4 / 0.018)


@pytest.mark.parametrize(("prob", "shared"), [(0.0, False), (1.0, True)])
def test_shared_budget_prob_picks_the_family(prob: float, shared: bool) -> None:
    cfg = replace(CFG, shared_budget_prob=prob)
    rng = np.random.default_rng(7)
    names = {random_scenario(rng, cfg, DURATION_S).name for _ in range(10)}
    assert names == ({"random-shared"} if shared else {"random"})


def test_shared_budget_prob_validated() -> None:
    with pytest.raises(ValueError, match="randomise.shared_budget_prob"):
        RandomiseConfig(shared_budget_prob=1.5)


@pytest.mark.parametrize("seed", range(6))
def test_cpu_scale_is_drawn_last_and_leaves_the_other_draws_alone(seed: int) -> None:
    plain = random_scenario(np.random.default_rng(seed), CFG, DURATION_S)
    cfg = replace(CFG, cpu_scale_log=(0.8, 1.6))
    scaled = random_scenario(np.random.default_rng(seed), cfg, DURATION_S)
    assert plain.devices[0].cpu_scale == 1.0
    assert 0.8 <= scaled.devices[0].cpu_scale <= 1.6
    assert replace(scaled, devices=plain.devices) == plain


def test_cpu_scale_log_validated() -> None:
    with pytest.raises(ValueError, match="randomise.cpu_scale_log"):
        RandomiseConfig(cpu_scale_log=(0.0, 1.5))
