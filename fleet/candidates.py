"""DNN-Adapt's slot action, masked to a short list of candidates the policy scores.

The full action (slot incl. no-op x model incl. empty x batch x parallel flag) has
``(G S + 1)(M + 1) 20`` values, almost all of them useless or vetoed; a network over it
must also change shape with the fleet. Each tick we therefore list :data:`K` candidate slot
actions - every one an action of that space - and describe each by the same features, so one
network scores them whatever the fleet's size (the scorer is shared across candidates):

* ``noop``      - change nothing (always candidate 0);
* ``grow``      - add a slot for a model under pressure: on the in-use GPU with a free slot
  that stays least busy, or on an empty GPU;
* ``remove``    - empty a slot whose model keeps another slot (first on GPUs with few slots:
  those removals empty a GPU);
* ``relocate``  - add a slot, on another in-use GPU, for a model of a lightly used GPU (the
  first half of a move; the second half is a ``remove``);
* ``batch``     - a model's batch down 4 (latency) or up 4 (throughput);
* ``parallel``  - set or clear a slot's parallel flag.

A new slot's batch is the largest ``b <= max_batch`` with ``cycle + 2 l(b) <= SLO``
(``cycle`` = the batch latencies of the GPU's other sequential slots: wait one cycle, run).
Estimates (:class:`Load`) follow the simulator's routing: a model's rate splits over its
GPUs in proportion to their capacity; a GPU's sequential slots take turns.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from tsadapt.fleet.catalog import Catalogue
from tsadapt.fleet.constants import BATCH_STEP, GPU_MEMORY_GIB
from tsadapt.fleet.types import EMPTY, FleetObservation, Slot, SlotAction, turns

KINDS = ("noop", "grow", "remove", "relocate", "batch", "parallel")
#: How many of each kind a tick offers (padded with invalid entries).
QUOTA = {"noop": 1, "grow": 6, "remove": 6, "relocate": 6, "batch": 4, "parallel": 2}
K = sum(QUOTA.values())
#: How many of each kind are generated before the infeasible ones are masked out.
GEN = {k: 2 * v for k, v in QUOTA.items()}
#: A candidate is masked out when it would leave its GPU's cycle + a batch over an SLO
#: (tightness > 1), a GPU already in use busier than this, or a model it removes a slot of
#: above this pressure: moves that break an SLO by construction.
MAX_BUSY = 0.9
#: Per-candidate features: valid, kind one-hot (5, no-op is all zero), model pressure before
#: and after, model attainment, model queue, GPU busy before and after, GPU tightness after,
#: change in GPUs in use.
CAND_FEATURES = 1 + (len(KINDS) - 1) + 8
#: Fleet features: GPUs in use, mean busy of the GPUs in use, attainment (rate-weighted),
#: largest pressure, share of the rate missing 99 %, load in GPUs / GPUs in use.
FLEET_FEATURES = 6


@dataclass(frozen=True)
class Candidate:
    kind: str
    action: SlotAction | None
    model: int = EMPTY
    gpu: int = -1
    #: the estimates after it (see :func:`_after`); None for the no-op
    after: tuple[float, float, float, float, int] | None = None


class Load:
    """Capacities, pressure and GPU busy fractions of a slot layout at the observed rates."""

    def __init__(self, obs: FleetObservation, cat: Catalogue) -> None:
        self.cat = cat
        self.lat = cat.latency_table
        self.slo = np.array([m.slo_ms for m in cat.models])
        self.need = np.array([m.memory_gib for m in cat.models])
        self.rates = np.array([v.rate_rps for v in obs.models])
        self.slots = [list(r) for r in obs.slots]
        self.caps = [self._gpu_caps(r) for r in self.slots]  # per GPU: model -> req/s
        self.cap = np.zeros(len(cat.models))
        for c in self.caps:
            for m, v in c.items():
                self.cap[m] += v
        self.busy_now = np.array([self.busy(g) for g in range(len(self.slots))])
        self.cycle = np.array([self._cycle(r) for r in self.slots])
        self.mem = np.array([self.memory(r) for r in self.slots])
        # per GPU x slot: batch latency and SLO of the slot's model (0 and inf when empty)
        model = np.array([[s.model for s in r] for r in self.slots], dtype=np.int64)
        batch = np.array([[s.batch for s in r] for r in self.slots], dtype=np.int64)
        busy = model != EMPTY
        self.slot_lat = np.where(busy, self.lat[np.where(busy, model, 0), batch], 0.0)
        self.slot_slo = np.where(busy, self.slo[np.where(busy, model, 0)], np.inf)

    def _row_arrays(self, g: int) -> None:
        for k, s in enumerate(self.slots[g]):
            busy = not s.empty
            self.slot_lat[g, k] = self.lat[s.model, s.batch] if busy else 0.0
            self.slot_slo[g, k] = self.slo[s.model] if busy else np.inf

    def after(self, a: SlotAction) -> Load:
        """The layout after ``a`` (as :meth:`FleetSim.apply` sets it: a model's slots on one
        GPU share the acted slot's batch and flag), recomputing only what ``a`` changes."""
        out = copy.copy(self)
        g, new = a.gpu, a.slot_value()
        row = self.slots[g].copy()
        row[a.slot] = new
        if not new.empty:
            row = [new if s.model == new.model else s for s in row]
        out.slots = self.slots.copy()
        out.slots[g] = row
        out.caps = self.caps.copy()
        out.caps[g] = out._gpu_caps(row)
        out.cap = self.cap.copy()
        touched = set(self.caps[g]) | set(out.caps[g])
        for m in touched:
            out.cap[m] += out.caps[g].get(m, 0.0) - self.caps[g].get(m, 0.0)
        out.cycle, out.mem = self.cycle.copy(), self.mem.copy()
        out.cycle[g], out.mem[g] = out._cycle(row), out.memory(row)
        out.slot_lat, out.slot_slo = self.slot_lat.copy(), self.slot_slo.copy()
        out._row_arrays(g)
        out.busy_now = self.busy_now.copy()
        for h, r in enumerate(out.slots):
            if h == g or any(s.model in touched for s in r):
                out.busy_now[h] = out.busy(h)
        return out

    def _cycle(self, row: list[Slot]) -> float:
        return float(sum(self.lat[s.model, s.batch] for s in row if not s.empty))

    def _gpu_caps(self, row: list[Slot]) -> dict[int, float]:
        out: dict[int, float] = {}
        n = max(1, turns(row))
        for s in row:
            if not s.empty:
                thr = 1000.0 * s.batch / self.lat[s.model, s.batch]
                out[s.model] = out.get(s.model, 0.0) + thr / n
        return out

    def pressure(self, m: int, cap: float | None = None) -> float:
        c = self.cap[m] if cap is None else cap
        r = self.rates[m]
        return 0.0 if r <= 0 else (r / c if c > 0 else 4.0)

    def busy(self, g: int, row: list[Slot] | None = None, cap: np.ndarray | None = None) -> float:
        """Share of GPU ``g``'s time its slots need at the observed rates."""
        row = self.slots[g] if row is None else row
        caps = self._gpu_caps(row) if row is not self.slots[g] else self.caps[g]
        total = self.cap if cap is None else cap
        out = 0.0
        for s in row:
            if s.empty or total[s.model] <= 0:
                continue
            share = caps[s.model] / total[s.model] * self.rates[s.model]
            n = sum(1 for x in row if x.model == s.model)
            out += share / n * self.lat[s.model, s.batch] / s.batch / 1000.0
        return out

    def tightness(self, row: list[Slot]) -> float:
        """Largest (one cycle of the GPU's sequential batches + own batch) / SLO on a GPU."""
        cycle = self._cycle(row)
        return max(
            ((cycle + self.lat[s.model, s.batch]) / self.slo[s.model] for s in row if not s.empty),
            default=0.0,
        )

    def memory(self, row: list[Slot]) -> float:
        return sum(self.cat.models[s.model].memory_gib for s in row if not s.empty)

    def fit_batch(self, g: int, m: int) -> int:
        """A new slot's batch for model ``m`` on GPU ``g`` (see the module docstring)."""
        hi = self.cat.models[m].max_batch
        ok = np.nonzero(self.cycle[g] + 2 * self.lat[m, 1 : hi + 1] <= self.slo[m])[0]
        return int(ok[-1]) + 1 if ok.size else 1

    def in_use(self, row: list[Slot]) -> bool:
        return any(not s.empty for s in row)


def _free_slot(row: list[Slot]) -> int | None:
    return next((k for k, s in enumerate(row) if s.empty), None)


def _add_target(load: Load, m: int, exclude: int = -1) -> int | None:
    """The in-use GPU (not ``exclude``) with a free slot and memory where adding ``m`` leaves
    it least tight (ties: least busy, then the lowest index); over all GPUs at once."""
    cycle = load.cycle
    ok = (cycle > 0) & np.isinf(load.slot_slo).any(axis=1)
    ok &= load.mem + load.need[m] <= GPU_MEMORY_GIB
    if 0 <= exclude < ok.size:
        ok[exclude] = False
    where = np.flatnonzero(ok)
    if not where.size:
        return None
    hi = load.cat.models[m].max_batch
    cyc = cycle[where]
    fits = cyc[:, None] + 2 * load.lat[m, 1 : hi + 1][None, :] <= load.slo[m]
    batch = np.where(fits.any(axis=1), hi - np.argmax(fits[:, ::-1], axis=1), 1)
    lat = load.lat[m, batch]
    cyc = cyc + lat
    tight = np.maximum(
        (cyc + lat) / load.slo[m],
        ((cyc[:, None] + load.slot_lat[where]) / load.slot_slo[where]).max(axis=1),
    )
    busy = load.busy_now[where]
    return int(where[np.lexsort((busy, tight))[0]])


def _add(load: Load, kind: str, m: int, g: int) -> Candidate:
    k = _free_slot(load.slots[g])
    return Candidate(kind, SlotAction(g, k, m, load.fit_batch(g, m)), m, g)


def candidates(
    obs: FleetObservation,
    cat: Catalogue,
    load: Load | None = None,
    exclude: frozenset[tuple[int, int]] = frozenset(),
) -> list[Candidate]:
    """This tick's candidate slot actions, :data:`QUOTA` of each kind at most (no padding);
    none on a slot ``(gpu, slot)`` in ``exclude`` (the slots this tick's picks changed)."""
    load = load or Load(obs, cat)
    att = {v.index: v.attainment for v in obs.models}
    active = [m for m in range(len(cat.models)) if load.rates[m] > 0]
    out: dict[str, list[Candidate]] = {k: [] for k in KINDS}
    out["noop"].append(Candidate("noop", None))
    in_use = [g for g, row in enumerate(load.slots) if load.in_use(row)]
    empty = next((g for g, row in enumerate(load.slots) if not load.in_use(row)), None)
    # grow: the most pressed models, on an in-use GPU and on an empty one
    for m in sorted(active, key=lambda m: -load.pressure(m))[: GEN["grow"] // 2]:
        g = _add_target(load, m)
        if g is not None:
            out["grow"].append(_add(load, "grow", m, g))
        if empty is not None and cat.models[m].memory_gib <= GPU_MEMORY_GIB:
            out["grow"].append(_add(load, "grow", m, empty))
    # remove: slots whose model keeps another, on GPUs with few slots and little load first
    count = Counter(s.model for row in load.slots for s in row)
    owned = {m: count[m] for m in active}
    rem = []
    for g in in_use:
        row = load.slots[g]
        n = sum(1 for s in row if not s.empty)
        for k, s in enumerate(row):
            if not s.empty and (owned.get(s.model, 0) > 1 or load.rates[s.model] <= 0):
                rem.append((n, load.busy_now[g], g, k, s.model))
    for _, _, g, k, m in sorted(rem)[: GEN["remove"]]:
        out["remove"].append(Candidate("remove", SlotAction(g, k, EMPTY, 1), m, g))
    # relocate: models of the least busy GPUs, added on another in-use GPU
    for g in sorted(in_use, key=lambda g: load.busy_now[g])[: GEN["relocate"]]:
        for m in dict.fromkeys(s.model for s in load.slots[g] if not s.empty):
            if len(out["relocate"]) >= GEN["relocate"]:
                break
            t = _add_target(load, m, exclude=g)
            if t is not None:
                out["relocate"].append(_add(load, "relocate", m, t))
    # batch: down for the models missing their SLO most, up for the most pressed
    slotted = [m for m in active if owned.get(m, 0)]
    for m in sorted(slotted, key=lambda m: att[m])[: GEN["batch"] // 2]:
        g, k, s = _slot_of(load, m)
        if s.batch > 1:
            b = max(1, s.batch - BATCH_STEP)
            out["batch"].append(Candidate("batch", SlotAction(g, k, m, b, s.parallel), m, g))
    for m in sorted(slotted, key=lambda m: -load.pressure(m))[: GEN["batch"] // 2]:
        g, k, s = _slot_of(load, m)
        if s.batch < cat.models[m].max_batch:
            b = min(cat.models[m].max_batch, s.batch + BATCH_STEP)
            out["batch"].append(Candidate("batch", SlotAction(g, k, m, b, s.parallel), m, g))
    # parallel: set a flag on the busiest shared GPU, clear one on the least busy
    shared = [g for g in in_use if sum(1 for s in load.slots[g] if not s.empty) > 1]
    for g in sorted(shared, key=lambda g: -load.busy_now[g]):
        k = next((k for k, s in enumerate(load.slots[g]) if not s.empty and not s.parallel), None)
        if k is not None:
            s = load.slots[g][k]
            out["parallel"].append(
                Candidate("parallel", SlotAction(g, k, s.model, s.batch, True), s.model, g)
            )
            break
    for g in sorted(in_use, key=lambda g: load.busy_now[g]):
        k = next((k for k, s in enumerate(load.slots[g]) if s.parallel), None)
        if k is not None:
            s = load.slots[g][k]
            out["parallel"].append(
                Candidate("parallel", SlotAction(g, k, s.model, s.batch, False), s.model, g)
            )
            break
    kept = []
    for kind in KINDS:
        fresh = [c for c in out[kind] if c.action is None or _slot(c) not in exclude]
        ok = [c for c in (_with_after(load, c) for c in fresh) if _feasible(c)]
        kept += ok[: QUOTA[kind]]
    return kept


def _slot(c: Candidate) -> tuple[int, int]:
    return c.action.gpu, c.action.slot


def _with_after(load: Load, c: Candidate) -> Candidate:
    return c if c.action is None else replace(c, after=_after(load, c))


def _feasible(c: Candidate) -> bool:
    if c.after is None or c.kind == "parallel":
        return True
    pressure, busy, tight, _, d_gpus = c.after
    if c.kind == "remove":
        return pressure <= MAX_BUSY
    return tight <= 1.0 and (c.kind == "batch" or d_gpus == 1 or busy <= MAX_BUSY)


def _slot_of(load: Load, m: int) -> tuple[int, int, Slot]:
    """Model ``m``'s slot on its tightest GPU."""
    best = None
    for g, row in enumerate(load.slots):
        for k, s in enumerate(row):
            if s.model == m:
                t = load.tightness(row)
                if best is None or t > best[0]:
                    best = (t, g, k, s)
    return best[1], best[2], best[3]


def _after(load: Load, c: Candidate) -> tuple[float, float, float, float, int]:
    """Pressure of the candidate's model, its GPU's busy share and tightness after it, the
    GPU's busy share before, and the change in GPUs in use."""
    a = c.action
    row = load.slots[a.gpu]
    new = row.copy()
    new[a.slot] = a.slot_value()
    old_caps, new_caps = load.caps[a.gpu], load._gpu_caps(new)
    cap = load.cap.copy()
    for m in set(old_caps) | set(new_caps):
        cap[m] += new_caps.get(m, 0.0) - old_caps.get(m, 0.0)
    d_gpus = int(load.in_use(new)) - int(load.in_use(row))
    return (
        load.pressure(c.model, cap[c.model]),
        load.busy(a.gpu, new, cap),
        load.tightness(new),
        load.busy_now[a.gpu],
        d_gpus,
    )


def encode(obs: FleetObservation, cat: Catalogue, cands: list[Candidate], load: Load) -> np.ndarray:
    """The observation vector: :data:`K` x :data:`CAND_FEATURES`, then the fleet features;
    every entry in [0, 1]."""
    views = {v.index: v for v in obs.models}
    x = np.zeros((K, CAND_FEATURES), dtype=np.float32)
    for i, c in enumerate(cands[:K]):
        x[i, 0] = 1.0
        if c.kind == "noop":
            continue
        x[i, KINDS.index(c.kind)] = 1.0
        p_after, busy_after, tight, busy_before, d = c.after
        v = views[c.model]
        x[i, 6:] = (
            load.pressure(c.model) / 2,
            p_after / 2,
            v.attainment,
            v.queue / 1000.0,
            busy_before,
            busy_after,
            tight / 2,
            (d + 1) / 2,
        )
    in_use = [g for g, row in enumerate(load.slots) if load.in_use(row)]
    rate = load.rates.sum()
    att = sum(v.attainment * v.rate_rps for v in obs.models) / rate if rate > 0 else 1.0
    miss = sum(v.rate_rps for v in obs.models if v.attainment < 0.99) / rate if rate > 0 else 0.0
    need = sum(r / m.throughput(m.max_batch) for r, m in zip(load.rates, cat.models, strict=True))
    n = max(1, len(in_use))
    fleet = np.array(
        [
            len(in_use) / cat.gpus,
            float(np.mean([load.busy_now[g] for g in in_use])) if in_use else 0.0,
            att,
            max((load.pressure(m) for m in range(len(cat.models))), default=0.0) / 2,
            miss,
            need / n,
        ],
        dtype=np.float32,
    )
    return np.clip(np.concatenate([x.ravel(), fleet]), 0.0, 1.0)


def obs_size() -> int:
    return K * CAND_FEATURES + FLEET_FEATURES
