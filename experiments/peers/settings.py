"""What every peer is configured with, derived from the scenario in one place, and the
settings table of the report (generated from the peers' settings objects).

* Replica / worker caps: each model's ``max_workers``, scaled down so that their sum fits the
  scenario's worker budget (our controllers' guard holds the *total* to the budget; Ray's
  autoscaler has no cross-deployment cap, so the cap is split per model).
* Adaptive batch caps: the ``max_batch`` our controllers are given for the scenario
  (:func:`tsadapt.policy.sim.control.controller_config_for`: the largest batch whose profiled
  execution fits half of the SLO left after the latency outside the worker).
* Queue bound: TorchServe's ``job_queue_size`` of the model's registration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.policy.sim.scenario import Scenario


@dataclass(frozen=True)
class SettingRow:
    """One non-default setting of a peer run, with the library's default and why."""

    run: str
    setting: str
    value: str
    default: str
    reason: str


def check_demo_models(scenario: Scenario) -> None:
    for m in scenario.models:
        if m.name not in DEMO_MODELS:
            raise ValueError(f"models: {m.name!r} is not a demo model ({', '.join(DEMO_MODELS)})")


def replica_caps(scenario: Scenario) -> dict[str, int]:
    """Per model: ``max_workers`` scaled so the sum fits ``budget.workers`` (largest
    remainders get the spare; at least 1 each)."""
    wanted = {m.name: max(1, m.max_workers) for m in scenario.models}
    budget = scenario.budget.workers
    if budget is None or sum(wanted.values()) <= budget:
        return wanted
    total = sum(wanted.values())
    share = {k: v * budget / total for k, v in wanted.items()}
    caps = {k: max(1, math.floor(s)) for k, s in share.items()}
    spare = budget - sum(caps.values())
    for k in sorted(share, key=lambda k: share[k] - math.floor(share[k]), reverse=True):
        if spare <= 0:
            break
        if caps[k] < wanted[k]:
            caps[k] += 1
            spare -= 1
    return caps


def worker_budget(scenario: Scenario) -> int:
    """The scenario's worker budget (the sum of ``max_workers`` when it states none)."""
    b = scenario.budget.workers
    return int(b) if b is not None else sum(max(1, m.max_workers) for m in scenario.models)


def fixed_workers(scenario: Scenario) -> dict[str, int]:
    """Workers per model of TorchServe's ``static`` run (the registration defaults)."""
    return {m.name: max(1, DEMO_MODELS[m.name].min_workers) for m in scenario.models}


def adaptive_batch_caps(scenario: Scenario) -> dict[str, int]:
    """The batch cap our controllers get on ``scenario`` (the SLO-feasible batch)."""
    from tsadapt.policy.sim.control import controller_config_for

    return {lim.name: lim.max_batch for lim in controller_config_for(scenario).models}


def queue_size(model: str) -> int:
    """TorchServe's ``job_queue_size`` of ``model``'s registration."""
    return DEMO_MODELS[model].job_queue_size
