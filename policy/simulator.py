"""Discrete-event simulator of TorchServe 0.12 batching, queueing and worker scaling.

The cost is per *batch*, not per request: arrivals are pre-generated numpy arrays, the
queue is an index range over a buffer, and a batch is found with index arithmetic
(``searchsorted``), so a batch of 32 costs about as much as a batch of 1.

Semantics mirrored from the TorchServe 0.12 frontend (``wlm/Model.java`` ``pollBatch``,
``BatchAggregator``, ``WorkerThread``, ``WorkLoadManager``, ``ModelManager.addJob``):

* One FIFO job queue per model, capacity ``queue_size`` (``job_queue_size``, default
  100). An arrival that finds it full is rejected (HTTP 503). So is every arrival while
  the model has no worker at all (``hasNoWorker``); workers still loading count as
  workers, so their requests queue.
* Batch formation is serialised per model by a lock: an idle worker takes the lock,
  reads ``maxBatchDelay`` once, blocks until it gets a first job, and only then starts
  the delay clock (``begin`` is taken *after* the first job, so the delay counts from
  when the worker got the first request, not from its arrival). It then polls jobs
  one by one, each poll waiting at most the remaining delay, until it holds
  ``batchSize`` jobs or the delay is used up, and releases the lock when it sends the
  batch. Jobs already queued are taken at once, so with ``>= batch_size`` jobs waiting a
  full batch leaves immediately. Other idle workers wait for the lock meanwhile
  (granted here in FIFO order of becoming idle).
* ``batchSize`` is the live field, checked after every job taken, so a change applies
  to the batch being formed; the delay is a snapshot taken at lock acquisition. A
  worker blocked in ``poll`` with ``>= batch_size`` jobs after a decrease still takes one
  more job (the loop condition is only re-checked after a poll returns).
* ``max_batch_delay = 0`` caps a batch at 2 jobs however long the queue is: after the
  first job the loop polls once more without waiting and then breaks because the
  remaining delay is ``<= 0`` (``if (maxDelay <= 0) break``). Measured on TorchServe
  0.12 with batch size 16, 32 requests in flight: delay 0 -> mean batch 2.0, delay 1 ms
  -> 13.9 (``tests/test_plugin_server.py`` checks it on the real server).
* Scale-down kills the newest workers first (highest index) with no drain. The killed
  worker's jobs, executing or being aggregated, are put back at the *head* of the queue
  (``BatchAggregator.sendError(null, ...)`` -> ``model.addFirst(job)`` for each job in
  batch order, hence in reverse order); the partial execution is lost. If the queue is
  full ``addFirst`` throws and the remaining jobs are never answered: counted ``failed``.
* Scale-up: a new worker counts as a worker at once but serves only after
  ``load_delay_s`` (process start and model load).

Execution and contention: a batch of ``b`` takes ``latency(b)`` ms from the model's
:class:`LatencyModel`, times a device contention factor ``max(1, active / capacity)``
where ``active`` is the number of worker threads executing on the device including the
new batch (CPU: ``capacity`` = cores; a time-sliced GPU: ``capacity`` = 1), plus on a CPU
the cores the host spends outside the workers on the requests arriving around then (each
model's ``host_cpu_ms`` per request: client, HTTP, frontend; counted per second of
arrivals). The factor is taken when the batch starts and kept for the batch (not
re-evaluated as others start or finish): simple, and calibrated through ``capacity``.
Optional log-normal jitter with coefficient of variation ``exec_cv`` (mean 1) uses the
simulator's seeded generator.

End-to-end latency of a request = completion time of its batch - arrival time (queue
wait + aggregation wait + execution) + the request's *overhead*: the time spent outside
the worker (client and HTTP stack, the frontend's request/response handling, the hop to
the backend, the scheduler's delays on a busy host). It is added to every answered
request's latency but occupies neither the worker nor the device, so it shifts latencies
without changing the queueing (for an open-loop client an inbound delay that does not
depend on the load only shifts arrivals, so it may be counted at the end). The overhead
is either the constant ``overhead_ms`` or, with ``overhead_quantiles_ms`` (``q[0..n]`` at
probabilities ``k / n``, e.g. measured), an independent draw per request from that
distribution (inverse transform, linear between quantiles) from a generator of its own,
so it does not disturb the execution jitter's stream. Work that occupies the worker per
batch (handler pre/post-processing) belongs in the profile.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import math
from bisect import bisect_right
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .defaults import (
    BATCH_SIZE,
    DEFAULT_DEVICE,
    HOST_LOAD_BIN_S,
    JOB_QUEUE_SIZE,
    LOAD_DELAY_S,
    MAX_BATCH_DELAY_MS,
    MAX_BATCH_LIMIT,
    WORKER_THREADS,
    ZERO_DELAY_BATCH_CAP,
)

__all__ = [
    "DeviceSpec",
    "IntervalStats",
    "LatencyModel",
    "ModelConfig",
    "ModelSpec",
    "Simulator",
]

_INF = math.inf
# Event kinds.
_DISPATCH, _COMPLETE, _READY = 0, 1, 2
# Worker states.
_LOADING, _IDLE, _FORMING, _BUSY, _DEAD = range(5)
_NOISE_BLOCK = 4096
# Completed plain batches are kept as (time, qbuf range) and turned into latencies
# (vectorised) at most this many at a time.
_FLUSH_BLOCK = 4096


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class LatencyModel:
    """Batch execution time in ms: ``alpha_ms * b + beta_ms``, or a measured table.

    ``table`` holds ``(batch, ms)`` points; between points the time is interpolated
    linearly, beyond the last point extrapolated along the last segment, below the
    first point the first point's time is used.
    """

    alpha_ms: float = 0.0
    beta_ms: float = 0.0
    table: tuple[tuple[int, float], ...] | None = None

    def __post_init__(self) -> None:
        if self.table is None:
            if self.alpha_ms < 0 or self.beta_ms < 0 or self.alpha_ms + self.beta_ms <= 0:
                raise ValueError(
                    f"latency: alpha_ms and beta_ms must be >= 0 and not both 0, got "
                    f"alpha_ms={self.alpha_ms}, beta_ms={self.beta_ms}"
                )
            return
        pts = tuple(sorted((int(b), float(ms)) for b, ms in self.table))
        if not pts:
            raise ValueError("latency: table must not be empty")
        bs = [b for b, _ in pts]
        if bs[0] < 1 or len(set(bs)) != len(bs):
            raise ValueError("latency: table batch sizes must be >= 1 and unique")
        if any(ms <= 0 for _, ms in pts):
            raise ValueError("latency: table times must be > 0")
        object.__setattr__(self, "table", pts)

    def batch_ms(self, b: int | np.ndarray) -> float | np.ndarray:
        """Execution time (ms) of a batch of ``b`` requests without contention."""
        if self.table is None:
            return self.alpha_ms * np.asarray(b, dtype=np.float64) + self.beta_ms
        bs = np.array([p[0] for p in self.table], dtype=np.float64)
        ms = np.array([p[1] for p in self.table], dtype=np.float64)
        x = np.asarray(b, dtype=np.float64)
        y = np.interp(x, bs, ms)
        if len(bs) >= 2:
            slope = (ms[-1] - ms[-2]) / (bs[-1] - bs[-2])
            y = np.where(x > bs[-1], ms[-1] + slope * (x - bs[-1]), y)
        return np.maximum(y, 1e-6)

    @classmethod
    def from_csv(cls, path: str | Path, threads: int | None = None) -> LatencyModel:
        """Read ``batch,latency_ms`` rows (optionally a ``threads`` column, filtered)."""
        p = Path(path)
        with p.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or not {"batch", "latency_ms"} <= set(rows[0]):
            raise ValueError(f"profile {p}: need a header with 'batch' and 'latency_ms'")
        if "threads" in rows[0]:
            want = threads if threads is not None else min(int(r["threads"]) for r in rows)
            rows = [r for r in rows if int(r["threads"]) == want]
            if not rows:
                raise ValueError(f"profile {p}: no rows with threads={want}")
        agg: dict[int, list[float]] = {}
        for r in rows:
            agg.setdefault(int(r["batch"]), []).append(float(r["latency_ms"]))
        return cls(table=tuple((b, float(np.mean(v))) for b, v in agg.items()))


@dataclass(frozen=True)
class DeviceSpec:
    """A device shared by workers; ``capacity`` threads run at full speed (CPU cores)."""

    name: str = DEFAULT_DEVICE
    capacity: float = 1.0

    def __post_init__(self) -> None:
        if not self.capacity > 0:
            raise ValueError(f"device {self.name!r}: capacity must be > 0")


@dataclass(frozen=True)
class ModelConfig:
    """The knobs a policy turns between intervals."""

    batch_size: int = BATCH_SIZE
    max_batch_delay_ms: float = MAX_BATCH_DELAY_MS
    workers: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.batch_size, int | np.integer) and 1 <= self.batch_size):
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.batch_size > MAX_BATCH_LIMIT:
            raise ValueError(f"batch_size must be <= {MAX_BATCH_LIMIT}, got {self.batch_size}")
        if not self.max_batch_delay_ms >= 0:
            raise ValueError(f"max_batch_delay_ms must be >= 0, got {self.max_batch_delay_ms!r}")
        if not (isinstance(self.workers, int | np.integer) and self.workers >= 0):
            raise ValueError(f"workers must be an integer >= 0, got {self.workers!r}")


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
    initial: ModelConfig = field(default_factory=ModelConfig)
    overhead_ms: float = 0.0
    overhead_quantiles_ms: tuple[float, ...] | None = None
    #: CPU time (ms) each arriving request costs the device outside the workers (client,
    #: HTTP, frontend): load that competes with the workers' threads (see the module doc).
    host_cpu_ms: float = 0.0

    def __post_init__(self) -> None:
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
    config: ModelConfig
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


# --------------------------------------------------------------------------- runtime


class _Device:
    __slots__ = ("spec", "capacity", "active", "host_load")

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self.capacity = float(spec.capacity)
        self.active = 0
        #: cores busy outside the workers in each HOST_LOAD_BIN_S bin (empty: none)
        self.host_load: list[float] = []


def host_load(
    arrivals: Sequence[np.ndarray], host_cpu_ms: Sequence[float], bin_s: float = HOST_LOAD_BIN_S
) -> list[float]:
    """Cores busy outside the workers per ``bin_s`` bin: each arrival costs its model's
    ``host_cpu_ms`` of CPU in the bin it arrives in."""
    ends = [float(a[-1]) for a in arrivals if a.size]
    if not ends:
        return []
    load = np.zeros(int(max(ends) // bin_s) + 1)
    for a, ms in zip(arrivals, host_cpu_ms, strict=True):
        if a.size and ms > 0:
            load += np.bincount((a // bin_s).astype(np.int64), minlength=load.size) * ms
    return (load / (1000.0 * bin_s)).tolist()


class _Worker:
    """A worker; its batch is ``qbuf[bs:be]`` or, with requeued jobs, the array ``batch``."""

    __slots__ = ("state", "epoch", "start", "batch", "bs", "be", "wid")

    def __init__(self, wid: int, state: int) -> None:
        self.wid = wid
        self.state = state
        self.epoch = 0
        self.start = 0.0
        self.batch: np.ndarray | None = None
        self.bs = self.be = 0


class _Model:
    """Mutable per-model state (queue buffer, workers, the forming batch, counters)."""

    __slots__ = (
        "spec", "name", "idx", "dev", "threads", "lat_s", "cap", "load_delay", "overhead_s",
        "ovh_q", "ovh_buf", "ovh_i",
        "arr", "arr_l", "n_arr", "next_idx", "qbuf", "head", "tail", "front",
        "B", "delay_s", "workers", "idle", "next_wid",
        "holder", "d_snap", "f_front", "f_s", "f_e", "f_i0", "f_i1", "f_t1",
        "f_deadline", "f_t2", "token",
        "rejected", "failed", "completed", "lat_chunks", "done_t", "done_s", "done_e",
        "batches", "size_sum", "fill_sum",
        "busy_done", "worker_s_acc", "wcount_since",
        "prev",
        "jitter", "noise", "noise_i", "arr_buf",
    )  # fmt: skip


def _batch_cap(m: _Model) -> int:
    """The most jobs one batch can take: TorchServe breaks after the 2nd job at delay 0."""
    return m.B if m.d_snap > 0 else min(m.B, ZERO_DELAY_BATCH_CAP)


class Simulator:
    """Event-driven TorchServe model: ``set_config`` between ``run_until`` calls.

    ``arrivals`` maps each model name to sorted arrival times (s); missing models get
    none. Initial workers (``ModelSpec.initial.workers``) are ready at t = 0.
    """

    def __init__(
        self,
        models: Sequence[ModelSpec],
        arrivals: Mapping[str, np.ndarray] | None = None,
        devices: Sequence[DeviceSpec] = (),
        seed: int = 0,
    ) -> None:
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        arrivals = dict(arrivals or {})
        unknown = set(arrivals) - set(names)
        if unknown:
            raise ValueError(f"arrivals for unknown model(s): {sorted(unknown)}")
        devs = {d.name: _Device(d) for d in devices}
        for m in models:
            if m.device not in devs:
                if devices:
                    raise ValueError(f"model {m.name!r}: unknown device {m.device!r}")
                devs[m.device] = _Device(DeviceSpec(m.device, capacity=_INF))
        self.devices = devs
        self.rng = np.random.default_rng(seed)
        # overhead draws (overhead_quantiles_ms) have a stream of their own
        self._ovh_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
        self.now = 0.0
        self._heap: list[tuple] = []
        self._seq = itertools.count(1)
        self._models: dict[str, _Model] = {}
        self._order: list[_Model] = []
        for i, spec in enumerate(models):
            a = np.ascontiguousarray(arrivals.get(spec.name, np.empty(0)), dtype=np.float64)
            if a.ndim != 1 or (a.size and (np.any(np.diff(a) < 0) or a[0] < 0)):
                raise ValueError(f"arrivals[{spec.name!r}] must be sorted times >= 0")
            self._order.append(self._new_model(i, spec, a))
            self._models[spec.name] = self._order[-1]
        for name, dev in devs.items():
            mine = [m for m in self._order if m.spec.device == name and m.spec.host_cpu_ms > 0]
            if mine:
                dev.host_load = host_load([m.arr for m in mine], [m.spec.host_cpu_ms for m in mine])
        for m in self._order:
            if m.idle:
                self._acquire(m, 0.0)

    # ----------------------------------------------------------------- setup

    def _new_model(self, idx: int, spec: ModelSpec, arr: np.ndarray) -> _Model:
        m = _Model()
        m.spec, m.name, m.idx = spec, spec.name, idx
        m.dev = self.devices[spec.device]
        m.threads = spec.threads
        ms = spec.latency.batch_ms(np.arange(MAX_BATCH_LIMIT + 2))
        m.lat_s = [float(x) / 1000.0 for x in ms]
        m.cap = spec.queue_size
        m.load_delay = spec.load_delay_s
        m.overhead_s = spec.overhead_ms / 1000.0
        q = spec.overhead_quantiles_ms
        m.ovh_q = None if q is None else np.asarray(q, dtype=np.float64) / 1000.0
        m.ovh_buf, m.ovh_i = np.empty(0), 0
        m.arr, m.n_arr, m.next_idx = arr, len(arr), 0
        m.arr_buf = None
        m.arr_l = arr.tolist()  # scalar reads of Python floats are much cheaper
        m.qbuf = np.empty(len(arr) + 1, dtype=np.float64)
        m.head = m.tail = 0
        m.front = []
        m.B = int(spec.initial.batch_size)
        m.delay_s = spec.initial.max_batch_delay_ms / 1000.0
        m.workers, m.idle, m.next_wid = [], deque(), 0
        m.holder = None
        m.d_snap = m.delay_s
        m.f_front, m.f_s, m.f_e, m.f_i0, m.f_i1 = None, 0, 0, 0, 0
        m.f_t1 = m.f_deadline = m.f_t2 = _INF
        m.token = 0
        m.rejected = m.failed = m.completed = m.batches = m.size_sum = 0
        m.fill_sum = 0.0
        m.lat_chunks = []
        m.done_t, m.done_s, m.done_e = [], [], []
        m.busy_done = m.worker_s_acc = 0.0
        m.wcount_since = 0.0
        m.prev = {
            "t": 0.0,
            "arr_idx": 0,
            "rejected": 0,
            "failed": 0,
            "completed": 0,
            "batches": 0,
            "size_sum": 0,
            "fill_sum": 0.0,
            "busy": 0.0,
            "worker_s": 0.0,
        }
        m.jitter = spec.exec_cv > 0
        m.noise, m.noise_i = None, _NOISE_BLOCK
        for _ in range(spec.initial.workers):
            w = _Worker(m.next_wid, _IDLE)
            m.next_wid += 1
            m.workers.append(w)
            m.idle.append(w)
        return m

    # ----------------------------------------------------------------- public API

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self._order]

    def config(self, model: str) -> ModelConfig:
        m = self._model(model)
        return ModelConfig(m.B, m.delay_s * 1000.0, len(m.workers))

    def ready_workers(self, model: str) -> int:
        return sum(1 for w in self._model(model).workers if w.state != _LOADING)

    def queue_depth(self, model: str) -> int:
        m = self._model(model)
        return len(m.front) + m.tail - m.head

    def set_config(
        self,
        model: str,
        *,
        batch_size: int | None = None,
        max_batch_delay_ms: float | None = None,
        workers: int | None = None,
    ) -> None:
        """Change a model's knobs at the current time (see module docstring)."""
        m = self._model(model)
        cur = ModelConfig(m.B, m.delay_s * 1000.0, len(m.workers))
        new = ModelConfig(
            cur.batch_size if batch_size is None else batch_size,
            cur.max_batch_delay_ms if max_batch_delay_ms is None else max_batch_delay_ms,
            cur.workers if workers is None else workers,
        )
        t = self.now
        self._admit(m, t)
        m.delay_s = new.max_batch_delay_ms / 1000.0
        b_changed = new.batch_size != m.B
        m.B = int(new.batch_size)
        requeued = False
        if new.workers != len(m.workers):
            self._account_workers(m, t)
            while len(m.workers) < new.workers:
                w = _Worker(m.next_wid, _LOADING)
                m.next_wid += 1
                m.workers.append(w)
                self._push(t + m.load_delay, _READY, m, w, w.epoch)
            while len(m.workers) > new.workers:
                requeued |= self._kill(m, m.workers[-1], t)
        if m.holder is not None and (b_changed or (requeued and m.front)):
            k = self._unwind(m, t)
            self._form(m, t, k, blocked=True)
        if m.holder is None and m.idle:
            self._acquire(m, t)

    def extend_arrivals(self, model: str, times: np.ndarray) -> None:
        """Append sorted arrival times after every arrival so far and after ``now``.

        For arrivals that depend on the run (a load balancer splitting traffic over a
        changing number of servers). The batch being formed is re-planned, as after a batch
        size change, so the new arrivals join it as if they had been known from the start.
        """
        m = self._model(model)
        new = np.ascontiguousarray(times, dtype=np.float64)
        if new.size == 0:
            return
        last = float(m.arr[-1]) if m.n_arr else -math.inf
        if new.ndim != 1 or np.any(np.diff(new) < 0) or new[0] < max(last, self.now):
            raise ValueError("extend_arrivals needs sorted times after the last arrival and now")
        n = m.n_arr + new.size
        buf = getattr(m, "arr_buf", None)
        if buf is None or buf.size < n:
            grown = np.empty(max(2 * n, 1024), dtype=np.float64)
            grown[: m.n_arr] = m.arr
            m.arr_buf = buf = grown
        buf[m.n_arr : n] = new
        m.arr, m.n_arr = buf[:n], n
        m.arr_l.extend(new.tolist())
        if m.qbuf.size < n + 1:
            q = np.empty(max(2 * (n + 1), 1024), dtype=np.float64)
            q[: m.qbuf.size] = m.qbuf
            m.qbuf = q
        dev = m.dev
        if m.spec.host_cpu_ms > 0:
            load = host_load([new], [m.spec.host_cpu_ms])
            if len(dev.host_load) < len(load):
                dev.host_load.extend([0.0] * (len(load) - len(dev.host_load)))
            for k in range(int(new[0] // HOST_LOAD_BIN_S), len(load)):
                dev.host_load[k] += load[k]
        if m.holder is not None:
            k = self._unwind(m, self.now)
            self._form(m, self.now, k, blocked=True)

    def run_until(self, t_end: float) -> dict[str, IntervalStats]:
        """Advance to ``t_end`` (s); return each model's stats since the last call."""
        if t_end < self.now:
            raise ValueError(f"run_until({t_end}) is before now ({self.now})")
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= t_end:
            t, _, kind, m, w, token = pop(heap)
            self.now = t
            if kind == _COMPLETE:
                if w.epoch == token:
                    self._complete(m, w, t)
            elif kind == _DISPATCH:
                if m.token == token:
                    self._dispatch(m, t)
            elif w.epoch == token:  # _READY
                w.state = _IDLE
                m.idle.append(w)
                if m.holder is None:
                    self._acquire(m, t)
        if math.isfinite(t_end):
            self.now = t_end
        else:  # everything reachable happened; later arrivals can only be rejected
            last = max((float(m.arr[-1]) for m in self._order if m.n_arr), default=0.0)
            self.now = max(self.now, last)
        return {m.name: self._collect(m, self.now) for m in self._order}

    def pending_events(self) -> int:
        """Events still scheduled (0 once everything reachable has happened)."""
        return len(self._heap)

    # ----------------------------------------------------------------- internals

    def _model(self, name: str) -> _Model:
        try:
            return self._models[name]
        except KeyError:
            raise ValueError(f"unknown model {name!r} (known: {self.model_names})") from None

    def _push(self, t: float, kind: int, m: _Model, w: _Worker | None, token: int) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), kind, m, w, token))

    def _account_workers(self, m: _Model, t: float) -> None:
        m.worker_s_acc += len(m.workers) * (t - m.wcount_since)
        m.wcount_since = t

    def _admit(self, m: _Model, t: float) -> None:
        """Queue (or reject) the arrivals up to ``t`` not yet seen; no take since the last."""
        i0 = m.next_idx
        n = m.n_arr
        arr_l = m.arr_l
        if i0 >= n or arr_l[i0] > t:
            return
        i1 = i0 + 1  # usually one new arrival; else find the first one after t
        if i1 < n and arr_l[i1] <= t:
            i1 = bisect_right(arr_l, t, i1 + 1)
        n_new = i1 - i0
        m.next_idx = i1
        if not m.workers:
            m.rejected += n_new
            return
        tail = m.tail
        space = m.cap - (len(m.front) + tail - m.head)
        acc = n_new if n_new <= space else max(space, 0)
        if acc == 1:
            m.qbuf[tail] = arr_l[i0]
            m.tail = tail + 1
        elif acc:
            m.qbuf[tail : tail + acc] = m.arr[i0 : i0 + acc]
            m.tail = tail + acc
        m.rejected += n_new - acc

    def _acquire(self, m: _Model, t: float) -> None:
        """Idle workers take the model lock in turn and form batches at time ``t``."""
        i = m.next_idx
        if i < m.n_arr and m.arr_l[i] <= t:
            self._admit(m, t)
        idle = m.idle
        while m.holder is None and idle:
            w = idle.popleft()
            w.state = _FORMING
            m.holder = w
            d = m.d_snap = m.delay_s
            m.f_front = None
            head = m.f_s = m.f_e = m.head
            B = m.B if d > 0 else min(m.B, ZERO_DELAY_BATCH_CAP)  # _batch_cap, inlined
            if not m.front and m.tail - head >= B:  # fast path: full batch queued
                m.head = m.f_e = head + B
                m.f_i0 = m.f_i1 = m.next_idx
                self._dispatch(m, t)
            else:
                self._form(m, t, 0, blocked=False)

    def _form(self, m: _Model, t: float, k: int, blocked: bool) -> None:
        """The lock holder, holding ``k`` jobs at ``t``, takes what is queued and plans."""
        B = _batch_cap(m)
        front = m.front
        if k == 0:
            if not front and m.tail == m.head:
                self._plan(m, t, 0, first=True)
                return
            m.f_t1 = t
            m.f_deadline = t + m.d_snap
            need = B
        else:
            need = B - k
            if blocked and need < 1:
                need = 1
        if need > 0 and front:
            nf = min(need, len(front))
            taken = front[:nf]
            del front[:nf]
            m.f_front = taken if m.f_front is None else m.f_front + taken
            need -= nf
        if need > 0 and m.tail > m.head:
            take = min(need, m.tail - m.head)
            m.head += take
            m.f_e = m.head
            need -= take
        m.f_i0 = m.f_i1 = m.next_idx
        if need <= 0:
            self._dispatch(m, t)
        else:  # blocked in poll: future arrivals until full or the deadline
            self._plan(m, t, need, first=False)

    def _plan(self, m: _Model, t: float, need: int, first: bool) -> None:
        """Consume future arrivals into the forming batch; schedule its dispatch."""
        arr_l, i, n = m.arr_l, m.next_idx, m.n_arr
        m.f_i0 = i
        if first:
            if i >= n:  # no arrival will ever come: wait forever
                m.f_i1 = i
                m.f_t1 = m.f_deadline = m.f_t2 = _INF
                m.token += 1
                return
            t1 = arr_l[i]
            m.f_t1 = t1
            deadline = m.f_deadline = t1 + m.d_snap
            need = _batch_cap(m) - 1
            base = i + 1
        else:
            deadline = m.f_deadline
            base = i
        # the arrivals in [base, i_end) join: up to ``need`` of them, none after the deadline
        if need <= 0:  # only when ``first`` (a blocked poll needs >= 1): the batch is full
            i_end, t2 = base, t1
        else:
            j = base + need - 1
            if j < n and arr_l[j] <= deadline:
                i_end, t2 = j + 1, arr_l[j]
            else:  # every arrival before ``base`` is <= deadline, none from ``j`` on
                i_end, t2 = bisect_right(arr_l, deadline, base, min(j, n)), deadline
        c = i_end - i
        if c:
            tail = m.tail
            if c == 1:
                m.qbuf[tail] = arr_l[i]
            else:
                m.qbuf[tail : tail + c] = m.arr[i:i_end]
            m.tail = m.head = m.f_e = tail + c
        m.f_i1 = m.next_idx = i_end
        m.f_t2 = t2
        m.token += 1
        if t2 <= t:
            self._dispatch(m, t)
        else:
            heapq.heappush(self._heap, (t2, next(self._seq), _DISPATCH, m, None, m.token))

    def _unwind(self, m: _Model, t: float) -> int:
        """Return the forming batch to its state at ``t``; the count of jobs it holds."""
        c = m.f_i1 - m.f_i0
        if c:
            keep = int(m.arr[m.f_i0 : m.f_i1].searchsorted(t, "right"))
            drop = c - keep
            if drop:
                m.tail -= drop
                m.head = m.tail
                m.f_e -= drop
                m.next_idx = m.f_i0 + keep
                m.f_i1 = m.next_idx
        m.f_i0 = m.f_i1 = m.next_idx
        m.token += 1
        m.f_t2 = _INF
        return (len(m.f_front) if m.f_front else 0) + m.f_e - m.f_s

    def _holder_batch(self, m: _Model) -> np.ndarray:
        part = m.qbuf[m.f_s : m.f_e]
        if m.f_front:
            return np.concatenate([np.asarray(m.f_front, dtype=np.float64), part])
        return part

    def _dispatch(self, m: _Model, t: float) -> None:
        """The lock holder sends its batch to execution at ``t``; the lock passes on."""
        w = m.holder
        s = w.bs = m.f_s
        e = w.be = m.f_e
        if m.f_front:  # requeued jobs first: the batch is an array of its own
            batch = w.batch = self._holder_batch(m)
            b = len(batch)
            m.f_front = None
        else:  # a plain qbuf range
            b = e - s
        dev = m.dev
        active = dev.active = dev.active + m.threads
        exec_s = m.lat_s[b] if b <= MAX_BATCH_LIMIT else m.spec.latency.batch_ms(b) / 1000.0
        if dev.host_load:
            k = int(t // HOST_LOAD_BIN_S)
            active += dev.host_load[k] if k < len(dev.host_load) else 0.0
        if active > dev.capacity:
            exec_s *= active / dev.capacity
        if m.jitter:
            exec_s *= self._noise(m)
        w.state = _BUSY
        w.start = t
        heapq.heappush(self._heap, (t + exec_s, next(self._seq), _COMPLETE, m, w, w.epoch))
        m.batches += 1
        m.size_sum += b
        m.fill_sum += b / m.B
        m.holder = None
        m.token += 1
        if m.idle:
            self._acquire(m, t)

    def _complete(self, m: _Model, w: _Worker, t: float) -> None:
        """Worker ``w`` finishes its batch at ``t``: record it; the worker goes idle."""
        m.dev.active -= m.threads
        batch = w.batch
        if batch is None and m.ovh_q is None:  # record now, compute latencies later
            done_t = m.done_t
            done_t.append(t)
            s, e = w.bs, w.be
            m.done_s.append(s)
            m.done_e.append(e)
            m.completed += e - s
            if len(done_t) >= _FLUSH_BLOCK:
                self._flush(m)
        else:
            if batch is None:
                batch = m.qbuf[w.bs : w.be]
            self._flush(m)
            if m.ovh_q is None:
                m.lat_chunks.append((t + m.overhead_s) - batch)
            else:
                m.lat_chunks.append((t - batch) + self._overheads(m, len(batch)))
            m.completed += len(batch)
            w.batch = None
        m.busy_done += t - w.start
        w.state = _IDLE
        m.idle.append(w)
        if m.holder is None:
            self._acquire(m, t)

    def _flush(self, m: _Model) -> None:
        """Turn the recorded plain batches into latency chunks (completion order kept)."""
        if not m.done_t:
            return
        t = np.array(m.done_t, dtype=np.float64) + m.overhead_s
        s = np.array(m.done_s, dtype=np.intp)
        sizes = np.array(m.done_e, dtype=np.intp) - s
        m.done_t, m.done_s, m.done_e = [], [], []
        if np.all(sizes == 1):
            m.lat_chunks.append(t - m.qbuf[s])
            return
        total = int(sizes.sum())
        # index of each job in qbuf: s[k] + position within batch k
        starts = np.repeat(s - (np.cumsum(sizes) - sizes), sizes)
        m.lat_chunks.append(np.repeat(t, sizes) - m.qbuf[starts + np.arange(total)])

    def _overheads(self, m: _Model, k: int) -> np.ndarray:
        """``k`` draws (s) from the model's overhead distribution (block-buffered)."""
        if m.ovh_i + k > m.ovh_buf.size:
            q = m.ovh_q
            u = self._ovh_rng.random(max(_NOISE_BLOCK, k)) * (q.size - 1)
            m.ovh_buf = np.interp(u, np.arange(q.size, dtype=np.float64), q)
            m.ovh_i = 0
        out = m.ovh_buf[m.ovh_i : m.ovh_i + k]
        m.ovh_i += k
        return out

    def _noise(self, m: _Model) -> float:
        if m.noise_i >= _NOISE_BLOCK:
            s2 = math.log1p(m.spec.exec_cv**2)
            m.noise = self.rng.lognormal(-0.5 * s2, math.sqrt(s2), _NOISE_BLOCK).tolist()
            m.noise_i = 0
        m.noise_i += 1
        return m.noise[m.noise_i - 1]

    def _requeue(self, m: _Model, jobs: np.ndarray) -> None:
        """``addFirst`` each job in batch order (so reversed); overflow is lost."""
        space = max(m.cap - (len(m.front) + m.tail - m.head), 0)
        acc = min(space, len(jobs))
        if acc:
            m.front[:0] = jobs[:acc][::-1].tolist()
        m.failed += len(jobs) - acc

    def _kill(self, m: _Model, w: _Worker, t: float) -> bool:
        """Scale-down of one worker (no drain); True if jobs went back to the queue."""
        requeued = False
        if w.state == _IDLE:
            m.idle.remove(w)
        elif w.state == _FORMING:
            self._unwind(m, t)
            jobs = self._holder_batch(m).copy()
            m.holder = None
            m.f_front = None
            self._requeue(m, jobs)
            requeued = len(jobs) > 0
        elif w.state == _BUSY:
            m.dev.active -= m.threads
            m.busy_done += t - w.start
            self._requeue(m, m.qbuf[w.bs : w.be] if w.batch is None else w.batch)
            requeued = True
            w.batch = None
        w.epoch += 1
        w.state = _DEAD
        m.workers.pop(m.workers.index(w))
        return requeued

    def _collect(self, m: _Model, t: float) -> IntervalStats:
        self._admit(m, t)
        p = m.prev
        arr_idx = int(m.arr.searchsorted(t, "right")) if math.isfinite(t) else m.n_arr
        busy_now = m.busy_done + sum(t - w.start for w in m.workers if w.state == _BUSY)
        if math.isfinite(t):
            self._account_workers(m, t)
        self._flush(m)
        lats = np.concatenate(m.lat_chunks) * 1000.0 if m.lat_chunks else np.empty(0)
        m.lat_chunks = []
        waiting: list[np.ndarray] = [np.asarray(m.front), m.qbuf[m.head : m.tail]]
        forming = 0
        if m.holder is not None and m.f_t1 <= t:
            held = self._holder_batch(m)
            held = held[held <= t]
            forming = len(held)
            waiting.append(held)
        oldest = max((t - float(x.min()) for x in waiting if len(x)), default=0.0)
        stats = IntervalStats(
            model=m.name,
            t_start=p["t"],
            t_end=t,
            arrivals=arr_idx - p["arr_idx"],
            rejected=m.rejected - p["rejected"],
            failed=m.failed - p["failed"],
            completed=m.completed - p["completed"],
            latencies_ms=lats,
            batches=m.batches - p["batches"],
            batch_size_sum=m.size_sum - p["size_sum"],
            fill_sum=m.fill_sum - p["fill_sum"],
            busy_worker_s=busy_now - p["busy"],
            worker_s=m.worker_s_acc - p["worker_s"],
            queue_depth=len(m.front) + m.tail - m.head,
            forming=forming,
            oldest_wait_s=oldest if math.isfinite(oldest) else 0.0,
            config=ModelConfig(m.B, m.delay_s * 1000.0, len(m.workers)),
            ready_workers=sum(1 for w in m.workers if w.state != _LOADING),
        )
        m.prev = {
            "t": t,
            "arr_idx": arr_idx,
            "rejected": m.rejected,
            "failed": m.failed,
            "completed": m.completed,
            "batches": m.batches,
            "size_sum": m.size_sum,
            "fill_sum": m.fill_sum,
            "busy": busy_now,
            "worker_s": m.worker_s_acc,
        }
        return stats

    # ----------------------------------------------------------------- helpers

    @classmethod
    def from_workloads(
        cls,
        models: Sequence[ModelSpec],
        workloads: Mapping[str, object],
        duration_s: float,
        devices: Sequence[DeviceSpec] = (),
        seed: int = 0,
        replication: int = 0,
    ) -> Simulator:
        """Draw each model's arrivals from its workload (one child stream per model).

        ``replication`` > 0 keeps those arrivals and draws everything else (service-time
        jitter, outside overhead) from a stream of its own: another sample of the same run.
        """
        if replication < 0:
            raise ValueError(f"replication must be >= 0, got {replication}")
        seeds = np.random.SeedSequence(seed).spawn(len(models) + 1)
        arrivals = {}
        for spec, ss in zip(models, seeds[1:], strict=False):
            wl = workloads.get(spec.name)
            if wl is not None:
                arrivals[spec.name] = wl.arrivals(duration_s, np.random.default_rng(ss))  # type: ignore[attr-defined]
        noise = seeds[0]
        if replication:  # a grandchild of the noise stream: new draws, same arrivals
            noise = np.random.SeedSequence(seed, spawn_key=(0, replication))
        return cls(models, arrivals, devices, seed=int(noise.generate_state(1)[0]))
