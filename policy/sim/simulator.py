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

A *slotted GPU* (``DeviceSpec.interference`` set; the fleet simulator's GPUs, seed 000's
formulation): each worker is a slot with a parallel flag (``ModelSpec.parallel``,
:meth:`Simulator.set_parallel`). Sequential slots take turns: a sequential batch waits until
everything already on the GPU has finished (FIFO, non-preemptive, as kernels of separate
processes queue on one GPU without MPS) and then runs alone at its profiled time; the worker
is busy from dispatch to completion. A parallel batch waits only for the sequential batch
ahead of it and runs alongside the other parallel batches, each taking
``interference[p - 1]`` times its profiled time for the ``p`` parallel batches on the GPU
(fitted from co-location measurements: :mod:`tsadapt.fleet.interference`). A killed worker's
reserved GPU time is not given back (the GPU finishes the kernel it already queued).

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

import heapq
import itertools
import math
from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

from tsadapt.policy.defaults import HOST_LOAD_BIN_S, MAX_BATCH_LIMIT
from tsadapt.policy.sim.batching import (
    BUSY,
    COMPLETE,
    DISPATCH,
    IDLE,
    INF,
    LOADING,
    NOISE_BLOCK,
    READY,
    Batching,
    DeviceState,
    ModelState,
    WorkerState,
    host_load,
)
from tsadapt.policy.sim.specs import DeviceSpec, IntervalStats, ModelSpec, check_batch_limit
from tsadapt.policy.types import ModelSettings

__all__ = ["Simulator"]


