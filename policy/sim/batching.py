"""TorchServe's batching mechanics on the simulator's state: the per-model runtime state
(job queue buffer, workers, the batch being formed, counters), admission to the job queue,
the lock holder forming a batch, dispatch onto a shared device, completion, and scale-down
putting jobs back at the head of the queue. :class:`~tsadapt.policy.sim.simulator.Simulator`
inherits these; its module docstring gives the semantics they mirror."""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

from tsadapt.policy.defaults import HOST_LOAD_BIN_S, MAX_BATCH_LIMIT, ZERO_DELAY_BATCH_CAP
from tsadapt.policy.sim.specs import DeviceSpec
from tsadapt.policy.types import ModelSettings

INF = math.inf
# Event kinds.
DISPATCH, COMPLETE, READY = 0, 1, 2
# Worker states.
LOADING, IDLE, _FORMING, BUSY, _DEAD = range(5)
NOISE_BLOCK = 4096
# Completed plain batches are kept as (time, qbuf range) and turned into latencies
# (vectorised) at most this many at a time.
_FLUSH_BLOCK = 4096


class DeviceState:
    __slots__ = (
        "spec",
        "capacity",
        "active",
        "active_par",
        "slotted",
        "host_load",
        "seq_free",
        "all_free",
    )

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self.capacity = float(spec.capacity)
        self.active = 0
        #: batches of parallel workers executing (only on a slotted GPU)
        self.active_par = 0
        self.slotted = spec.interference is not None
        #: slotted GPU: when the last sequential batch ends, and when everything on it ends
        self.seq_free = self.all_free = 0.0
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


class WorkerState:
    """A worker; its batch is ``qbuf[bs:be]`` or, with requeued jobs, the array ``batch``."""

    __slots__ = ("state", "epoch", "start", "batch", "bs", "be", "wid", "par")

    def __init__(self, wid: int, state: int) -> None:
        self.wid = wid
        self.par = False  # the batch executing was counted as a parallel one
        self.state = state
        self.epoch = 0
        self.start = 0.0
        self.batch: np.ndarray | None = None
        self.bs = self.be = 0


class ModelState:
    """Mutable per-model state (queue buffer, workers, the forming batch, counters)."""

    __slots__ = (
        "spec", "name", "idx", "dev", "threads", "lat_s", "host_cpu_ms", "cap", "load_delay",
        "overhead_s",
        "ovh_q", "ovh_buf", "ovh_i",
        "arr", "arr_l", "n_arr", "next_idx", "qbuf", "head", "tail", "front",
        "B", "delay_ms", "delay_s", "workers", "idle", "next_wid",
        "holder", "d_snap", "f_front", "f_s", "f_e", "f_i0", "f_i1", "f_t1",
        "f_deadline", "f_t2", "token",
        "rejected", "failed", "completed", "lat_chunks", "done_t", "done_s", "done_e",
        "batches", "size_sum", "fill_sum",
        "busy_done", "worker_s_acc", "wcount_since",
        "prev",
        "jitter", "noise", "noise_i", "arr_buf", "parallel",
    )  # fmt: skip

    def settings(self) -> ModelSettings:
        return ModelSettings(self.B, self.delay_ms, len(self.workers))


def _batch_cap(m: ModelState) -> int:
    """The most jobs one batch can take: TorchServe breaks after the 2nd job at delay 0."""
    return m.B if m.d_snap > 0 else min(m.B, ZERO_DELAY_BATCH_CAP)


def _slot_time(dev: DeviceState, m: ModelState, w: WorkerState, t: float, exec_s: float) -> float:
    """Seconds from dispatch at ``t`` to completion on a slotted GPU (see the simulator's
    docs): a sequential batch waits its turn (FIFO, after everything already on the GPU) and
    runs alone; a parallel batch waits only for the sequential batch ahead and runs with the
    other parallel ones, slowed by the fitted interference."""
    w.par = m.parallel
    if w.par:
        dev.active_par += 1
        start = max(t, dev.seq_free)
        end = start + exec_s * dev.spec.slowdown(dev.active_par)
        dev.all_free = max(dev.all_free, end)
    else:
        dev.active += m.threads
        start = max(t, dev.all_free)
        end = dev.seq_free = dev.all_free = start + exec_s
    return end - t


def _release(m: ModelState, w: WorkerState) -> None:
    """The executing batch of ``w`` leaves its device."""
    if w.par:
        m.dev.active_par -= 1
        w.par = False
    else:
        m.dev.active -= m.threads


