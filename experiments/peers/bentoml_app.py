"""The BentoML 1.4 peer: its settings per mode (no BentoML import here) and the server
process (``bentoml serve`` of ``bentoml_service``, started and stopped by the bench).

Two modes, every setting away from BentoML's defaults a field here and a row of the report's
settings table (:func:`setting_rows`, with the default and the reason):

* ``fixed`` (against TorchServe's ``static``): adaptive batching off, as many worker
  processes as TorchServe static runs workers (one per model);
* ``adaptive`` (against our controllers): BentoML's adaptive batching as documented
  (``batchable=True``) with ``max_batch_size`` = the batch cap our controllers get on the
  scenario and ``max_latency_ms`` = the model's SLO, and as many worker processes as the
  scenario's worker budget.

Both: one request in flight per worker at a time in the model (``threads=1``, BentoML's
default), and at most TorchServe's queue bound in the service (``max_concurrency``: the sum
of the models' ``job_queue_size``); the request timeout is the bench's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tsadapt.experiments.bench_schedule import REQUEST_TIMEOUT_S
from tsadapt.experiments.peers.settings import (
    SettingRow,
    adaptive_batch_caps,
    check_demo_models,
    fixed_workers,
    queue_size,
    worker_budget,
)
from tsadapt.policy.sim.scenario import Scenario

MODES = ("fixed", "adaptive")
ENV_SCENARIO = "TSADAPT_BENTO_SCENARIO"
ENV_MODE = "TSADAPT_BENTO_MODE"
SERVICE = "tsadapt.experiments.peers.bentoml_service:Models"
#: BentoML 1.4's documented defaults of the settings this module changes.
BENTO_DEFAULTS = {
    "workers": "1",
    "threads": "1",
    "traffic.max_concurrency": "none (unbounded)",
    "traffic.timeout": "60",
    "batchable": "False",
    "max_batch_size": "100",
    "max_latency_ms": "60000",
}


@dataclass(frozen=True)
class BentoApi:
    """One model's API."""

    model: str
    batchable: bool
    max_batch_size: int
    max_latency_ms: int


@dataclass(frozen=True)
class BentoSettings:
    """The service's settings in one mode."""

    mode: str
    workers: int
    max_concurrency: int
    timeout_s: float
    apis: dict[str, BentoApi] = field(default_factory=dict)

    def service_options(self) -> dict:
        return {
            "workers": self.workers,
            "threads": 1,
            "traffic": {"timeout": self.timeout_s, "max_concurrency": self.max_concurrency},
        }


def bento_settings(scenario: Scenario, mode: str) -> BentoSettings:
    """The service's settings for ``scenario`` in ``mode``."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    check_demo_models(scenario)
    adaptive = mode == "adaptive"
    caps = adaptive_batch_caps(scenario)
    apis = {
        m.name: BentoApi(m.name, adaptive, caps[m.name], int(m.slo_ms)) for m in scenario.models
    }
    workers = worker_budget(scenario) if adaptive else sum(fixed_workers(scenario).values())
    return BentoSettings(
        mode=mode,
        workers=workers,
        max_concurrency=sum(queue_size(m.name) for m in scenario.models),
        timeout_s=REQUEST_TIMEOUT_S,
        apis=apis,
    )


def setting_rows(run: str, s: BentoSettings) -> list[SettingRow]:
    """The settings table's rows of one BentoML run (every setting away from the default)."""

    def per_model(f) -> str:  # noqa: ANN001
        return ", ".join(f"{a.model} {f(a)}" for a in s.apis.values())

    rows = [
        ("workers", str(s.workers),
         "the scenario's worker budget" if s.mode == "adaptive" else
         "TorchServe static's workers (one per model); each worker serves every model"),
        ("traffic.max_concurrency", str(s.max_concurrency),
         "TorchServe's job_queue_size summed over the models: a bounded backlog"),
        ("traffic.timeout", f"{s.timeout_s:.0f}", "the bench's request timeout"),
    ]  # fmt: skip
    if s.mode == "adaptive":
        rows += [
            ("batchable", "True", "BentoML's adaptive batching, as documented"),
            ("max_batch_size", per_model(lambda a: a.max_batch_size),
             "the batch cap our controllers get on this scenario (SLO-feasible batch)"),
            ("max_latency_ms", per_model(lambda a: a.max_latency_ms), "the model's SLO"),
        ]  # fmt: skip
    return [SettingRow(run, k, v, BENTO_DEFAULTS[k], why) for k, v, why in rows]


def server_env(scenario_path: str, mode: str) -> dict[str, str]:
    """Environment of ``bentoml serve`` (its workers read the scenario and mode from it)."""
    return {
        **os.environ,
        ENV_SCENARIO: str(scenario_path),
        ENV_MODE: mode,
        "BENTOML_DO_NOT_TRACK": "True",
        "BENTOML_HOME": os.environ.get("BENTOML_HOME", os.path.expanduser("~/.cache/bentoml")),
    }
