"""Rule-based policies: ``static``, ``aimd`` (Clipper-style) and ``queue`` (Ray-Serve-style).

Each is a frozen dataclass with a pure ``decide(observation, state) -> (actions, state)``.
They propose; :mod:`policy.guards` clamps and vetoes. Knowing the per-model bounds only keeps
a policy from proposing what the guards would refuse every tick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tsadapt.policy.controller_config import (
    DEFAULT_TICK_S,
    AimdParams,
    ModelLimits,
    QueueParams,
)
from tsadapt.policy.types import Action, Decision, ModelObservation, Observation, PolicyState


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


@dataclass(frozen=True)
class StaticPolicy:
    """Changes nothing: the baseline (the server keeps the configuration it has)."""

    name: str = "static"

    def decide(self, observation: Observation, state: PolicyState) -> Decision:
        return (), state.next()


@dataclass(frozen=True)
class AimdPolicy:
    """Clipper's AIMD per model, on end-to-end p99 and the batch fill rate.

    "Full" means fill rate >= ``fill_high``, a backlog of at least one batch in the queue, or
    requests shed in the window (:attr:`ModelObservation.shedding`: a queue that turns work away
    was full, even if it has drained by the time of the tick).

    - p99 over the SLO with full batches: the queue waits for capacity, so grow the batch
      additively; at ``max_batch`` add a worker instead.
    - p99 over the SLO with batches not full: the batch itself is too slow, so shrink it
      multiplicatively (Clipper's back-off).
    - p99 under ``headroom * SLO`` with full batches: probe additively upwards.
    - batches mostly empty: shrink multiplicatively; at ``min_batch`` give back a worker.
    """

    limits: tuple[ModelLimits, ...]
    params: AimdParams
    name: str = "aimd"

    def _decide_model(self, m: ModelObservation, lim: ModelLimits) -> Action | None:
        p, s = self.params, m.settings
        if math.isnan(m.p99_ms) or math.isnan(m.batch_fill_rate):
            return None  # no traffic in the window: nothing to learn from
        # a backlog of at least one batch, or shed requests, mean capacity, not the batch,
        # limits latency: shrinking the batch then would shed more (seen on a 2-core box)
        full = m.batch_fill_rate >= p.fill_high or m.queue_depth >= s.batch_size or m.shedding
        grow = _clamp(s.batch_size + p.additive_step, lim.min_batch, lim.max_batch)
        shrink = _clamp(math.floor(s.batch_size * p.decrease_factor), lim.min_batch, lim.max_batch)
        if m.slo_violated:
            if not full:
                return Action(m.name, batch_size=shrink) if shrink != s.batch_size else None
            if grow != s.batch_size:
                return Action(m.name, batch_size=grow)
            if s.workers < lim.max_workers:
                return Action(m.name, workers=s.workers + 1)
            return None
        if full and m.p99_ms < p.headroom * m.slo_ms and grow != s.batch_size:
            return Action(m.name, batch_size=grow)
        if m.batch_fill_rate < p.fill_low:
            if shrink != s.batch_size:
                return Action(m.name, batch_size=shrink)
            if s.workers > lim.min_workers and m.p99_ms < p.headroom * m.slo_ms:
                return Action(m.name, workers=s.workers - 1)
        return None

    def decide(self, observation: Observation, state: PolicyState) -> Decision:
        actions = []
        for lim in self.limits:
            action = self._decide_model(observation.model(lim.name), lim)
            if action is not None:
                actions.append(action)
        return tuple(actions), state.next()


@dataclass(frozen=True)
class QueueMemory:
    """Per-model state of :class:`QueuePolicy`."""

    arrival_rate_ewma: float
    low_ticks: int  # consecutive ticks that wanted fewer workers


def _patient(wanted: int, current: int, ticks: int, patience: int) -> tuple[int, int]:
    """Ray Serve's downscale delay: go below ``current`` only once ``wanted`` has been lower
    for more than ``patience`` ticks in a row; (value to ask for, updated count)."""
    if wanted >= current:
        return wanted, 0
    if ticks + 1 <= patience:
        return current, ticks + 1
    return wanted, 0


@dataclass(frozen=True)
class QueuePolicy:
    """Ray Serve's autoscaling rule plus a batch sized to the SLO budget.

    ongoing = max(queue depth, arrival rate x mean latency)  (Little's law);
    workers = ceil(ongoing / target_ongoing_per_worker), lowered only once fewer were wanted
    for ``downscale_delay_s`` seconds in a row (whole ticks of ``tick_s``, rounded up);
    batch size = the requests one worker receives in ``batch_wait_fraction`` of the SLO, or
    its share of the queued backlog if that is larger (so an overloaded model batches its way
    out); delay = that same wait.
    The batch goes down only while nothing is queued: a backlog that is draining must not
    shrink the batch that drains it (sized to the backlog, it would shrink with it and let the
    queue build again).
    """

    limits: tuple[ModelLimits, ...]
    params: QueueParams
    tick_s: float = DEFAULT_TICK_S
    name: str = "queue"

    @property
    def downscale_patience(self) -> int:
        """Ticks in a row that must want fewer workers before the count goes down."""
        return math.ceil(self.params.downscale_delay_s / self.tick_s - 1e-9)

    def _decide_model(
        self, m: ModelObservation, lim: ModelLimits, memory: QueueMemory | None
    ) -> tuple[Action | None, QueueMemory | None]:
        p, s = self.params, m.settings
        if math.isnan(m.arrival_rate_rps):
            return None, memory
        rate = (
            m.arrival_rate_rps
            if memory is None
            else p.ewma_alpha * m.arrival_rate_rps + (1 - p.ewma_alpha) * memory.arrival_rate_ewma
        )
        latency_s = 0.0 if math.isnan(m.mean_latency_ms) else m.mean_latency_ms / 1000.0
        ongoing = max(float(m.queue_depth), rate * latency_s)
        wanted, low_ticks = _patient(
            _clamp(
                math.ceil(ongoing / p.target_ongoing_per_worker), lim.min_workers, lim.max_workers
            ),
            s.workers,
            0 if memory is None else memory.low_ticks,
            self.downscale_patience,
        )
        wait_ms = p.batch_wait_fraction * m.slo_ms
        per_worker = rate / max(wanted, 1)
        # Enough to take what arrives during the wait, and to drain a backlog in one round.
        backlog = math.ceil(m.queue_depth / max(wanted, 1))
        batch = _clamp(
            max(math.ceil(per_worker * wait_ms / 1000.0), backlog), lim.min_batch, lim.max_batch
        )
        if m.queue_depth > 0:
            batch = max(batch, min(s.batch_size, lim.max_batch))
        delay = _clamp(round(wait_ms), 0, lim.max_delay_ms) if batch > 1 else 0
        action = Action(m.name, batch_size=batch, max_batch_delay_ms=delay, workers=wanted)
        return (None if action.is_noop(s) else action), QueueMemory(rate, low_ticks)

    def decide(self, observation: Observation, state: PolicyState) -> Decision:
        actions = []
        memory = dict(state.memory)
        for lim in self.limits:
            action, mem = self._decide_model(
                observation.model(lim.name), lim, state.memory.get(lim.name)
            )
            if mem is not None:
                memory[lim.name] = mem
            if action is not None:
                actions.append(action)
        return tuple(actions), state.next(memory)
