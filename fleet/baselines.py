"""Baselines at fleet scale: dedicated GPUs with static batching, the start placement held,
our per-host sidecar rules on a fixed placement, and the hindsight lower bound on GPUs."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from tsadapt.fleet.catalog import Catalogue
from tsadapt.fleet.constants import (
    GPU_MEMORY_GIB,
    NEXUS_HEADROOM,
    SLOTS_PER_GPU,
    TICK_S,
    WINDOW_S,
)
from tsadapt.fleet.interference import slowdown_table
from tsadapt.fleet.nexus import NexusPolicy
from tsadapt.fleet.types import EMPTY, FleetObservation, Slot, SlotAction
from tsadapt.policy.controller_config import ControllerConfig, ModelLimits
from tsadapt.policy.factory import make_policy
from tsadapt.policy.loop import ApplyResult, LoopState, control_step
from tsadapt.policy.sim.control import WindowObserver
from tsadapt.policy.sim.specs import IntervalStats
from tsadapt.policy.types import Action, ModelSettings, Observation


class StaticDedicated:
    """One model per GPU, static batching: each model, most popular first, gets
    ``ceil(peak rate x headroom / T)`` GPUs of its own (one worker at its SLO batch ``B``,
    ``T = B / l(B)``) while GPUs last; models left without a GPU get none (503s)."""

    name = "static"

    def __init__(self, cat: Catalogue, headroom: float = NEXUS_HEADROOM) -> None:
        self.cat, self.headroom, self._done = cat, headroom, False
        self.unplaced = 0

    def decide(self, observation: FleetObservation) -> tuple[SlotAction, ...]:
        if self._done:
            return ()
        self._done = True
        actions, g = [], 0
        for i, m in enumerate(self.cat.models):
            need = math.ceil(m.workload.peak_rate() * self.headroom / m.throughput(m.max_batch))
            for _ in range(max(1, need)):
                if g >= self.cat.gpus:
                    self.unplaced += 1
                    break
                actions.append(SlotAction(g, 0, i, m.max_batch))
                g += 1
        return tuple(actions)


class HoldStart:
    """The shared start placement (Nexus's plan for the t = 0 rates), never changed: what an
    adaptive policy that only ever proposes no-ops would score (a reference for PPO)."""

    name = "hold"

    def __init__(self, cat: Catalogue) -> None:
        self._nexus, self._done = NexusPolicy(cat), False

    def decide(self, observation: FleetObservation) -> tuple[SlotAction, ...]:
        if self._done:
            return ()
        self._done = True
        return self._nexus.decide(observation)


class _Host:
    """One GPU host's sidecar: the real control step over the models placed on it."""

    def __init__(self, gpu: int, pairs: dict[str, int], cat: Catalogue, slots: int) -> None:
        self.gpu, self.pairs, self.cat = gpu, pairs, cat
        limits = tuple(
            ModelLimits(
                name=n,
                slo_ms=cat.models[m].slo_ms,
                min_workers=1,
                max_workers=slots,
                max_batch=cat.models[m].max_batch,
                max_delay_ms=int(cat.models[m].slo_ms // 2),
            )
            for n, m in pairs.items()
        )
        self.config = ControllerConfig(
            models=limits, worker_budget=slots, policy="queue", tick_s=TICK_S, window_s=WINDOW_S
        )
        self.policy = make_policy("queue", self.config)
        self.observer = WindowObserver(
            {n: cat.models[m].slo_ms for n, m in pairs.items()},
            dict.fromkeys(pairs, 1),
            float("inf"),
            WINDOW_S,
            TICK_S,
        )
        self.state = LoopState()
        self.time_s = 0.0
        self.actions: tuple[Action, ...] = ()

    def observe(self) -> Observation:
        return self.observer.observation(self.time_s)

    def apply(
        self, actions: tuple[Action, ...], current: Mapping[str, ModelSettings]
    ) -> tuple[ApplyResult, ...]:
        self.actions = actions
        return tuple(ApplyResult(a.model, a.changes(current[a.model])) for a in actions)


class SidecarRules:
    """Our per-host sidecar (the ``queue`` rule behind its own guards) on every GPU host,
    over a placement fixed at the start (Nexus's plan for the t = 0 rates): it changes the
    batch size and the worker count (slots) of the models on its GPU, never the placement."""

    name = "sidecar"

    def __init__(self, cat: Catalogue) -> None:
        self.cat = cat
        self._hosts: list[_Host] | None = None
        self._nexus = NexusPolicy(cat)

    def on_stats(self, stats: Mapping[str, IntervalStats], time_s: float) -> None:
        for h in self._hosts or ():
            h.observer.add({n: stats[n] for n in h.pairs})
            h.time_s = time_s

    def decide(self, observation: FleetObservation) -> tuple[SlotAction, ...]:
        if self._hosts is None:
            actions = self._nexus.decide(observation)
            self._hosts = self._place(actions, len(observation.slots[0]))
            return actions
        out: list[SlotAction] = []
        for h in self._hosts:
            step = control_step(h, h.policy, h.config, h.state)
            h.state = step.state
            out += self._slot_actions(h, observation.slots[h.gpu])
        return tuple(out)

    def _place(self, actions: tuple[SlotAction, ...], slots: int) -> list[_Host]:
        per_gpu: dict[int, dict[str, int]] = {}
        for a in actions:
            if a.model != EMPTY:
                per_gpu.setdefault(a.gpu, {})[f"{self.cat.models[a.model].name}@g{a.gpu}"] = a.model
        return [_Host(g, p, self.cat, slots) for g, p in sorted(per_gpu.items())]

    def _slot_actions(self, h: _Host, row: tuple[Slot, ...]) -> list[SlotAction]:
        """The host's guarded actions as slot changes (the delay follows the batch rule)."""
        out: list[SlotAction] = []
        free = [k for k, s in enumerate(row) if s.empty]
        for a in h.actions:
            m = h.pairs[a.model]
            mine = [k for k, s in enumerate(row) if s.model == m]
            batch = a.batch_size if a.batch_size is not None else row[mine[0]].batch
            want = a.workers if a.workers is not None else len(mine)
            for k in mine[want:]:
                out.append(SlotAction(h.gpu, k, EMPTY, 1))
            keep = mine[:want]
            while len(keep) < want and free:
                keep.append(free.pop(0))
            out += [SlotAction(h.gpu, k, m, batch) for k in keep]
        return out


def gpu_lower_bound(
    cat: Catalogue, step_s: float = TICK_S, slots: int = SLOTS_PER_GPU
) -> np.ndarray:
    """Hindsight lower bound on GPUs in use per ``step_s``, the largest of three: the offered
    load (each model's rate at its best throughput under the SLO rule, ``B / l(B)``, times the
    best gain parallel slots can give, max over k of ``k / f(k)``, summed as fractions of a
    GPU); one slot for every model with traffic (``S`` per GPU); and their workers' memory.
    Each rounded up; no queueing, no start-up, no fragmentation."""
    gain = max(k / f for k, f in enumerate(slowdown_table(n=slots), start=1))
    t = np.arange(0.0, cat.horizon_s, step_s) + step_s / 2
    load = np.zeros_like(t)
    active = np.zeros_like(t)
    memory = np.zeros_like(t)
    for m in cat.models:
        rate = m.workload.rates_at(t)
        load += rate / (m.throughput(m.max_batch) * gain)
        active += rate > 0
        memory += np.where(rate > 0, m.memory_gib, 0.0)
    bounds = np.stack([load, active / slots, memory / GPU_MEMORY_GIB])
    return np.ceil(bounds.max(axis=0) - 1e-9)
