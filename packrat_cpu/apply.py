"""Switch a live TorchServe model to a Packrat configuration, with no restart.

A configuration is what one TorchServe model can run: ``workers`` identical instances of
``threads`` intra-op threads on disjoint cores, serving batches of ``batch`` (a *uniform*
Packrat plan). Three knobs change, each through the cheapest live path:

* worker count: the management API (``min_worker = max_worker``, synchronous);
* batch size: the tsadapt plugin (effective at the next batch, no reload);
* threads and cores: the placement file (``placement.py``), applied by each worker's
  handler at its next batch boundary. ``cpu_launcher`` is never used: it restarts every
  worker of the model on each scale call.

Order:

* more workers: placement, then scale up, then batch size. The old workers narrow to their
  slot's cores at their next batch, and each new worker takes its slot's threads and cores
  in ``initialize`` - before it loads and warms up the model - so its start-up work stays
  off the cores that are serving;
* fewer workers: batch size, then drain, then scale down, then placement (survivors widen
  last). The drain (plugin ``POST /adapt/models/{name}/drain?keep=N``) lets the workers the
  scale-down will remove finish their current batch and stop first;
* same count: placement, then batch size.

Without the drain, a TorchServe 0.12 scale-down interrupts the removed worker mid-batch: the
management thread puts its jobs back at the head of the queue (``BatchAggregator.sendError(null,
...)`` -> ``Model.addFirst``) but the worker thread's own clean-up answers the same batch with
"Worker died." (HTTP 500), and whichever runs first wins. ``packrat bench`` measured one such
500 in 934 requests before the drain existed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsadapt import constants as C
from tsadapt.client import TorchServeClient
from tsadapt.handlers.placement import (
    Placement,
    PlacementError,
    core_sets,
    usable_cores,
    write_placement,
)
from tsadapt.packrat_cpu.planner import Plan, PlanError, plan_uniform
from tsadapt.packrat_cpu.profile_table import ProfileTable
from tsadapt.plugin.adapt_client import AdaptClient


class PlanFileError(ValueError):
    """A plan that cannot be applied; the message names the field."""


@dataclass(frozen=True)
class ServingConfig:
    """``workers`` x <``threads`` threads, batch ``batch``>: one uniform Packrat plan."""

    workers: int
    threads: int
    batch: int

    def __post_init__(self) -> None:
        for name in ("workers", "threads", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PlanFileError(f"{name} must be an integer >= 1, got {value!r}")

    def __str__(self) -> str:
        plural = "s" if self.threads > 1 else ""
        return f"{self.workers} x <{self.threads} thread{plural}, batch {self.batch}>"

    def to_json(self) -> dict[str, int]:
        return {"workers": self.workers, "threads": self.threads, "batch": self.batch}

    @classmethod
    def from_plan_json(cls, data: Any) -> ServingConfig:
        """From ``packrat plan --json`` output (uniform) or ``{workers, threads, batch}``."""
        if not isinstance(data, dict):
            raise PlanFileError("a plan must be a JSON object")
        if "instances" not in data:
            missing = [k for k in ("workers", "threads", "batch") if k not in data]
            if missing:
                raise PlanFileError(
                    f"plan lacks 'instances' (packrat plan --json output) and {missing}"
                )
            return cls(data["workers"], data["threads"], data["batch"])
        instances = data["instances"]
        if not isinstance(instances, list) or not instances:
            raise PlanFileError("'instances' must be a non-empty list")
        shapes = set()
        for k, inst in enumerate(instances):
            if not isinstance(inst, dict) or "threads" not in inst or "batch" not in inst:
                raise PlanFileError(f"instances[{k}] must be an object with threads and batch")
            shapes.add((inst["threads"], inst["batch"]))
        if len(shapes) > 1:
            raise PlanFileError(
                "instances: the plan is heterogeneous "
                f"({sorted(shapes)}); one TorchServe model runs one batch size and thread "
                "count: re-plan with 'tsadapt packrat plan --uniform'"
            )
        threads, batch = shapes.pop()
        return cls(len(instances), threads, batch)


def uniform_config(profile: ProfileTable, cores: int, batch: int) -> tuple[ServingConfig, Plan]:
    """The uniform Packrat plan for ``batch`` on ``cores`` as a :class:`ServingConfig`, and
    the plan; :class:`PlanError` when there is none."""
    result = plan_uniform(profile, cores, batch)
    (workers, threads, per_instance), *rest = result.groups
    if rest:
        raise PlanError(
            f"uniform plan for batch {batch} has several shapes: {result.groups}", "batch"
        )
    return ServingConfig(workers, threads, per_instance), result


@dataclass(frozen=True)
class SwitchStep:
    name: str
    seconds: float


@dataclass(frozen=True)
class SwitchReport:
    """What one switch did and how long each step took."""

    model: str
    before_workers: int
    before_batch: int
    after: ServingConfig
    placement: Placement
    steps: tuple[SwitchStep, ...]
    started_wall: float
    total_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "before": {"workers": self.before_workers, "batch": self.before_batch},
            "after": self.after.to_json(),
            "placement": self.placement.to_json(),
            "steps": [{"name": s.name, "seconds": round(s.seconds, 4)} for s in self.steps],
            "started_wall": self.started_wall,
            "total_s": round(self.total_s, 4),
        }


def apply_config(
    client: TorchServeClient,
    adapt: AdaptClient,
    placement_dir: Path,
    model: str,
    target: ServingConfig,
    *,
    cores: Sequence[int] | None = None,
    max_batch_delay_ms: int | None = None,
) -> SwitchReport:
    """Switch ``model`` to ``target`` live; raise before touching anything if it cannot fit."""
    sets = core_sets(target.workers, target.threads, cores if cores else usable_cores())
    described = client.describe(model)
    before_workers = int(described.get("minWorkers", len(described.get("workers", []))))
    before_batch = int(described.get("batchSize", 1))
    steps: list[SwitchStep] = []
    placement: Placement | None = None

    def step(name: str, action: Callable[[], Any]) -> None:
        t0 = time.perf_counter()
        action()
        steps.append(SwitchStep(name, time.perf_counter() - t0))

    def scale() -> None:
        client.scale_workers(model, target.workers, synchronous=True)

    def drain() -> None:
        adapt.drain(model, target.workers, C.DRAIN_TIMEOUT_MS)

    def place() -> None:
        nonlocal placement
        placement = write_placement(placement_dir, model, target.threads, sets)

    def batch() -> None:
        adapt.set_batching(model, batch_size=target.batch, max_batch_delay_ms=max_batch_delay_ms)

    started_wall, t0 = time.time(), time.perf_counter()
    if target.workers > before_workers:
        order = (("placement", place), ("scale_up", scale), ("batch", batch))
    elif target.workers < before_workers:
        order = (("batch", batch), ("drain", drain), ("scale_down", scale), ("placement", place))
    else:
        order = (("placement", place), ("batch", batch))
    for name, action in order:
        step(name, action)
    assert placement is not None  # every order writes the placement
    return SwitchReport(
        model,
        before_workers,
        before_batch,
        target,
        placement,
        tuple(steps),
        started_wall,
        time.perf_counter() - t0,
    )


__all__ = [
    "PlacementError",
    "uniform_config",
    "PlanFileError",
    "ServingConfig",
    "SwitchReport",
    "SwitchStep",
    "apply_config",
]
