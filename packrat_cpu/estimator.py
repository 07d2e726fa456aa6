"""Online batch-size estimator (Packrat section "batch-size estimation"), pure.

Packrat samples the request queue depth every 5 ms, smooths it with an EWMA
(alpha = 0.1), rounds the result *down* to a power of two, takes the mode of the last 10
such estimates and reconsiders the configuration every 1 s. This module implements that
(with the one rounding deviation below) as immutable state and pure functions taking an
explicit ``now`` (no clock reads), plus one optional knob, ``confirm``: a new batch size must
be the mode at ``confirm`` consecutive decisions before a re-plan is requested.

Why the defaults are at least as good as Packrat's: they are Packrat's parameters
(``confirm = 1`` is Packrat's behaviour: switch whenever the mode differs at a decision).
Rounding *down* never plans for more requests than are queued (a too-large batch would
wait for the batch delay to fill); the mode of 10 ignores single-sample spikes (mode ties go
to the most recent value, so a trend wins); the 1 s interval bounds the re-plan rate. Since
a switch costs seconds of 2-3x latency in Packrat's active-passive scheme, ``confirm >= 2``
damps flapping when the load sits on a power-of-two boundary, at the price of reacting
``confirm - 1`` intervals later; it only ever switches to the mode of that decision, i.e.
to a batch size Packrat would also have chosen there.

One deliberate deviation: the EWMA is first rounded to the nearest integer (queue depth
is an integer), then down to a power of two. An EWMA approaching a power of two from below
never reaches it, so with plain round-down a steady depth of 64 is estimated as 32 forever
(63.99999... -> 32); here it becomes 64 once the EWMA passes 63.5 (~0.2 s after a step
from 8 at 5 ms samples).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace

DEFAULT_ALPHA: float = 0.1
DEFAULT_WINDOW: int = 10
DEFAULT_INTERVAL_S: float = 1.0
DEFAULT_SAMPLE_PERIOD_S: float = 0.005
DEFAULT_CONFIRM: int = 1
DEFAULT_MAX_BATCH: int = 1024


@dataclass(frozen=True)
class EstimatorConfig:
    """Tuning knobs; the defaults are Packrat's."""

    alpha: float = DEFAULT_ALPHA
    window: int = DEFAULT_WINDOW
    interval_s: float = DEFAULT_INTERVAL_S
    confirm: int = DEFAULT_CONFIRM
    max_batch: int = DEFAULT_MAX_BATCH

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {self.interval_s}")
        if self.confirm < 1:
            raise ValueError(f"confirm must be >= 1, got {self.confirm}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")


@dataclass(frozen=True)
class EstimatorState:
    """Everything the estimator remembers between calls."""

    ewma: float | None = None
    estimates: tuple[int, ...] = ()
    current: int | None = None
    pending: int | None = None
    pending_count: int = 0
    last_decision_s: float | None = None


def floor_pow2(value: float, max_batch: int = DEFAULT_MAX_BATCH) -> int:
    """Power of two <= round(``value``) (the depth is an integer), clamped to max_batch."""
    cap = 1 << (max(1, max_batch).bit_length() - 1)
    depth = math.floor(value + 0.5)
    if depth < 2:
        return 1
    return min(1 << (depth.bit_length() - 1), cap)


def mode_recent(values: tuple[int, ...]) -> int:
    """Most frequent value; ties go to the value seen most recently."""
    counts = Counter(values)
    top = max(counts.values())
    for value in reversed(values):
        if counts[value] == top:
            return value
    raise ValueError("mode of an empty sequence")


def observe(state: EstimatorState, queue_depth: float, config: EstimatorConfig) -> EstimatorState:
    """Fold one queue-depth sample (taken every ``DEFAULT_SAMPLE_PERIOD_S``) into the state."""
    if queue_depth < 0:
        raise ValueError(f"queue_depth must be >= 0, got {queue_depth}")
    ewma = (
        float(queue_depth)
        if state.ewma is None
        else config.alpha * queue_depth + (1.0 - config.alpha) * state.ewma
    )
    estimate = floor_pow2(ewma, config.max_batch)
    estimates = (*state.estimates, estimate)[-config.window :]
    return replace(state, ewma=ewma, estimates=estimates)


def decide(
    state: EstimatorState, now: float, config: EstimatorConfig
) -> tuple[EstimatorState, int | None]:
    """Every ``interval_s``: return ``(state, new_batch)`` when a re-plan is due, else None.

    The first decision with any samples always yields a batch (nothing is planned yet).
    """
    if not state.estimates:
        return state, None
    if state.last_decision_s is not None and now - state.last_decision_s < config.interval_s:
        return state, None
    state = replace(state, last_decision_s=now)
    candidate = mode_recent(state.estimates)
    if candidate == state.current:
        return replace(state, pending=None, pending_count=0), None
    count = state.pending_count + 1 if candidate == state.pending else 1
    if state.current is not None and count < config.confirm:
        return replace(state, pending=candidate, pending_count=count), None
    return replace(state, current=candidate, pending=None, pending_count=0), candidate
