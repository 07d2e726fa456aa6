"""Best-static's searches over the named scenarios, several at once.

The search itself (:func:`evaluate.best_static`) is unchanged: each scenario's runs in one
worker process, with the cache of scores it filled returned alongside the configuration, so
budget-static's search reuses it as it does in one process.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from tsadapt.experiments.evaluate import StaticCache, best_static
from tsadapt.policy.sim.scenario import Scenario
from tsadapt.policy.types import ModelSettings

Tuned = tuple[dict[str, ModelSettings], StaticCache]


def _tune(scenario: Scenario) -> Tuned:
    cache: StaticCache = {}
    return best_static(scenario, cache=cache), cache


def tune_best_statics(
    scenarios: Sequence[Scenario],
    processes: int,
    on_done: Callable[[Scenario], None] | None = None,
) -> list[Tuned]:
    """:func:`evaluate.best_static` (tuning seeds) of every scenario, ``processes`` at a
    time, in scenario order; ``on_done(scenario)`` after each."""
    if processes <= 1:
        out = []
        for sc in scenarios:
            out.append(_tune(sc))
            if on_done is not None:
                on_done(sc)
        return out
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=ctx) as pool:
        out = []
        for sc, tuned in zip(scenarios, pool.map(_tune, scenarios), strict=True):
            out.append(tuned)
            if on_done is not None:
                on_done(sc)
        return out
