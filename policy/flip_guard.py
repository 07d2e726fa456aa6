"""The flip-flop guard: a setting may not keep alternating between two values.

A policy (learned or not) can fall into a limit cycle: the delay 1 -> 11 -> 1 -> 11 ms, one
move per cooldown, for as long as the load lasts (the shipped PPO did so under a load step).
Each move is a management call and a batch formed under other rules, and it says the policy
cannot decide. After a setting has gone a -> b -> a, :func:`flip_vetoes` vetoes its going
back to b within ``flip_hold_s`` of that last change while the model's arrival rate is still
within :data:`SAME_LOAD_BAND` of what it was then: nothing has changed that the move back to a
did not already answer. A third value, the same move after the hold, or a load that moved
(an on/off burst the settings follow up and down) passes. In an emergency, what passes the
cooldown (the emergency's delay cut and added worker, the policy's batch raise) passes here,
and so does a batch or worker raise while the model sheds requests: holding settings that turn
work away is worse than the flip (``guards.flip_flop`` applies both exceptions).

State: for each model and setting, the last few values it was set to (oldest first, the
value before the first recorded change included), and when it last changed and at which
arrival rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from tsadapt.policy.types import Action, Observation, frozen_map

#: Values kept per setting: a -> b -> a is all the guard needs to see.
HISTORY_LEN = 3
#: Arrival rates within this fraction of each other count as the same load (a design choice,
#: not a measurement: well inside the 3-12x swings and on/off bursts of the training traffic).
SAME_LOAD_BAND = 0.2


@dataclass(frozen=True)
class SettingHistory:
    """The values one setting of one model was set to, oldest first, and when (and at which
    arrival rate) it last changed."""

    values: tuple[int, ...]
    changed_s: float
    rate_rps: float = 0.0

    def after(self, value: int, at_s: float, rate_rps: float) -> SettingHistory:
        return SettingHistory((*self.values, value)[-HISTORY_LEN:], at_s, rate_rps)


Histories = Mapping[str, Mapping[str, SettingHistory]]


def same_load(rate_rps: float, then_rps: float) -> bool:
    """Whether two arrival rates are within :data:`SAME_LOAD_BAND` of each other."""
    if math.isnan(rate_rps) or math.isnan(then_rps):
        return False
    return abs(rate_rps - then_rps) <= SAME_LOAD_BAND * max(rate_rps, then_rps)


def flip_reason(
    history: SettingHistory | None,
    current: int,
    proposed: int,
    now_s: float,
    hold_s: float,
    rate_rps: float,
) -> str | None:
    """Why moving a setting from ``current`` to ``proposed`` at arrival rate ``rate_rps`` would
    be a flip-flop, or None."""
    if history is None or len(history.values) < HISTORY_LEN:
        return None
    a, b, last = history.values
    if last != current or a != current or b != proposed or a == b:
        return None
    age = now_s - history.changed_s
    if age >= hold_s or not same_load(rate_rps, history.rate_rps):
        return None
    return (
        f"went {a} -> {b} -> {a}; back to {b} within {hold_s:.0f} s of the last change "
        f"({age:.1f} s ago) at the same load ({rate_rps:.0f} req/s, then "
        f"{history.rate_rps:.0f}) would flip-flop"
    )


def record_changes(
    histories: Histories, applied: Mapping[str, Action], observation: Observation
) -> Histories:
    """``histories`` after ``applied`` (settings that really change) at ``observation``'s time."""
    if not applied:
        return histories  # most ticks change nothing: no copy
    out = {name: dict(h) for name, h in histories.items()}
    for name, action in applied.items():
        m = observation.model(name)
        for setting, value in action.changes(m.settings).items():
            now = getattr(m.settings, setting)
            old = out.setdefault(name, {}).get(setting)
            if old is None or old.values[-1] != now:
                old = SettingHistory((now,), observation.time_s)
            out[name][setting] = old.after(value, observation.time_s, m.arrival_rate_rps)
    return frozen_map({name: frozen_map(h) for name, h in out.items()})


def flip_vetoes(
    proposals: Mapping[str, Action],
    observation: Observation,
    hold_s: float,
    histories: Histories,
) -> list[tuple[str, str, str]]:
    """(model, setting, reason) for each proposed change :func:`flip_reason` names; a hold of
    0 turns the guard off. Which of them an emergency lets through is the caller's rule."""
    vetoes: list[tuple[str, str, str]] = []
    if hold_s <= 0:
        return vetoes
    for name, action in proposals.items():
        m = observation.model(name)
        for setting, value in action.changes(m.settings).items():
            history = histories.get(name, {}).get(setting)
            now = getattr(m.settings, setting)
            reason = flip_reason(
                history, now, value, observation.time_s, hold_s, m.arrival_rate_rps
            )
            if reason is not None:
                vetoes.append((name, setting, reason))
    return vetoes
