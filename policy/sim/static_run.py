"""Whole-scenario simulation with one fixed configuration per model: a scenario's run
from its first arrival until every admitted request is answered (:func:`run_static`), and
replications of one run pooled into one result (:func:`pool_replications`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tsadapt.policy.sim.metrics import ModelResult, pool, summarize
from tsadapt.policy.sim.scenario import Scenario, reject_unknown, require_mapping
from tsadapt.policy.types import ModelSettings

__all__ = ["SimResult", "pool_replications", "run_static"]


@dataclass(frozen=True)
class SimResult:
    """Outcome of :func:`run_static`: per model and pooled (``overall``)."""

    scenario: str
    seed: int
    duration_s: float
    configs: Mapping[str, ModelSettings]
    per_model: Mapping[str, ModelResult]
    overall: ModelResult
    latencies_ms: Mapping[str, np.ndarray] = field(default_factory=dict)  # answered requests


def _as_config(name: str, c: ModelSettings | Mapping[str, Any]) -> ModelSettings:
    if isinstance(c, ModelSettings):
        return c
    c = require_mapping(f"config[{name}]", c)
    reject_unknown(f"config[{name}]", c, {"batch_size", "max_batch_delay_ms", "workers"})
    try:
        return ModelSettings(**c)
    except ValueError as exc:
        raise ValueError(f"config[{name}]: {exc}") from None


def run_static(
    scenario: Scenario,
    config_per_model: Mapping[str, ModelSettings | Mapping[str, Any]],
    seed: int | None = None,
    replication: int = 0,
) -> SimResult:
    """Simulate the whole scenario with one fixed configuration per model (``replication``:
    the same arrivals, another draw of everything else; see :meth:`Scenario.simulator`).

    Arrivals stop at ``duration_s``; the simulation then runs on until every admitted
    request is answered, so each request is completed, rejected (503) or failed.
    Worker-seconds are counted over ``duration_s``; goodput is per second of it.
    """
    configs = {n: _as_config(n, c) for n, c in config_per_model.items()}
    scenario.check_config(configs)
    seed = scenario.seed if seed is None else seed
    sim = scenario.simulator(configs, seed, replication)
    main = sim.run_until(scenario.duration_s)
    tail = sim.run_until(math.inf)
    per: dict[str, ModelResult] = {}
    lats = []
    by_model: dict[str, np.ndarray] = {}
    for m in scenario.models:
        a, b = main[m.name], tail[m.name]
        lat = np.concatenate([a.latencies_ms, b.latencies_ms])
        lats.append(lat)
        by_model[m.name] = lat
        batches = a.batches + b.batches
        per[m.name] = summarize(
            m.name,
            lat,
            m.slo_ms,
            a.arrivals + b.arrivals,
            scenario.duration_s,
            rejected=a.rejected + b.rejected,
            failed=a.failed + b.failed,
            worker_seconds=a.worker_s,
            busy_worker_seconds=a.busy_worker_s + b.busy_worker_s,
            mean_batch_size=(a.batch_size_sum + b.batch_size_sum) / batches if batches else 0.0,
        )
    overall = pool(per.values(), lats, scenario.duration_s)
    return SimResult(scenario.name, seed, scenario.duration_s, configs, per, overall, by_model)


def _per_replication(total: ModelResult, k: int) -> ModelResult:
    """A result summed over ``k`` replications with its counts and worker-seconds back to
    one replication's (their mean); rates, attainment and percentiles stay pooled."""
    return replace(
        total,
        requests=round(total.requests / k),
        completed=round(total.completed / k),
        rejected=round(total.rejected / k),
        failed=round(total.failed / k),
        good=round(total.good / k),
        worker_seconds=total.worker_seconds / k,
        busy_worker_seconds=total.busy_worker_seconds / k,
    )


def pool_replications(results: Sequence[SimResult]) -> SimResult:
    """Replications of one run (same arrivals, other draws of the rest) as one result:
    p50/p99, SLO attainment and goodput over every replication's requests; counts and
    worker-seconds per replication (their mean). The first result's identity is kept."""
    if not results:
        raise ValueError("no replications to pool")
    first, k = results[0], len(results)
    totals: dict[str, ModelResult] = {}
    lats: dict[str, np.ndarray] = {}
    for name, one in first.per_model.items():
        rs = [r.per_model[name] for r in results]
        lats[name] = np.concatenate([r.latencies_ms[name] for r in results])
        totals[name] = summarize(
            name,
            lats[name],
            one.slo_ms if one.slo_ms is not None else math.inf,
            sum(r.requests for r in rs),
            k * first.duration_s,
            rejected=sum(r.rejected for r in rs),
            failed=sum(r.failed for r in rs),
            worker_seconds=sum(r.worker_seconds for r in rs),
            busy_worker_seconds=sum(r.busy_worker_seconds for r in rs),
            mean_batch_size=float(np.mean([r.mean_batch_size for r in rs])),
        )
    overall = pool(totals.values(), lats.values(), k * first.duration_s)
    return replace(
        first,
        per_model={n: _per_replication(t, k) for n, t in totals.items()},
        overall=_per_replication(overall, k),
        latencies_ms=lats,
    )