class Batching:
    """The event handlers and batch formation of :class:`~tsadapt.policy.sim.simulator.Simulator`
    (which owns the event heap ``_heap``/``_seq`` and the generators ``rng``/``_ovh_rng``)."""

    def _admit(self, m: ModelState, t: float) -> None:
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

    def _acquire(self, m: ModelState, t: float) -> None:
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

    def _form(self, m: ModelState, t: float, k: int, blocked: bool) -> None:
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

    def _plan(self, m: ModelState, t: float, need: int, first: bool) -> None:
        """Consume future arrivals into the forming batch; schedule its dispatch."""
        arr_l, i, n = m.arr_l, m.next_idx, m.n_arr
        m.f_i0 = i
        if first:
            if i >= n:  # no arrival will ever come: wait forever
                m.f_i1 = i
                m.f_t1 = m.f_deadline = m.f_t2 = INF
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
            heapq.heappush(self._heap, (t2, next(self._seq), DISPATCH, m, None, m.token))

    def _unwind(self, m: ModelState, t: float) -> int:
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
        m.f_t2 = INF
        return (len(m.f_front) if m.f_front else 0) + m.f_e - m.f_s

    def _holder_batch(self, m: ModelState) -> np.ndarray:
        part = m.qbuf[m.f_s : m.f_e]
        if m.f_front:
            return np.concatenate([np.asarray(m.f_front, dtype=np.float64), part])
        return part

    def _dispatch(self, m: ModelState, t: float) -> None:
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
        exec_s = (
            m.lat_s[b]
            if b <= MAX_BATCH_LIMIT
            else m.spec.latency.batch_ms(b) * dev.spec.cpu_scale / 1000.0
        )
        if not dev.slotted:
            active = dev.active = dev.active + m.threads
            if dev.host_load:
                k = int(t // HOST_LOAD_BIN_S)
                active += dev.host_load[k] if k < len(dev.host_load) else 0.0
            if active > dev.capacity:
                exec_s *= active / dev.capacity
        if m.jitter:
            exec_s *= self._noise(m)
        if dev.slotted:
            exec_s = _slot_time(dev, m, w, t, exec_s)
        w.state = BUSY
        w.start = t
        heapq.heappush(self._heap, (t + exec_s, next(self._seq), COMPLETE, m, w, w.epoch))
        m.batches += 1
        m.size_sum += b
        m.fill_sum += b / m.B
        m.holder = None
        m.token += 1
        if m.idle:
            self._acquire(m, t)

    def _complete(self, m: ModelState, w: WorkerState, t: float) -> None:
        """Worker ``w`` finishes its batch at ``t``: record it; the worker goes idle."""
        _release(m, w)
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
        w.state = IDLE
        m.idle.append(w)
        if m.holder is None:
            self._acquire(m, t)

    def _flush(self, m: ModelState) -> None:
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

    def _overheads(self, m: ModelState, k: int) -> np.ndarray:
        """``k`` draws (s) from the model's overhead distribution (block-buffered)."""
        if m.ovh_i + k > m.ovh_buf.size:
            q = m.ovh_q
            u = self._ovh_rng.random(max(NOISE_BLOCK, k)) * (q.size - 1)
            m.ovh_buf = np.interp(u, np.arange(q.size, dtype=np.float64), q)
            m.ovh_i = 0
        out = m.ovh_buf[m.ovh_i : m.ovh_i + k]
        m.ovh_i += k
        return out

    def _noise(self, m: ModelState) -> float:
        if m.noise_i >= NOISE_BLOCK:
            s2 = math.log1p(m.spec.exec_cv**2)
            m.noise = self.rng.lognormal(-0.5 * s2, math.sqrt(s2), NOISE_BLOCK).tolist()
            m.noise_i = 0
        m.noise_i += 1
        return m.noise[m.noise_i - 1]

    def _requeue(self, m: ModelState, jobs: np.ndarray) -> None:
        """``addFirst`` each job in batch order (so reversed); overflow is lost."""
        space = max(m.cap - (len(m.front) + m.tail - m.head), 0)
        acc = min(space, len(jobs))
        if acc:
            m.front[:0] = jobs[:acc][::-1].tolist()
        m.failed += len(jobs) - acc

    def _kill(self, m: ModelState, w: WorkerState, t: float) -> bool:
        """Scale-down of one worker (no drain); True if jobs went back to the queue."""
        requeued = False
        if w.state == IDLE:
            m.idle.remove(w)
        elif w.state == _FORMING:
            self._unwind(m, t)
            jobs = self._holder_batch(m).copy()
            m.holder = None
            m.f_front = None
            self._requeue(m, jobs)
            requeued = len(jobs) > 0
        elif w.state == BUSY:
            _release(m, w)
            m.busy_done += t - w.start
            self._requeue(m, m.qbuf[w.bs : w.be] if w.batch is None else w.batch)
            requeued = True
            w.batch = None
        w.epoch += 1
        w.state = _DEAD
        m.workers.pop(m.workers.index(w))
        return requeued
