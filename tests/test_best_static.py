"""``best_static``: the fixed configuration that every policy is compared with.

The search must find what an exhaustive one finds on a single model (within its tie rule),
buy a second worker only when it pays in goodput, keep to the worker budget, and report
exactly :func:`static_search_size` runs of progress.
"""

from __future__ import annotations

import numpy as np
import pytest

from tsadapt.experiments.evaluate import (
    GOODPUT_TIE_RPS,
    TUNING_SEEDS,
    best_static,
    improves,
    static_candidates,
    static_search_size,
    worker_allocations,
)
from tsadapt.policy.sim.scenario import Scenario, scenario_from_dict
from tsadapt.policy.sim.static_run import run_static
from tsadapt.policy.types import ModelSettings


def models_on_host(rates: dict[str, float], cores: int, budget: int) -> Scenario:
    """One model per ``rates`` entry (latency 4b + 6 ms, SLO 80 ms, 1-2 workers, Poisson)."""
    model = {"slo_ms": 80, "profile": {"alpha_ms": 4, "beta_ms": 6}, "max_batch": 16}
    return scenario_from_dict(
        {
            "name": "host",
            "duration_s": 10,
            "seed": 1,
            "devices": [{"name": "cpu", "cores": cores}],
            "models": [{"name": n, "min_workers": 1, "max_workers": 2, **model} for n in rates],
            "workload": [{"model": n, "kind": "poisson", "rate": r} for n, r in rates.items()],
            "budget": {"workers": budget},
        }
    )


def one_model(rate: float, budget: int = 2) -> Scenario:
    """Model ``m`` alone on two cores."""
    return models_on_host({"m": rate}, cores=2, budget=budget)


def two_models(rate_a: float, rate_b: float, budget: int = 3) -> Scenario:
    """Models ``a`` and ``b`` on four cores, sharing ``budget``."""
    return models_on_host({"a": rate_a, "b": rate_b}, cores=4, budget=budget)


def mean_goodput(scenario: Scenario, configs: dict[str, ModelSettings]) -> float:
    return float(
        np.mean([run_static(scenario, configs, s).overall.goodput_rps for s in TUNING_SEEDS])
    )


def test_single_model_search_is_as_good_as_exhaustive() -> None:
    sc = one_model(rate=400.0)
    chosen = best_static(sc)
    best = mean_goodput(sc, chosen)
    everything = [mean_goodput(sc, {"m": c}) for c in static_candidates(sc.models[0])]
    # each tie-break towards fewer workers may give up at most one tie's worth of goodput
    worker_counts = len({c.workers for c in static_candidates(sc.models[0])})
    assert max(everything) <= best + GOODPUT_TIE_RPS * worker_counts
    # 400 req/s at 10 ms per request unbatched: only batching meets the load
    assert chosen["m"].batch_size > 1


@pytest.mark.parametrize(
    ("rate", "workers"),
    [
        (30.0, 1),  # light: a second worker adds nothing, so the fewer worker-seconds win
        (700.0, 2),  # beyond one worker's best batch (~220 req/s at 16): two are needed
    ],
)
def test_second_worker_only_when_it_pays(rate: float, workers: int) -> None:
    assert best_static(one_model(rate))["m"].workers == workers


def test_keeps_to_the_worker_budget() -> None:
    assert best_static(one_model(700.0, budget=1))["m"].workers == 1


def test_progress_reaches_the_search_size() -> None:
    sc = one_model(rate=100.0)
    done: list[int] = []
    best_static(sc, on_step=done.append)
    assert all(n > 0 for n in done)
    assert sum(done) == static_search_size(sc)


@pytest.mark.parametrize(
    ("goodput", "worker_s", "expected"),
    [
        (100.0 + 2 * GOODPUT_TIE_RPS, 200.0, True),  # more goodput, even with more workers
        (100.0 + GOODPUT_TIE_RPS / 2, 100.0, False),  # a tie with the same workers: keep
        (100.0 - GOODPUT_TIE_RPS / 2, 50.0, True),  # a tie with fewer worker-seconds
        (100.0 - 2 * GOODPUT_TIE_RPS, 50.0, False),  # fewer workers, but less goodput
        (100.0 + GOODPUT_TIE_RPS / 2, 150.0, False),  # a tie that costs more workers
    ],
)
def test_improves(goodput: float, worker_s: float, expected: bool) -> None:
    assert improves(goodput, worker_s, 100.0, 100.0) is expected


def test_worker_allocations_keep_to_limits_and_budget() -> None:
    assert worker_allocations(two_models(1.0, 1.0, budget=3)) == [
        {"a": 1, "b": 1},
        {"a": 1, "b": 2},
        {"a": 2, "b": 1},
    ]
    assert worker_allocations(two_models(1.0, 1.0, budget=2)) == [{"a": 1, "b": 1}]


def test_the_spare_worker_goes_where_it_pays_most() -> None:
    # a gains a little from a second worker, b gains a lot; the budget has room for one.
    # Tuning a first (it comes first) would take the worker and leave b stuck without it.
    chosen = best_static(two_models(rate_a=180.0, rate_b=380.0))
    assert (chosen["a"].workers, chosen["b"].workers) == (1, 2)