class Simulator(Batching):
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
        devs = {d.name: DeviceState(d) for d in devices}
        for m in models:
            if m.device not in devs:
                if devices:
                    raise ValueError(f"model {m.name!r}: unknown device {m.device!r}")
                devs[m.device] = DeviceState(DeviceSpec(m.device, capacity=INF))
        self.devices = devs
        self.rng = np.random.default_rng(seed)
        # overhead draws (overhead_quantiles_ms) have a stream of their own
        self._ovh_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
        self.now = 0.0
        self._heap: list[tuple] = []
        self._seq = itertools.count(1)
        self._models: dict[str, ModelState] = {}
        self._order: list[ModelState] = []
        for i, spec in enumerate(models):
            a = np.ascontiguousarray(arrivals.get(spec.name, np.empty(0)), dtype=np.float64)
            if a.ndim != 1 or (a.size and (np.any(np.diff(a) < 0) or a[0] < 0)):
                raise ValueError(f"arrivals[{spec.name!r}] must be sorted times >= 0")
            self._order.append(self._new_model(i, spec, a))
            self._models[spec.name] = self._order[-1]
        for name, dev in devs.items():
            mine = [m for m in self._order if m.spec.device == name and m.host_cpu_ms > 0]
            if mine:
                dev.host_load = host_load([m.arr for m in mine], [m.host_cpu_ms for m in mine])
        for m in self._order:
            if m.idle:
                self._acquire(m, 0.0)

    # ----------------------------------------------------------------- setup

    def _new_model(self, idx: int, spec: ModelSpec, arr: np.ndarray) -> ModelState:
        m = ModelState()
        m.spec, m.name, m.idx = spec, spec.name, idx
        m.dev = self.devices[spec.device]
        m.threads = spec.threads
        scale = m.dev.spec.cpu_scale  # this machine's CPU costs against the profile's
        ms = spec.latency.batch_ms(np.arange(MAX_BATCH_LIMIT + 2)) * scale
        m.lat_s = [float(x) / 1000.0 for x in ms]
        m.host_cpu_ms = spec.host_cpu_ms * scale
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
        m.delay_ms = spec.initial.max_batch_delay_ms
        m.delay_s = m.delay_ms / 1000.0
        m.workers, m.idle, m.next_wid = [], deque(), 0
        m.holder = None
        m.d_snap = m.delay_s
        m.f_front, m.f_s, m.f_e, m.f_i0, m.f_i1 = None, 0, 0, 0, 0
        m.f_t1 = m.f_deadline = m.f_t2 = INF
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
        m.parallel = bool(spec.parallel)
        m.noise, m.noise_i = None, NOISE_BLOCK
        for _ in range(spec.initial.workers):
            w = WorkerState(m.next_wid, IDLE)
            m.next_wid += 1
            m.workers.append(w)
            m.idle.append(w)
        return m

    # ----------------------------------------------------------------- public API

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self._order]

    def config(self, model: str) -> ModelSettings:
        m = self._model(model)
        return m.settings()

    def ready_workers(self, model: str) -> int:
        return sum(1 for w in self._model(model).workers if w.state != LOADING)

    def queue_depth(self, model: str) -> int:
        m = self._model(model)
        return len(m.front) + m.tail - m.head

    def set_config(
        self,
        model: str,
        *,
        batch_size: int | None = None,
        max_batch_delay_ms: int | None = None,
        workers: int | None = None,
    ) -> None:
        """Change a model's knobs at the current time (see module docstring)."""
        m = self._model(model)
        cur = m.settings()
        new = ModelSettings(
            cur.batch_size if batch_size is None else batch_size,
            cur.max_batch_delay_ms if max_batch_delay_ms is None else max_batch_delay_ms,
            cur.workers if workers is None else workers,
        )
        check_batch_limit(new.batch_size)
        t = self.now
        self._admit(m, t)
        m.delay_ms = new.max_batch_delay_ms
        m.delay_s = m.delay_ms / 1000.0
        b_changed = new.batch_size != m.B
        m.B = int(new.batch_size)
        requeued = False
        if new.workers != len(m.workers):
            self._account_workers(m, t)
            while len(m.workers) < new.workers:
                w = WorkerState(m.next_wid, LOADING)
                m.next_wid += 1
                m.workers.append(w)
                self._push(t + m.load_delay, READY, m, w, w.epoch)
            while len(m.workers) > new.workers:
                requeued |= self._kill(m, m.workers[-1], t)
        if m.holder is not None and (b_changed or (requeued and m.front)):
            k = self._unwind(m, t)
            self._form(m, t, k, blocked=True)
        if m.holder is None and m.idle:
            self._acquire(m, t)

    def add_model(self, spec: ModelSpec) -> None:
        """Register one more model at ``now`` (a fleet places a model on a new GPU): its
        initial workers are ready at once, it has no arrivals yet (:meth:`extend_arrivals`)."""
        if spec.name in self._models:
            raise ValueError(f"model {spec.name!r} already exists")
        if spec.device not in self.devices:
            raise ValueError(f"model {spec.name!r}: unknown device {spec.device!r}")
        if spec.host_cpu_ms > 0:
            raise ValueError(f"model {spec.name!r}: host_cpu_ms needs the arrivals up front")
        m = self._new_model(len(self._order), spec, np.empty(0))
        m.prev["t"] = m.wcount_since = self.now
        self._order.append(m)
        self._models[spec.name] = m
        if m.idle:
            self._acquire(m, self.now)

    def set_parallel(self, model: str, parallel: bool) -> None:
        """Set a GPU slot's parallel flag; batches already executing keep how they started."""
        self._model(model).parallel = bool(parallel)

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
        buf = m.arr_buf
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
        if m.host_cpu_ms > 0:
            load = host_load([new], [m.host_cpu_ms])
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
            if kind == COMPLETE:
                if w.epoch == token:
                    self._complete(m, w, t)
            elif kind == DISPATCH:
                if m.token == token:
                    self._dispatch(m, t)
            elif w.epoch == token:  # READY
                w.state = IDLE
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

    def _model(self, name: str) -> ModelState:
        try:
            return self._models[name]
        except KeyError:
            raise ValueError(f"unknown model {name!r} (known: {self.model_names})") from None

    def _push(self, t: float, kind: int, m: ModelState, w: WorkerState | None, token: int) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), kind, m, w, token))

    def _account_workers(self, m: ModelState, t: float) -> None:
        m.worker_s_acc += len(m.workers) * (t - m.wcount_since)
        m.wcount_since = t

    def _collect(self, m: ModelState, t: float) -> IntervalStats:
        self._admit(m, t)
        p = m.prev
        arr_idx = int(m.arr.searchsorted(t, "right")) if math.isfinite(t) else m.n_arr
        busy_now = m.busy_done + sum(t - w.start for w in m.workers if w.state == BUSY)
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
            config=m.settings(),
            ready_workers=sum(1 for w in m.workers if w.state != LOADING),
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
