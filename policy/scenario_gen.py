"""Randomised training scenarios: model mixes, latency profiles, SLOs, rates and burstiness.

Each draw is an ordinary :class:`~tsadapt.policy.scenario.Scenario` built through
``scenario_from_dict`` (so it is validated like a YAML file), from a numpy Generator.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .scenario import Scenario, scenario_from_dict
from .train_config import RandomiseConfig


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _workload(
    rng: np.random.Generator, kind: str, rate: float, cfg: RandomiseConfig, duration_s: float
) -> dict[str, Any]:
    """A workload of ``kind`` whose mean rate is about ``rate`` (peaks capped)."""
    cap = cfg.max_rate_rps
    if kind == "poisson":
        return {"kind": "poisson", "rate": rate}
    if kind == "gamma":
        return {
            "kind": "gamma",
            "mean_rate": rate,
            "cv": float(rng.uniform(1.0, 3.0)),
            "interval_s": 1,
        }
    if kind == "bursty":
        f = float(rng.uniform(*cfg.burst_factor))
        period = float(rng.uniform(20.0, 60.0))
        spike = float(rng.uniform(3.0, 0.3 * period))
        base = rate / (1 + (f - 1) * spike / period)
        return {
            "kind": "bursty",
            "base_rate": base,
            "spike_rate": min(base * f, cap),
            "spike_s": spike,
            "period_s": period,
            "offset_s": float(rng.uniform(0.0, period)),
        }
    if kind == "diurnal":
        lo = rate * float(rng.uniform(0.1, 0.6))
        return {
            "kind": "diurnal",
            "min_rate": lo,
            "max_rate": min(2 * rate - lo, cap),
            "period_s": float(rng.uniform(0.5, 1.5)) * duration_s,
        }
    if kind == "step":
        n = int(rng.integers(2, 6))
        rates = [float(x) for x in np.minimum(rate * rng.uniform(0.3, 1.7, n), cap)]
        return {"kind": "step", "rates": rates, "step_s": duration_s / n}
    raise ValueError(f"randomise.kinds: unknown workload kind {kind!r}")


def random_scenario(
    rng: np.random.Generator, cfg: RandomiseConfig, duration_s: float, name: str = "random"
) -> Scenario:
    """Draw one scenario (``duration_s`` long) from the ranges of ``cfg``."""
    n = int(rng.integers(cfg.models[0], cfg.models[1] + 1))
    cores = int(rng.integers(cfg.cores[0], cfg.cores[1] + 1))
    models, workload = [], []
    max_ws = []
    for i in range(n):
        alpha = _log_uniform(rng, *cfg.alpha_ms_log)
        beta = _log_uniform(rng, *cfg.beta_ms_log)
        max_batch = int(rng.choice(cfg.max_batch))
        ref = int(rng.integers(cfg.slo_ref_batch[0], cfg.slo_ref_batch[1] + 1))
        slo = max(cfg.min_slo_ms, float(rng.uniform(*cfg.slo_factor)) * (alpha * ref + beta))
        max_w = int(rng.integers(cfg.max_workers[0], cfg.max_workers[1] + 1))
        max_ws.append(max_w)
        name_i = f"m{i}"
        models.append(
            {
                "name": name_i,
                "slo_ms": round(slo, 1),
                "profile": {"alpha_ms": alpha, "beta_ms": beta},
                "min_workers": 1,
                "max_workers": max_w,
                "max_batch": max_batch,
                "load_delay_s": float(rng.uniform(*cfg.load_delay_s)),
                "exec_cv": float(rng.uniform(*cfg.exec_cv)),
            }
        )
        b = max(1, max_batch // 2)
        share = max(1.0, min(max_w, cores / n))
        capacity = share * b / ((alpha * b + beta) / 1000.0)
        rate = min(float(rng.uniform(*cfg.load)) * capacity, cfg.max_rate_rps)
        kind = str(rng.choice(cfg.kinds))
        workload.append({"model": name_i, **_workload(rng, kind, max(rate, 1.0), cfg, duration_s)})
    budget = int(rng.integers(n, sum(max_ws) + 1))
    return scenario_from_dict(
        {
            "name": name,
            "duration_s": duration_s,
            "seed": int(rng.integers(2**31)),
            "devices": [{"name": "cpu", "cores": cores}],
            "models": models,
            "workload": workload,
            "budget": {"workers": budget},
        }
    )
