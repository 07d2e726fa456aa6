"""Randomised training scenarios: model mixes, latency profiles, SLOs, rates and burstiness.

Each draw is an ordinary :class:`~tsadapt.policy.sim.scenario.Scenario` built through
``scenario_from_dict`` (so it is validated like a YAML file), from a numpy Generator.

Two families: the general one (:func:`random_scenario`: any mix, any budget), and, with
probability ``shared_budget_prob``, the multi-tenant one (:func:`shared_budget_scenario`):
models whose periodic peaks take turns, each peak needing a second worker, on a budget
with exactly one spare worker. In the general family a binding budget with turn-taking
demand is rare, so a policy learns little about handing a worker from one model to another.

Workload kinds (``randomise.kinds``): ``poisson``, ``bursty``, ``diurnal``, ``step``,
``gamma`` (inter-arrival CV from ``gamma_cv``), and two like production traffic, both an
``mmpp`` workload: ``onoff`` (short random bursts and near silence between them: the
inter-arrival CV reaches 10 and more) and ``swing`` (a low and a high rate up to 12x apart,
each held for tens of seconds). With ``overhead_prob`` a model also gets latency outside
the worker (:func:`outside_latency`), as ``simulation-calibrated`` scenarios do.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.constants import REPO_DIR
from tsadapt.policy.learn.train_config import RandomiseConfig
from tsadapt.policy.sim.control import slo_feasible_batch
from tsadapt.policy.sim.scenario import Scenario, read_calibration, scenario_from_dict
from tsadapt.policy.sim.specs import LatencyModel


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def random_workload(
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
            "cv": float(rng.uniform(*cfg.gamma_cv)),
            "interval_s": 1,
        }
    if kind == "onoff":
        share = float(rng.uniform(*cfg.onoff_on_share))
        mean_on = _log_uniform(rng, *cfg.onoff_mean_on_s)
        off = rate * float(rng.uniform(*cfg.onoff_off_share))
        on = min((rate - off * (1 - share)) / share, cfg.max_burst_rps)
        return {
            "kind": "mmpp",
            "rates": [on, off],
            "mean_hold_s": [mean_on, mean_on * (1 - share) / share],
            "seed": int(rng.integers(2**31)),
        }
    if kind == "swing":
        ratio = float(rng.uniform(*cfg.swing_ratio))
        low = 2 * rate / (1 + ratio)
        hold = float(rng.uniform(*cfg.swing_hold_s))
        return {
            "kind": "mmpp",
            "rates": [low, min(low * ratio, cap)],
            "mean_hold_s": [hold, hold],
            "seed": int(rng.integers(2**31)),
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


@lru_cache(maxsize=4)
def _overhead_tables(path: str) -> tuple[tuple[float, ...], ...]:
    """The calibrated models' ``overhead_quantiles_ms`` of a calibration file."""
    p = Path(path) if Path(path).is_absolute() else REPO_DIR / path
    entries = read_calibration(p)
    tables = tuple(
        tuple(float(x) for x in e["overhead_quantiles_ms"])
        for _, e in sorted(entries.items())
        if "overhead_quantiles_ms" in e
    )
    if not tables:
        raise ValueError(f"randomise.overhead_calibration: {p} has no overhead_quantiles_ms")
    return tables


def outside_latency(
    rng: np.random.Generator, cfg: RandomiseConfig, slo_ms: float
) -> list[float] | None:
    """``overhead_quantiles_ms`` for a model of SLO ``slo_ms`` (None: no outside latency):
    a calibrated model's table x a log-uniform scale, its p99 at most
    ``overhead_max_slo_share`` x the SLO. Draws nothing when ``overhead_prob`` is 0."""
    if cfg.overhead_prob <= 0 or rng.random() >= cfg.overhead_prob:
        return None
    tables = _overhead_tables(cfg.overhead_calibration)
    q = np.asarray(tables[int(rng.integers(len(tables)))])
    scale = _log_uniform(rng, *cfg.overhead_scale_log)
    p99 = float(np.quantile(q, 0.99))
    if p99 > 0:
        scale = min(scale, cfg.overhead_max_slo_share * slo_ms / p99)
    return [round(float(x), 3) for x in q * scale]


def _model(rng: np.random.Generator, cfg: RandomiseConfig, name: str) -> dict[str, Any]:
    """A model of ``scenario_from_dict``: latency profile, SLO, limits, drawn from ``cfg``."""
    alpha = _log_uniform(rng, *cfg.alpha_ms_log)
    beta = _log_uniform(rng, *cfg.beta_ms_log)
    max_batch = int(rng.choice(cfg.max_batch))
    ref = int(rng.integers(cfg.slo_ref_batch[0], cfg.slo_ref_batch[1] + 1))
    slo = max(cfg.min_slo_ms, float(rng.uniform(*cfg.slo_factor)) * (alpha * ref + beta))
    max_w = int(rng.integers(cfg.max_workers[0], cfg.max_workers[1] + 1))
    overhead = outside_latency(rng, cfg, slo)
    extra = {} if overhead is None else {"overhead_quantiles_ms": overhead}
    return extra | {
        "name": name,
        "slo_ms": round(slo, 1),
        "profile": {"alpha_ms": alpha, "beta_ms": beta},
        "min_workers": 1,
        "max_workers": max_w,
        "max_batch": max_batch,
        "load_delay_s": float(rng.uniform(*cfg.load_delay_s)),
        "exec_cv": float(rng.uniform(*cfg.exec_cv)),
    }


