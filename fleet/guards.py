"""The fleet's guards: every policy's slot actions pass through them, in this order.

1. :func:`bounds`      - the slot exists, the model exists, the batch is within 1..max_batch
                         (the model's SLO rule).
2. :func:`cooldown`    - a slot that switched model within ``SWITCH_COOLDOWN_S`` keeps it.
3. :func:`keep_served` - no tick leaves a model that has traffic without any slot.
4. :func:`memory`      - a GPU's workers fit its memory (per-model worker memory), counting
                         replaced workers that still serve until their successors are ready.

Each returns the actions it keeps and an :class:`Override` for each it changed or dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from tsadapt.fleet.catalog import Catalogue
from tsadapt.fleet.constants import GPU_MEMORY_GIB, SWITCH_COOLDOWN_S
from tsadapt.fleet.types import EMPTY, FleetObservation, Override, SlotAction

Actions = list[SlotAction]


@dataclass
class GuardState:
    """When each slot last switched model (controller clock, s)."""

    last_switch: dict[tuple[int, int], float] = field(default_factory=dict)


def bounds(actions: Sequence[SlotAction], obs: FleetObservation, cat: Catalogue):
    """Drop actions on slots or models that do not exist; clamp the batch to the SLO rule."""
    kept: Actions = []
    over: list[Override] = []
    G, S = len(obs.slots), len(obs.slots[0]) if obs.slots else 0
    for a in actions:
        if not (0 <= a.gpu < G and 0 <= a.slot < S):
            over.append(Override(a.gpu, a.slot, "bounds", f"no slot {a.slot} on GPU {a.gpu}"))
            continue
        if not (a.model == EMPTY or 0 <= a.model < len(cat.models)):
            over.append(Override(a.gpu, a.slot, "bounds", f"no model {a.model}"))
            continue
        if a.model != EMPTY:
            hi = cat.models[a.model].max_batch
            b = min(max(a.batch, 1), hi)
            if b != a.batch:
                over.append(Override(a.gpu, a.slot, "bounds", f"batch {a.batch} -> {b} (1..{hi})"))
                a = replace(a, batch=b)
        kept.append(a)
    return kept, over


def cooldown(actions: Sequence[SlotAction], obs: FleetObservation, state: GuardState, now: float):
    """Veto a model switch on a slot that switched less than ``SWITCH_COOLDOWN_S`` ago."""
    kept: Actions = []
    over: list[Override] = []
    for a in actions:
        switch = obs.slots[a.gpu][a.slot].model != a.model
        last = state.last_switch.get((a.gpu, a.slot))
        if switch and last is not None and now - last < SWITCH_COOLDOWN_S:
            over.append(Override(a.gpu, a.slot, "cooldown", f"switched {now - last:.0f} s ago"))
            continue
        kept.append(a)
    return kept, over


def keep_served(actions: Sequence[SlotAction], obs: FleetObservation):
    """Veto the removals that would leave a model with traffic without any slot."""
    count = {v.index: v.slots for v in obs.models}
    for a in actions:
        old = obs.slots[a.gpu][a.slot].model
        if old != a.model:
            if old != EMPTY:
                count[old] -= 1
            if a.model != EMPTY:
                count[a.model] += 1
    starved = {v.index for v in obs.models if v.slots and v.rate_rps > 0 and count[v.index] <= 0}
    kept: Actions = []
    over: list[Override] = []
    for a in actions:
        old = obs.slots[a.gpu][a.slot].model
        if old in starved and a.model != old:
            over.append(
                Override(a.gpu, a.slot, "keep_served", f"last slot of model {old} with traffic")
            )
            starved.discard(old)  # keeping one slot is enough
            continue
        kept.append(a)
    return kept, over


def memory(actions: Sequence[SlotAction], obs: FleetObservation, cat: Catalogue):
    """Veto an action after which its GPU's workers (draining ones included) would exceed
    ``GPU_MEMORY_GIB``."""
    slots = [list(g) for g in obs.slots]
    kept: Actions = []
    over: list[Override] = []
    for a in actions:
        row = slots[a.gpu]
        trial = row.copy()
        trial[a.slot] = a.slot_value()
        need = sum(cat.models[s.model].memory_gib for s in trial if not s.empty)
        need += obs.draining_gib[a.gpu] if obs.draining_gib else 0.0
        if a.model != EMPTY and need > GPU_MEMORY_GIB:
            over.append(
                Override(a.gpu, a.slot, "memory", f"{need:.1f} GiB > {GPU_MEMORY_GIB:g} GiB")
            )
            continue
        slots[a.gpu] = trial
        kept.append(a)
    return kept, over


def guard(
    actions: Sequence[SlotAction],
    obs: FleetObservation,
    cat: Catalogue,
    state: GuardState,
    now: float,
) -> tuple[Actions, list[Override]]:
    """All guards in order; records the switches that pass in ``state``."""
    acts, over = bounds(actions, obs, cat)
    acts, o = cooldown(acts, obs, state, now)
    over += o
    acts, o = keep_served(acts, obs)
    over += o
    acts, o = memory(acts, obs, cat)
    over += o
    for a in acts:
        if obs.slots[a.gpu][a.slot].model != a.model:
            state.last_switch[(a.gpu, a.slot)] = now
    return acts, over


def memory_of(cat: Catalogue, models: Mapping[int, int]) -> float:
    """GiB taken by ``{model: workers}`` on one GPU."""
    return sum(cat.models[m].memory_gib * k for m, k in models.items())
