"""What the controller sees and does: frozen dataclasses shared by policies, guards, the sidecar
and (later) the Gym environment.

Units: milliseconds for latencies and delays, requests per second for rates, seconds for times.
A value that could not be measured in a window (no requests, no batches) is ``math.nan``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from numbers import Integral, Real
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from tsadapt.policy.defaults import BATCH_SIZE, MAX_BATCH_DELAY_MS

SETTING_FIELDS = ("batch_size", "max_batch_delay_ms", "workers")
#: The share of requests above the p99: more shed or failed than this puts the p99 past any SLO.
P99_SHARE = 0.01


def _whole(name: str, value: object, low: int) -> int:
    """``value`` as an int >= ``low``; a float is accepted only when it is whole (20.0)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(value, Integral) and not float(value).is_integer():
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not value >= low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ModelSettings:
    """How a model is served: the one settings type of the controller, the simulator, the
    sidecar and the real server (the plugin takes whole milliseconds, so the delay is one).

    Other representations (the plugin's wire format, a simulator's internal seconds) are
    built from it at the edge that needs them.
    """

    batch_size: int = BATCH_SIZE
    max_batch_delay_ms: int = MAX_BATCH_DELAY_MS
    workers: int = 1

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("max_batch_delay_ms", 0), ("workers", 0)):
            object.__setattr__(self, name, _whole(name, getattr(self, name), low))

    def as_dict(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in SETTING_FIELDS}


@dataclass(frozen=True)
class ModelObservation:
    """One model over the last observation window."""

    name: str
    slo_ms: float
    settings: ModelSettings
    arrival_rate_rps: float
    completion_rate_rps: float
    queue_depth: int
    oldest_queued_age_ms: float
    requests_in_window: int
    slo_attainment: float
    p50_ms: float
    p99_ms: float
    mean_latency_ms: float
    batch_fill_rate: float
    mean_batch_size: float
    #: Share of the window's requests the server shed or failed (5xx; a client's 4xx aside).
    error_rate: float = math.nan

    @property
    def shedding(self) -> bool:
        """Over :data:`P99_SHARE` of the window's requests shed or failed: the model is turning
        work away, which more capacity (a bigger batch, a worker) answers; False when unknown."""
        return self.error_rate > P99_SHARE

    @property
    def slo_violated(self) -> bool:
        """The window's p99 over the SLO, a shed or failed request counting as later than any
        SLO: over 1 % of requests shed or failed (a full job queue answers 503 while the
        requests it does serve may all be in time), or the p99 of the served ones over it.
        False when there is no p99 in the window."""
        if math.isnan(self.p99_ms):
            return False
        return self.shedding or self.p99_ms > self.slo_ms


@dataclass(frozen=True)
class GpuObservation:
    index: int
    utilisation_pct: float
    memory_used_mb: float
    memory_total_mb: float

    @property
    def memory_free_mb(self) -> float:
        return self.memory_total_mb - self.memory_used_mb


@dataclass(frozen=True)
class HostObservation:
    cpu_utilisation_pct: float
    memory_used_pct: float
    gpus: tuple[GpuObservation, ...] = ()


@dataclass(frozen=True)
class Observation:
    """Everything observed at one tick; ``time_s`` is the controller clock (monotonic)."""

    time_s: float
    window_s: float
    models: tuple[ModelObservation, ...]
    host: HostObservation

    def model(self, name: str) -> ModelObservation:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no observation of model '{name}'")

    @property
    def total_workers(self) -> int:
        return sum(m.settings.workers for m in self.models)


@dataclass(frozen=True)
class Action:
    """A change for one model; ``None`` leaves that setting as it is."""

    model: str
    batch_size: int | None = None
    max_batch_delay_ms: int | None = None
    workers: int | None = None

    def changes(self, current: ModelSettings) -> dict[str, int]:
        """The settings this action would really change (no-ops left out)."""
        out = {}
        for f in SETTING_FIELDS:
            value = getattr(self, f)
            if value is not None and value != getattr(current, f):
                out[f] = value
        return out

    def is_noop(self, current: ModelSettings) -> bool:
        return not self.changes(current)

    def apply_to(self, current: ModelSettings) -> ModelSettings:
        return replace(current, **self.changes(current))

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def frozen_map(values: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only copy of ``values`` (for state inside frozen dataclasses)."""
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True)
class PolicyState:
    """What a policy carries from one tick to the next; each policy reads only its own keys.

    ``memory`` maps model name -> a policy-defined frozen value (EWMA rates, counters, or a
    learned policy's recurrent state).
    """

    tick: int = 0
    memory: Mapping[str, Any] = field(default_factory=frozen_map)

    def next(self, memory: Mapping[str, Any] | None = None) -> PolicyState:
        return PolicyState(self.tick + 1, frozen_map(self.memory if memory is None else memory))


Decision = tuple[tuple[Action, ...], PolicyState]


@runtime_checkable
class Policy(Protocol):
    """A decision rule: pure, no I/O; a learned (PPO) policy object fits the same shape."""

    name: str

    def decide(self, observation: Observation, state: PolicyState) -> Decision: ...


def settings_of(observation: Observation) -> dict[str, ModelSettings]:
    return {m.name: m.settings for m in observation.models}