def one_worker_capacity_rps(model: dict[str, Any]) -> float:
    """Requests/s one worker serves at :func:`sim_control.slo_feasible_batch` (the largest
    batch taking at most half the SLO)."""
    latency = LatencyModel(model["profile"]["alpha_ms"], model["profile"]["beta_ms"])
    b = slo_feasible_batch(latency, model["slo_ms"], model["max_batch"])
    return b / (float(latency.batch_ms(b)) / 1000.0)


def shared_budget_scenario(
    rng: np.random.Generator, cfg: RandomiseConfig, duration_s: float, name: str = "shared"
) -> Scenario:
    """2-3 models on one core each plus one spare; their peaks take turns needing it.

    Every model's workload is periodic (bursty or diurnal) with the same period and its
    peak centred at its own phase, the phases spread evenly over the period; each peak is
    1.2-1.8x what one worker serves, each trough 0.15-0.5x. The budget is one worker per
    model plus one.
    """
    n = int(rng.integers(2, 4))
    period = float(rng.uniform(0.35, 0.85)) * duration_s
    models, workload = [], []
    for i in range(n):
        model = _model(rng, cfg, f"m{i}")
        model["max_workers"] = max(2, model["max_workers"])  # room for the spare worker
        peak_factor = float(rng.uniform(1.2, 1.8))
        slower = peak_factor * one_worker_capacity_rps(model) / cfg.max_rate_rps
        if slower > 1:  # a slower device (latency and SLO x slower) keeps peaks in the rate cap
            p = model["profile"]
            model["profile"] = {
                "alpha_ms": p["alpha_ms"] * slower,
                "beta_ms": p["beta_ms"] * slower,
            }
            model["slo_ms"] = round(model["slo_ms"] * slower, 1)
        cap = one_worker_capacity_rps(model)
        peak = peak_factor * cap
        low = float(rng.uniform(0.15, 0.5)) * cap
        centre = (i / n + float(rng.uniform(-0.05, 0.05))) * period  # of this model's peak
        models.append(model)
        if rng.random() < 0.5:
            spike = float(rng.uniform(0.5, 1.0)) * period / n
            w = {"kind": "bursty", "base_rate": low, "spike_rate": peak, "spike_s": spike}
            offset = centre - 0.5 * spike
        else:  # the diurnal peak is half a period after its offset
            w = {"kind": "diurnal", "min_rate": low, "max_rate": peak}
            offset = centre - 0.5 * period
        workload.append(
            {"model": model["name"], **w, "period_s": period, "offset_s": offset % period}
        )
    d = {
        "name": name,
        "duration_s": duration_s,
        "seed": int(rng.integers(2**31)),
        "devices": [{"name": "cpu", "cores": n + 1}],
        "models": models,
        "workload": workload,
        "budget": {"workers": n + 1},
    }
    return scenario_from_dict(with_cpu_scale(rng, cfg, d))


def with_cpu_scale(rng: np.random.Generator, cfg: RandomiseConfig, d: dict) -> dict:
    """``d`` with its device's ``cpu_scale`` drawn from ``cfg.cpu_scale_log`` (the last draw
    of a scenario; none when the range is one value)."""
    lo, hi = cfg.cpu_scale_log
    scale = lo if lo == hi else float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    if scale != 1.0:
        d["devices"] = [{**dev, "cpu_scale": scale} for dev in d["devices"]]
    return d


def random_scenario(
    rng: np.random.Generator, cfg: RandomiseConfig, duration_s: float, name: str = "random"
) -> Scenario:
    """Draw one scenario (``duration_s`` long) from the ranges of ``cfg``."""
    if cfg.shared_budget_prob > 0 and rng.random() < cfg.shared_budget_prob:
        return shared_budget_scenario(rng, cfg, duration_s, f"{name}-shared")
    n = int(rng.integers(cfg.models[0], cfg.models[1] + 1))
    cores = int(rng.integers(cfg.cores[0], cfg.cores[1] + 1))
    models, workload = [], []
    for i in range(n):
        model = _model(rng, cfg, f"m{i}")
        models.append(model)
        max_w, max_batch = model["max_workers"], model["max_batch"]
        alpha, beta = model["profile"]["alpha_ms"], model["profile"]["beta_ms"]
        b = max(1, max_batch // 2)
        share = max(1.0, min(max_w, cores / n))
        capacity = share * b / ((alpha * b + beta) / 1000.0)
        rate = min(float(rng.uniform(*cfg.load)) * capacity, cfg.max_rate_rps)
        if cfg.kind_weights:
            w = np.asarray(cfg.kind_weights, dtype=np.float64)
            kind = str(rng.choice(cfg.kinds, p=w / w.sum()))
        else:
            kind = str(rng.choice(cfg.kinds))
        w = random_workload(rng, kind, max(rate, 1.0), cfg, duration_s)
        workload.append({"model": model["name"], **w})
    budget = int(rng.integers(n, sum(m["max_workers"] for m in models) + 1))
    d = {
        "name": name,
        "duration_s": duration_s,
        "seed": int(rng.integers(2**31)),
        "devices": [{"name": "cpu", "cores": cores}],
        "models": models,
        "workload": workload,
        "budget": {"workers": budget},
    }
    return scenario_from_dict(with_cpu_scale(rng, cfg, d))
