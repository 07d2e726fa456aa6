"""Nexus's squishy bin packing (Shen et al., SOSP'19, Algorithm 1), re-planned every epoch.

Compared with the paper (https://homes.cs.washington.edu/~arvind/papers/nexus.pdf;
tests/test_fleet_nexus.py reproduces its Section 4.1 example) and with the authors' scheduler
(https://github.com/uwsampl/nexus, src/nexus/scheduler/).

For each session (model, request rate ``r``, SLO ``L``, batch profile ``l(b)``):

1. *Batch from the SLO*: a request may wait one whole batch and run in the next, so the batch
   ``B`` is the largest with ``l(B) <= L / 2``; one GPU running it back to back serves
   ``T = B / l(B)``.
2. *Saturate whole GPUs*: ``floor(r / T)`` GPUs run the model alone at ``B``.
3. *Residual load* ``r' = r - n T``: the largest batch ``b <= B`` whose duty cycle ``d = b / r'``
   satisfies ``d + l(b) <= L`` and ``l(b) <= d``; its GPU occupancy is ``l(b) / d``. A load too
   light for even ``b = 1`` (``1 / r' + l(1) > L``) gets ``d = L - l(1)``, as the authors'
   scheduler does (``d = min(L - l(b), b / r')``); a residual with no such node takes one more
   whole GPU.
4. *Pack residuals by occupancy*: sort residual nodes by occupancy, largest first; merge each
   into the existing node that ends up with the highest occupancy (best fit), else open a GPU.
   Merging takes the smaller duty cycle ``d``; each session's batch becomes ``ceil(r_i d)``;
   the merge is feasible when ``sum l(b_i) <= d`` and ``d + l(b_i) <= L_i`` for every
   session (plus our slot count and GPU memory).

Sessions on one GPU run sequentially in the duty cycle: sequential slots here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tsadapt.fleet.catalog import Catalogue, FleetModel
from tsadapt.fleet.constants import GPU_MEMORY_GIB, NEXUS_EPOCH_S, NEXUS_HEADROOM, SLOTS_PER_GPU
from tsadapt.fleet.types import EMPTY, FleetObservation, Slot, SlotAction


@dataclass(frozen=True)
class Session:
    """A model's load to place: its rate (req/s), SLO and profile."""

    model: int
    rate: float
    profile: FleetModel


@dataclass(frozen=True)
class Node:
    """One planned GPU: ``(model, batch, rate)`` per session, duty cycle and occupancy."""

    sessions: tuple[tuple[int, int, float], ...]
    duty_ms: float
    occupancy: float

    @property
    def models(self) -> tuple[int, ...]:
        return tuple(m for m, _, _ in self.sessions)


def _node(items: Sequence[tuple[Session, float]], duty_ms: float) -> Node | None:
    """``items`` (session, rate) sharing one GPU at ``duty_ms``; None if infeasible."""
    if len(items) > SLOTS_PER_GPU:
        return None
    if sum(s.profile.memory_gib for s, _ in items) > GPU_MEMORY_GIB:
        return None
    busy, out = 0.0, []
    for s, r in items:
        b = max(1, math.ceil(r * duty_ms / 1000.0 - 1e-9))
        if b > s.profile.max_batch:
            return None
        lat = s.profile.batch_ms(b)
        if duty_ms + lat > s.profile.slo_ms:
            return None
        busy += lat
        out.append((s.model, b, r))
    if busy > duty_ms + 1e-9:
        return None
    return Node(tuple(out), duty_ms, busy / duty_ms)


def residual_node(s: Session, r: float) -> Node | None:
    """Step 3: the residual ``r`` of ``s`` alone on a GPU (None: it needs a whole GPU)."""
    p = s.profile
    for b in range(p.max_batch, 0, -1):
        lat = p.batch_ms(b)
        duty = 1000.0 * b / r
        if b == 1 and duty + lat > p.slo_ms:  # too little load to fill even one: run it alone
            duty = p.slo_ms - lat
        if lat <= duty and duty + lat <= p.slo_ms:
            return Node(((s.model, b, r),), duty, lat / duty)
    return None


