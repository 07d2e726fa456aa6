"""What the simulator is given and what it reports: a model's batch latency
(:class:`LatencyModel`, whose home is :mod:`tsadapt.profile`), the devices workers share
(:class:`DeviceSpec`), a served model's profile, limits and initial configuration
(:class:`ModelSpec`), and one model's figures over an interval (:class:`IntervalStats`).
The semantics are in
:mod:`tsadapt.policy.sim.simulator`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tsadapt.policy.defaults import (
    DEFAULT_DEVICE,
    JOB_QUEUE_SIZE,
    LOAD_DELAY_S,
    MAX_BATCH_LIMIT,
    WORKER_THREADS,
)
from tsadapt.policy.types import ModelSettings
from tsadapt.profile import LatencyModel

__all__ = [
    "DeviceSpec",
    "IntervalStats",
    "LatencyModel",
    "ModelSpec",
]


@dataclass(frozen=True)
class DeviceSpec:
    """A device shared by workers; ``capacity`` threads run at full speed (CPU cores).

    ``interference`` (a GPU with slots, see :mod:`tsadapt.policy.sim.simulator`): the slow-down
    of one batch when ``k`` batches of *parallel* workers run at once, ``interference[k - 1]``
    for k = 1..n (linear beyond ``n`` along the last step). None: the plain contention factor.

    ``cpu_scale``: every CPU cost on this device (batch execution, the host's per-request
    work) is the profile's times this factor: a machine slower (> 1) or faster (< 1) than the
    one the profiles were measured on. The controller's limits still come from the profiles,
    as a sidecar's do on a real machine whose speed drifted.
    """

    name: str = DEFAULT_DEVICE
    capacity: float = 1.0
    interference: tuple[float, ...] | None = None
    cpu_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.capacity > 0:
            raise ValueError(f"device {self.name!r}: capacity must be > 0")
        if not (self.cpu_scale > 0 and math.isfinite(self.cpu_scale)):
            raise ValueError(f"device {self.name!r}: cpu_scale must be a finite number > 0")
        f = self.interference
        if f is not None:
            f = tuple(float(x) for x in f)
            if not f or f[0] != 1.0 or any(b < a for a, b in zip(f, f[1:], strict=False)):
                raise ValueError(
                    f"device {self.name!r}: interference must start at 1.0 and not decrease"
                )
            object.__setattr__(self, "interference", f)

    def slowdown(self, k: int) -> float:
        """Slow-down of each of ``k`` concurrent parallel batches (1 without interference)."""
        f = self.interference
        if f is None or k <= 1:
            return 1.0
        if k <= len(f):
            return f[k - 1]
        step = f[-1] - f[-2] if len(f) >= 2 else 0.0
        return f[-1] + step * (k - len(f))


def check_batch_limit(batch_size: int) -> None:
    if batch_size > MAX_BATCH_LIMIT:
        raise ValueError(f"batch_size must be <= {MAX_BATCH_LIMIT}, got {batch_size}")


@dataclass(frozen=True)
class ModelSpec:
    """A served model: its latency profile, placement, queue and initial configuration."""

    name: str
    latency: LatencyModel
    device: str = DEFAULT_DEVICE
    threads: int = WORKER_THREADS
    queue_size: int = JOB_QUEUE_SIZE
    load_delay_s: float = LOAD_DELAY_S
    exec_cv: float = 0.0
    initial: ModelSettings = field(default_factory=ModelSettings)
    overhead_ms: float = 0.0
    overhead_quantiles_ms: tuple[float, ...] | None = None
    #: CPU time (ms) each arriving request costs the device outside the workers (client,
    #: HTTP, frontend): load that competes with the workers' threads (see the simulator's docs).
    host_cpu_ms: float = 0.0
    #: A GPU slot's parallel flag: its batches run concurrently with other parallel workers'
    #: (``DeviceSpec.interference``) instead of taking turns (see the simulator's docs).
    parallel: bool = False

    def __post_init__(self) -> None:
        check_batch_limit(self.initial.batch_size)
        if not (self.host_cpu_ms >= 0 and math.isfinite(self.host_cpu_ms)):
            raise ValueError(f"model {self.name!r}: host_cpu_ms must be >= 0 and finite")
        if self.threads < 1:
            raise ValueError(f"model {self.name!r}: threads must be >= 1")
        if self.queue_size < 0:
            raise ValueError(f"model {self.name!r}: queue_size must be >= 0")
        if self.load_delay_s < 0:
            raise ValueError(f"model {self.name!r}: load_delay_s must be >= 0")
        if self.exec_cv < 0:
            raise ValueError(f"model {self.name!r}: exec_cv must be >= 0")
        if not (self.overhead_ms >= 0 and math.isfinite(self.overhead_ms)):
            raise ValueError(f"model {self.name!r}: overhead_ms must be >= 0 and finite")
        q = self.overhead_quantiles_ms
        if q is not None:
            q = tuple(float(x) for x in q)
            if len(q) < 2 or any(not (x >= 0 and math.isfinite(x)) for x in q):
                raise ValueError(
                    f"model {self.name!r}: overhead_quantiles_ms needs >= 2 finite values >= 0"
                )
            if any(b < a for a, b in zip(q, q[1:], strict=False)):
                raise ValueError(f"model {self.name!r}: overhead_quantiles_ms must not decrease")
            if self.overhead_ms:
                raise ValueError(
                    f"model {self.name!r}: give overhead_ms or overhead_quantiles_ms, not both"
                )
            object.__setattr__(self, "overhead_quantiles_ms", q)


@dataclass(frozen=True)
class IntervalStats:
    """What happened to one model in ``(t_start, t_end]``.

    ``latencies_ms`` holds the end-to-end latency of every request completed in the
    interval. ``queue_depth`` is the TorchServe queue (``pendingRequests``);
    ``forming`` the jobs held by the worker aggregating a batch; ``oldest_wait_s`` the
    age of the oldest request in either (0 when both are empty).
    """

    model: str
    t_start: float
    t_end: float
    arrivals: int
    rejected: int
    failed: int
    completed: int
    latencies_ms: np.ndarray
    batches: int
    batch_size_sum: int
    fill_sum: float
    busy_worker_s: float
    worker_s: float
    queue_depth: int
    forming: int
    oldest_wait_s: float
    config: ModelSettings
    ready_workers: int

    @property
    def duration_s(self) -> float:
        return self.t_end - self.t_start

    @property
    def mean_batch_size(self) -> float:
        return self.batch_size_sum / self.batches if self.batches else 0.0

    @property
    def batch_fill_rate(self) -> float:
        """Mean of (batch size / configured batch size) over the interval's batches."""
        return self.fill_sum / self.batches if self.batches else 0.0

    @property
    def throughput_rps(self) -> float:
        d = self.duration_s
        return self.completed / d if d > 0 else 0.0
