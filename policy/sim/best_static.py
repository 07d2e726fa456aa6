"""Best-static: the best *fixed* configuration of a scenario, found by coordinate search in
the simulator (:func:`best_static`), and its run as a ``simulate --json``-shaped row
(:func:`static_result`). Best = highest mean goodput over the tuning seeds, and among those
within ``GOODPUT_TIE_RPS`` of it, the fewest worker-seconds. ``tsadapt lab evaluate`` and
``tsadapt train --scenario`` compare the policies with it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tsadapt.policy.defaults import TUNING_SEEDS
from tsadapt.policy.sim.scenario import ModelEntry, Scenario
from tsadapt.policy.sim.static_run import run_static
from tsadapt.policy.types import ModelSettings

#: Goodput differences up to this (rps; half the tables' resolution) are ties, not wins.
GOODPUT_TIE_RPS = 0.05
STATIC_BATCHES = (1, 2, 4, 6, 8, 10, 12, 16, 24, 32, 48, 64)
STATIC_DELAYS_MS = (0, 2, 5, 10, 20, 30)
#: Coordinate-search passes over the models at most (a pass that changes nothing ends it).
STATIC_PASSES = 2
#: Worker allocations the search tries as its start when there are at most this many.
MAX_START_ALLOCATIONS = 64


def static_result(
    scenario: Scenario, configs: Mapping[str, ModelSettings], seed: int, policy: str = "best-static"
) -> dict[str, Any]:
    r = run_static(scenario, configs, seed)

    def one(x: Any) -> dict[str, Any]:
        return {
            "slo_attainment": x.slo_attainment,
            "goodput_rps": x.goodput_rps,
            "p50_ms": x.p50_ms,
            "p99_ms": x.p99_ms,
            "worker_seconds": x.worker_seconds,
            "reconfigurations": 0,
            "requests": x.requests,
            "rejected": x.rejected,
            "failed": x.failed,
            "mean_batch_size": x.mean_batch_size,
        }

    out = {
        "scenario": scenario.name,
        "policy": policy,
        "seed": seed,
        "duration_s": scenario.duration_s,
        "guard_overrides": 0,
        "static_configs": {n: vars(c) for n, c in configs.items()},
    }
    out.update(one(r.overall))
    out["models"] = {n: one(x) for n, x in r.per_model.items()}
    return out


def static_candidates(model: ModelEntry) -> list[ModelSettings]:
    """Every fixed (batch, delay, workers) the search tries for one scenario model."""
    batches = sorted({b for b in STATIC_BATCHES if b <= model.max_batch} | {model.max_batch})
    workers = range(max(1, model.min_workers), model.max_workers + 1)
    return [ModelSettings(b, d, w) for b in batches for d in STATIC_DELAYS_MS for w in workers]


def worker_allocations(scenario: Scenario, budget: int | None = None) -> list[dict[str, int]]:
    """Every workers-per-model choice within the limits and the budget (default: the
    scenario's; none if too many)."""
    budget = scenario.budget.workers if budget is None else budget
    ranges = [range(max(1, m.min_workers), m.max_workers + 1) for m in scenario.models]
    if math.prod(len(r) for r in ranges) > MAX_START_ALLOCATIONS:
        return []
    return [
        dict(zip(scenario.model_names, ws, strict=True))
        for ws in itertools.product(*ranges)
        if sum(ws) <= budget
    ]


def static_search_size(scenario: Scenario, seeds: Sequence[int] = TUNING_SEEDS) -> int:
    """Simulator runs :func:`best_static` stands for (the total its ``on_step`` reports)."""
    per_pass = sum(len(static_candidates(m)) for m in scenario.models)
    return (len(worker_allocations(scenario)) + 2 * STATIC_PASSES * per_pass) * len(seeds)


def improves(goodput: float, worker_s: float, best_goodput: float, best_worker_s: float) -> bool:
    """Best-static's rule: more goodput by more than a tie, or tied and fewer worker-seconds."""
    if goodput > best_goodput + GOODPUT_TIE_RPS:
        return True
    return goodput >= best_goodput - GOODPUT_TIE_RPS and worker_s < best_worker_s


#: Mean (goodput, worker-seconds) of a fixed configuration over the tuning seeds, by config.
StaticCache = dict[tuple[tuple[str, ModelSettings], ...], tuple[float, float]]


def best_static(
    scenario: Scenario,
    seeds: Sequence[int] = TUNING_SEEDS,
    on_step: Callable[[int], None] | None = None,
    worker_cap: int | None = None,
    cache: StaticCache | None = None,
) -> dict[str, ModelSettings]:
    """Coordinate search over (batch, delay, workers), one model at a time, within the budget
    (the scenario's, or ``worker_cap`` workers in all when that is lower).

    A configuration scores its mean goodput and mean worker-seconds over ``seeds`` and
    replaces the best so far when it :func:`improves` on it; a search makes at most
    :data:`STATIC_PASSES` passes over the models, ending after a pass that changes nothing.
    Two searches run, and the better result is kept: one from the fewest workers, one from
    the best worker allocation (:func:`worker_allocations`, each at batch 8 and 10 ms delay),
    because one model at a time cannot move a worker between two models once the budget is
    full, and a start with more workers may not find its way back to fewer.
    ``on_step(n)`` reports ``n`` more of the :func:`static_search_size` runs done
    (over-budget and cached candidates, and the passes or search an early end skips, count).
    ``cache`` (scores by configuration, for these ``seeds``) may be shared between searches.
    """
    cache = {} if cache is None else cache
    budget = (
        scenario.budget.workers if worker_cap is None else min(worker_cap, scenario.budget.workers)
    )
    if sum(max(1, m.min_workers) for m in scenario.models) > budget:
        raise ValueError(f"worker_cap: {worker_cap} workers are fewer than the models' minimum")
    candidates = {m.name: static_candidates(m) for m in scenario.models}
    per_pass = sum(len(c) for c in candidates.values()) * len(seeds)

    def score(cfgs: Mapping[str, ModelSettings]) -> tuple[float, float]:
        key = tuple(sorted(cfgs.items()))
        if key not in cache:
            runs = [run_static(scenario, cfgs, s).overall for s in seeds]
            cache[key] = (
                float(np.mean([r.goodput_rps for r in runs])),
                float(np.mean([r.worker_seconds for r in runs])),
            )
        return cache[key]

    def report(n: int) -> None:
        if on_step is not None and n > 0:
            on_step(n)

    def start(workers: Mapping[str, int]) -> dict[str, ModelSettings]:
        return {
            m.name: ModelSettings(min(8, m.max_batch), 10, workers[m.name]) for m in scenario.models
        }

    def search(cur: dict[str, ModelSettings]) -> dict[str, ModelSettings]:
        best_g, best_w = score(cur)
        for done in range(1, STATIC_PASSES + 1):
            changed = False
            for name, model_candidates in candidates.items():
                for c in model_candidates:
                    trial = {**cur, name: c}
                    if sum(x.workers for x in trial.values()) <= budget:
                        g, ws = score(trial)
                        if improves(g, ws, best_g, best_w):
                            cur, best_g, best_w, changed = trial, g, ws, True
                    report(len(seeds))
            if not changed:
                report((STATIC_PASSES - done) * per_pass)
                break
        return cur

    fewest = start({m.name: max(1, m.min_workers) for m in scenario.models})
    allocated = fewest
    for workers in worker_allocations(scenario, budget):
        trial = start(workers)
        if improves(*score(trial), *score(allocated)):
            allocated = trial
        report(len(seeds))
    best = search(fewest)
    if allocated == fewest:
        report(STATIC_PASSES * per_pass)
        return best
    other = search(allocated)
    return other if improves(*score(other), *score(best)) else best