def merge(a: Node, b: Node, sessions: dict[int, Session]) -> Node | None:
    """Step 4's merge of two nodes, or None if infeasible."""
    duty = min(a.duty_ms, b.duty_ms)
    items = [(sessions[m], r) for m, _, r in a.sessions + b.sessions]
    return _node(items, duty)


def squishy_bin_packing(sessions: Sequence[Session]) -> list[Node]:
    """Algorithm 1: saturated GPUs first, then residual nodes packed by occupancy."""
    full: list[Node] = []
    residual: list[Node] = []
    by_model = {s.model: s for s in sessions}
    for s in sessions:
        if s.rate <= 0:
            continue
        p = s.profile
        big = p.max_batch
        thr = p.throughput(big)
        n = int(s.rate // thr)
        r = s.rate - n * thr
        node = residual_node(s, r) if r > 1e-9 else None
        if r > 1e-9 and node is None:
            n += 1
        full += [Node(((s.model, big, thr),), p.batch_ms(big), 1.0)] * n
        if node is not None:
            residual.append(node)
    residual.sort(key=lambda x: -x.occupancy)
    packed: list[Node] = []
    for node in residual:
        best, where = None, -1
        for i, other in enumerate(packed):
            m = merge(other, node, by_model)
            if m is not None and (best is None or m.occupancy > best.occupancy):
                best, where = m, i
        if best is None:
            packed.append(node)
        else:
            packed[where] = best
    return full + packed


def plan_actions(
    nodes: Sequence[Node], slots: Sequence[Sequence[Slot]]
) -> tuple[list[SlotAction], int]:
    """Map planned nodes onto physical GPUs, keeping models where they are (fewest slot
    switches, greedy by overlap); the slot actions and the count of nodes with no GPU."""
    G = len(slots)
    where: dict[int, set[int]] = {}
    for g, row in enumerate(slots):
        for s in row:
            if not s.empty:
                where.setdefault(s.model, set()).add(g)
    free = set(range(G))
    target: dict[int, Node] = {}
    order = sorted(range(len(nodes)), key=lambda i: (-len(nodes[i].sessions), -nodes[i].occupancy))
    dropped = 0
    for i in order:
        if not free:
            dropped += 1
            continue
        score: dict[int, int] = {}
        for m in nodes[i].models:
            for g in where.get(m, ()):
                if g in free:
                    score[g] = score.get(g, 0) + 1
        g = max(score, key=lambda x: (score[x], -x)) if score else min(free)
        free.discard(g)
        target[g] = nodes[i]
    actions: list[SlotAction] = []
    for g, row in enumerate(slots):
        node = target.get(g)
        want = {m: b for m, b, _ in node.sessions} if node else {}
        keep: dict[int, int] = {}  # model -> the slot that keeps it
        for k, s in enumerate(row):
            if s.model in want and s.model not in keep:
                keep[s.model] = k
                if s.batch != want[s.model] or s.parallel:
                    actions.append(SlotAction(g, k, s.model, want[s.model], False))
        todo = [m for m in want if m not in keep]
        kept = set(keep.values())
        for k, s in enumerate(row):
            if k in kept:
                continue
            if todo:
                m = todo.pop(0)
                actions.append(SlotAction(g, k, m, want[m], False))
            elif not s.empty:
                actions.append(SlotAction(g, k, EMPTY, 1, False))
    return actions, dropped


class NexusPolicy:
    """Re-plans the fleet every :data:`NEXUS_EPOCH_S` from the observed rates."""

    name = "nexus"

    def __init__(
        self, cat: Catalogue, epoch_s: float = NEXUS_EPOCH_S, headroom: float = NEXUS_HEADROOM
    ) -> None:
        self.cat = cat
        self.epoch_s = epoch_s
        self.headroom = headroom
        self._next = 0.0
        self.unplaced = 0

    def decide(self, observation: FleetObservation) -> tuple[SlotAction, ...]:
        if observation.time_s + 1e-9 < self._next:
            return ()
        self._next = observation.time_s + self.epoch_s
        sessions = [
            Session(v.index, v.rate_rps * self.headroom, self.cat.models[v.index])
            for v in observation.models
        ]
        nodes = squishy_bin_packing(sessions)
        actions, dropped = plan_actions(nodes, observation.slots)
        self.unplaced += dropped
        return tuple(actions)
