"""The fleet simulator: G GPUs x S slots on the one discrete-event core.

Each GPU is a slotted device of :class:`~tsadapt.policy.sim.simulator.Simulator` (sequential
slots take turns, parallel ones pay the fitted interference: :mod:`tsadapt.fleet.interference`).
A model placed on a GPU is one TorchServe model on that GPU's host (``deviceIds: [g]``): one
simulator model ``name@gN`` with its own job queue, whose workers are the model's slots on the
GPU. TorchServe has one ``batchSize`` and delay per registered model, so a model's slots on one
GPU share them (an action on one slot sets them for all). New workers serve after
:data:`WORKER_START_S`; a removed worker's jobs go back to its queue (the core's scale-down);
a model taken off a GPU altogether leaves that queue unanswered (counted as SLO misses).

Routing: every tick each model's arrivals of the next tick are split at random over its GPUs in
proportion to their capacity share (ready workers x throughput at their batch / turns on the
GPU), as a front end with a routing table would; a model with no worker rejects them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tsadapt.fleet.catalog import Catalogue, FleetModel
from tsadapt.fleet.constants import (
    FLEET_QUEUE_SIZE,
    SLOTS_PER_GPU,
    TICK_S,
    WINDOW_S,
    WORKER_START_S,
)
from tsadapt.fleet.interference import slowdown_table
from tsadapt.fleet.types import EMPTY, FleetObservation, ModelView, Slot, SlotAction, turns
from tsadapt.policy.sim.simulator import Simulator
from tsadapt.policy.sim.specs import DeviceSpec, IntervalStats, ModelSpec
from tsadapt.policy.types import ModelSettings


def delay_ms(model: FleetModel, batch: int) -> int:
    """The batch delay a slot gets: what is left of half the SLO after the batch runs."""
    return int(max(1, min(model.slo_ms - 1, model.slo_ms / 2 - model.batch_ms(batch))))


def pair_name(model: str, gpu: int) -> str:
    return f"{model}@g{gpu}"


@dataclass
class Totals:
    """Per-model counters over a run (arrivals stop at the horizon; the drain counts)."""

    requests: np.ndarray
    good: np.ndarray
    completed: np.ndarray
    rejected: np.ndarray
    failed: np.ndarray
    fill_sum: float = 0.0
    batches: int = 0


@dataclass
class TickStats:
    """What one tick did across the fleet (for rewards)."""

    good: int
    finished: int
    fill_sum: float
    batches: int


@dataclass
class _Window:
    arrivals: deque = field(default_factory=deque)
    good: deque = field(default_factory=deque)
    finished: deque = field(default_factory=deque)


class FleetSim:
    """G GPUs x S slots serving a :class:`Catalogue`; :meth:`apply` slot actions between ticks."""

    def __init__(self, cat: Catalogue, seed: int = 0, slots_per_gpu: int = SLOTS_PER_GPU) -> None:
        self.cat, self.G, self.S = cat, cat.gpus, slots_per_gpu
        self.M = len(cat.models)
        seeds = np.random.SeedSequence([seed, 7]).spawn(self.M + 2)
        self.arrivals = [
            m.workload.arrivals(cat.horizon_s, np.random.default_rng(s))
            for m, s in zip(cat.models, seeds, strict=False)
        ]
        self._ptr = [0] * self.M
        self._route_rng = np.random.default_rng(seeds[-1])
        table = slowdown_table(n=slots_per_gpu)
        self.sim = Simulator(
            [],
            None,
            [DeviceSpec(f"gpu{g}", 1.0, table) for g in range(self.G)],
            seed=int(seeds[-2].generate_state(1)[0]),
        )
        self.slots: list[list[Slot]] = [[Slot() for _ in range(self.S)] for _ in range(self.G)]
        self._pairs: dict[tuple[int, int], str] = {}
        self._pair_of: dict[str, int] = {}
        self._retiring: dict[str, float] = {}  # pair -> when its replaced workers go
        self.last_stats: dict[str, IntervalStats] = {}
        n = self.M
        self.totals = Totals(*(np.zeros(n, dtype=np.int64) for _ in range(5)))
        self.totals.requests[:] = [len(a) for a in self.arrivals]
        self._win = [_Window() for _ in range(n)]
        self._win_n = max(1, int(round(WINDOW_S / TICK_S)))
        self._queue = np.zeros(n, dtype=np.int64)
        self._unrouted = np.zeros(n, dtype=np.int64)
        self.now = 0.0
        self.gpu_series: list[tuple[float, int]] = []

    # ------------------------------------------------------------------ layout

    @property
    def gpus_in_use(self) -> int:
        """GPUs with an occupied slot or a replaced worker still serving."""
        used = {g for g, row in enumerate(self.slots) if any(not s.empty for s in row)}
        used |= {int(n.rsplit("@g", 1)[1]) for n in self._retiring}
        return len(used)

    def apply(self, actions: Iterable[SlotAction], ready: bool = False) -> int:
        """Set slots (a model's slots on one GPU share the acted slot's batch and flag);
        return how many slots changed. ``ready``: new workers serve at once (the start)."""
        changed, touched = 0, set()
        for a in actions:
            new = a.slot_value()
            if self.slots[a.gpu][a.slot] == new:
                continue
            self.slots[a.gpu][a.slot] = new
            changed += 1
            touched.add(a.gpu)
            if new.model != EMPTY:
                row = self.slots[a.gpu]
                for k, s in enumerate(row):
                    if s.model == new.model and s != new:
                        row[k] = new
        for g in sorted(touched):
            self._sync(g, ready)
        return changed

    def _sync(self, g: int, ready: bool) -> None:
        """Bring the simulator's models on GPU ``g`` in line with its slots."""
        want: dict[int, tuple[int, Slot]] = {}
        for s in self.slots[g]:
            if not s.empty:
                k, _ = want.get(s.model, (0, s))
                want[s.model] = (k + 1, s)
        for (m, gg), name in self._pairs.items():
            if gg == g and m not in want and self.sim.config(name).workers:
                self._retire_later(name, ready)
        for m, (k, s) in want.items():
            model = self.cat.models[m]
            d = delay_ms(model, s.batch)
            name = self._pairs.get((m, g))
            if name is None:
                name = pair_name(model.name, g)
                self._pairs[(m, g)] = name
                self._pair_of[name] = m
                spec = ModelSpec(
                    name=name,
                    latency=model.latency,
                    device=f"gpu{g}",
                    queue_size=FLEET_QUEUE_SIZE,
                    load_delay_s=WORKER_START_S,
                    initial=ModelSettings(s.batch, d, k if ready else 0),
                    parallel=s.parallel,
                )
                self.sim.add_model(spec)
                if ready:
                    continue
            self.sim.set_parallel(name, s.parallel)
            cur = self.sim.config(name).workers
            if k < cur:
                self._retire_later(name, ready)
            else:
                self._retiring.pop(name, None)
            self.sim.set_config(
                name,
                batch_size=s.batch,
                max_batch_delay_ms=d,
                workers=max(k, cur) if k < cur and not ready else k,
            )

    def _retire_later(self, name: str, now: bool) -> None:
        """Make before break: a replaced worker serves until its successor could be ready
        (:data:`WORKER_START_S`), gets no new requests in its last tick, then goes."""
        if now:
            self.sim.set_config(name, workers=self._slot_count(name))
        else:
            self._retiring.setdefault(name, self.now + WORKER_START_S)

    def _slot_count(self, name: str) -> int:
        m = self._pair_of[name]
        g = int(name.rsplit("@g", 1)[1])
        return sum(1 for s in self.slots[g] if s.model == m)

    def _retire_due(self) -> None:
        for name, due in list(self._retiring.items()):
            if due <= self.now + 1e-9:
                del self._retiring[name]
                self.sim.set_config(name, workers=self._slot_count(name))

    # ------------------------------------------------------------------ running

    def _targets(self, m: int) -> tuple[list[str], np.ndarray]:
        """The GPUs serving model ``m`` and their routing weights: ready capacity, not counting
        workers that go within a tick; else any ready capacity; else configured capacity."""
        names, leaving, ready, conf = [], [], [], []
        model = self.cat.models[m]
        for (mm, g), name in self._pairs.items():
            if mm != m:
                continue
            c = self.sim.config(name)
            if not c.workers:
                continue
            due = self._retiring.get(name)
            cap = model.throughput(c.batch_size) / max(1, turns(self.slots[g]))
            names.append(name)
            leaving.append(due is not None and due <= self.now + TICK_S + 1e-9)
            ready.append(self.sim.ready_workers(name) * cap)
            conf.append(c.workers * cap)
        staying = [0.0 if gone else r for r, gone in zip(ready, leaving, strict=True)]
        for w in (staying, ready, conf):
            if sum(w) > 0:
                return names, np.asarray(w, dtype=np.float64)
        return names, np.asarray(conf, dtype=np.float64)

    def _route(self, t_next: float) -> np.ndarray:
        """Send each model's arrivals up to ``t_next`` to its GPUs; the counts per model."""
        offered = np.zeros(self.M, dtype=np.int64)
        for m, arr in enumerate(self.arrivals):
            j0 = self._ptr[m]
            j1 = int(arr.searchsorted(t_next, "right"))
            if j1 <= j0:
                continue
            self._ptr[m] = j1
            chunk = arr[j0:j1]
            offered[m] = len(chunk)
            names, w = self._targets(m)
            if not names:  # no worker anywhere: TorchServe answers 503
                self.totals.rejected[m] += len(chunk)
                self._unrouted[m] += len(chunk)
            elif len(names) == 1:
                self.sim.extend_arrivals(names[0], chunk)
            else:
                pick = self._route_rng.choice(len(names), size=len(chunk), p=w / w.sum())
                for k, name in enumerate(names):
                    part = chunk[pick == k]
                    if part.size:
                        self.sim.extend_arrivals(name, part)
        return offered

    def advance(self, t_next: float) -> TickStats:
        """Route the next tick's arrivals, run the simulator to ``t_next``, account."""
        self._retire_due()
        self.gpu_series.append((self.now, self.gpus_in_use))
        self._unrouted = np.zeros(self.M, dtype=np.int64)
        offered = self._route(t_next)
        stats = self.sim.run_until(t_next)
        self.last_stats = stats
        self.now = t_next
        return self._account(stats.values(), offered)

    def drain(self) -> None:
        """Answer what is still queued (no more arrivals, no more decisions)."""
        self._unrouted = np.zeros(self.M, dtype=np.int64)
        self._account(self.sim.run_until(math.inf).values(), None)

    def _account(self, stats: Iterable[IntervalStats], offered: np.ndarray | None) -> TickStats:
        """Add an interval's stats to the totals (and, with ``offered``, to the window)."""
        t = self.totals
        good = np.zeros(self.M, dtype=np.int64)
        finished = self._unrouted.copy()
        queue = np.zeros(self.M, dtype=np.int64)
        fill, batches = 0.0, 0
        for s in stats:
            m = self._pair_of[s.model]
            slo = self.cat.models[m].slo_ms
            g = int(np.count_nonzero(s.latencies_ms <= slo))
            good[m] += g
            finished[m] += s.completed + s.rejected + s.failed
            queue[m] += s.queue_depth + s.forming
            t.completed[m] += s.completed
            t.rejected[m] += s.rejected
            t.failed[m] += s.failed
            fill += s.fill_sum
            batches += s.batches
        t.good += good
        t.fill_sum += fill
        t.batches += batches
        if offered is not None:
            self._queue = queue
            for m, w in enumerate(self._win):
                w.arrivals.append(int(offered[m]))
                w.good.append(int(good[m]))
                w.finished.append(int(finished[m]))
                for dq in (w.arrivals, w.good, w.finished):
                    while len(dq) > self._win_n:
                        dq.popleft()
        return TickStats(int(good.sum()), int(finished.sum()), fill, batches)

    # ------------------------------------------------------------------ observing

    def observe(self, rates: Sequence[float] | None = None) -> FleetObservation:
        """The observation now; ``rates`` overrides the measured rates (the start)."""
        span = max(1, len(self._win[0].good)) * TICK_S if self._win else TICK_S
        counts = [sum(1 for g in self.slots for s in g if s.model == m) for m in range(self.M)]
        views = []
        for m, (model, w) in enumerate(zip(self.cat.models, self._win, strict=True)):
            fin = sum(w.finished)
            rate = rates[m] if rates is not None else sum(w.arrivals) / span
            views.append(
                ModelView(
                    m,
                    model.slo_ms,
                    float(rate),
                    int(self._queue[m]),
                    sum(w.good) / fin if fin else 1.0,
                    counts[m],
                )
            )
        return FleetObservation(
            self.now, tuple(views), tuple(tuple(g) for g in self.slots), self._draining_gib()
        )

    def _draining_gib(self) -> tuple[float, ...]:
        """GiB per GPU of replaced workers still serving (see :meth:`_retire_later`)."""
        out = [0.0] * self.G
        for name in self._retiring:
            extra = self.sim.config(name).workers - self._slot_count(name)
            if extra > 0:
                g = int(name.rsplit("@g", 1)[1])
                out[g] += extra * self.cat.models[self._pair_of[name]].memory_gib
        return tuple(out)
