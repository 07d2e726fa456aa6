"""The flip-flop guard: alone on hand-built histories, then inside :func:`guard` replaying the
limit cycle the shipped PPO fell into under a load step (delay 1 -> 11 -> 1 -> 11 ms, one move
per cooldown, for the whole step)."""

from __future__ import annotations

import math

import pytest
from controller_helpers import config, limits, model_obs, observation

from tsadapt.policy.flip_guard import SettingHistory, flip_reason, record_changes
from tsadapt.policy.guards import GuardState, guard
from tsadapt.policy.types import Action

CFG = config(limits(max_workers=3, max_batch=32, max_delay_ms=40), flip_hold_s=30.0)


@pytest.mark.parametrize(
    ("values", "current", "proposed", "age_s", "rate", "vetoed"),
    [
        ((1, 11, 1), 1, 11, 3.0, 100.0, True),  # a -> b -> a, back to b: a flip-flop
        ((1, 11, 1), 1, 11, 3.0, 119.0, True),  # within 20 % of the load then: the same load
        ((1, 11, 1), 1, 11, 3.0, 130.0, False),  # the load moved: following it is no flip
        ((1, 11, 1), 1, 11, 3.0, 70.0, False),
        ((1, 11, 1), 1, 11, 3.0, math.nan, False),  # no traffic to say
        ((1, 11, 1), 1, 21, 3.0, 100.0, False),  # a third value is a move, not a flip
        ((1, 11, 1), 1, 11, 30.0, 100.0, False),  # the hold is over
        ((5, 11, 1), 1, 11, 3.0, 100.0, False),  # 5 -> 11 -> 1: no alternation yet
        ((11, 1), 1, 11, 3.0, 100.0, False),  # one change back is allowed
        ((1, 11, 1), 6, 11, 3.0, 100.0, False),  # changed outside the controller since
    ],
)
def test_flip_reason(
    values: tuple[int, ...], current: int, proposed: int, age_s: float, rate: float, vetoed: bool
) -> None:
    history = SettingHistory(values, changed_s=100.0, rate_rps=100.0)
    reason = flip_reason(history, current, proposed, 100.0 + age_s, 30.0, rate)
    assert (reason is not None) is vetoed
    if vetoed:
        assert "1 -> 11 -> 1" in reason and "30 s" in reason and "same load" in reason


def test_record_changes_keeps_the_last_three_values_and_the_time() -> None:
    h = record_changes({}, {"tabular": Action("tabular", max_batch_delay_ms=11)}, observation())
    assert h["tabular"]["max_batch_delay_ms"] == SettingHistory((10, 11), 100.0, 100.0)
    obs = observation(model_obs(delay=11), time_s=103.0)
    h = record_changes(h, {"tabular": Action("tabular", max_batch_delay_ms=1)}, obs)
    obs = observation(model_obs(delay=1, rate=150.0), time_s=106.0)
    h = record_changes(h, {"tabular": Action("tabular", max_batch_delay_ms=11)}, obs)
    assert h["tabular"]["max_batch_delay_ms"] == SettingHistory((11, 1, 11), 106.0, 150.0)
    # a value changed outside the controller starts the history again
    obs = observation(model_obs(delay=7), time_s=109.0)
    h = record_changes(h, {"tabular": Action("tabular", max_batch_delay_ms=1)}, obs)
    assert h["tabular"]["max_batch_delay_ms"] == SettingHistory((7, 1), 109.0, 100.0)


def replay(proposals: list[Action], cfg=CFG, **obs_kw) -> tuple[list[int], list[str]]:
    """Run ``guard`` once per cooldown on each proposal, applying what passes; returns the
    delay after each step and the guards that overrode anything."""
    state, delay, batch, delays, guards = GuardState(), 1, 4, [], []
    for i, action in enumerate(proposals):
        obs = observation(model_obs(delay=delay, batch_size=batch, **obs_kw), time_s=3.0 * i)
        result = guard((action,), obs, cfg, state)
        state = result.state
        guards += [o.guard for o in result.overrides]
        for a in result.actions:
            delay = a.max_batch_delay_ms if a.max_batch_delay_ms is not None else delay
            batch = a.batch_size if a.batch_size is not None else batch
        delays.append(delay)
    return delays, guards


def test_guard_stops_a_two_value_cycle_and_lets_the_batch_move_on() -> None:
    """PPO under the step: batch +3 and the delay 1 <-> 11 at every move."""
    cycle = [
        Action("tabular", batch_size=4 + 3 * (i + 1), max_batch_delay_ms=11 if i % 2 == 0 else 1)
        for i in range(8)
    ]
    delays, guards = replay(cycle)
    assert delays[:3] == [11, 1, 1]  # 1 -> 11 -> 1, then the way back to 11 is vetoed
    assert set(delays[2:]) == {1} and "flip_flop" in guards
    off, off_guards = replay(cycle, config(*CFG.models, flip_hold_s=0.0))
    assert off == [11, 1] * 4 and "flip_flop" not in off_guards


def test_an_emergency_delay_cut_is_never_a_flip() -> None:
    """In an emergency the delay cut passes even where it closes a cycle (11 -> 1 -> 11 -> 1)."""
    state, delay = GuardState(), 11
    for i, d in enumerate((1, 11)):
        obs = observation(model_obs(delay=delay), time_s=3.0 * i)
        result = guard((Action("tabular", max_batch_delay_ms=d),), obs, CFG, state)
        assert [a.max_batch_delay_ms for a in result.actions] == [d]
        state, delay = result.state, d
    assert state.settings_history["tabular"]["max_batch_delay_ms"].values == (11, 1, 11)
    calm = observation(model_obs(delay=11), time_s=6.0)
    vetoed = guard((Action("tabular", max_batch_delay_ms=1),), calm, CFG, state)
    assert vetoed.actions == () and vetoed.overrides[0].guard == "flip_flop"
    trouble = observation(model_obs(delay=11, oldest=1000.0), time_s=6.0)
    result = guard((), trouble, CFG, state)  # the cut to 0 (bounds: 1 ms) passes
    assert result.emergencies == ("tabular",)
    assert [a.max_batch_delay_ms for a in result.actions] == [1]
    assert "flip_flop" not in [o.guard for o in result.overrides]


@pytest.mark.parametrize(("a", "b", "passes"), [(8, 16, True), (16, 8, False)])
def test_in_an_emergency_a_batch_raise_is_never_a_flip(a: int, b: int, passes: bool) -> None:
    """a -> b -> a, then b again while the oldest request outlived the SLO: a raise (8 -> 16)
    drains the backlog and passes; a cut (16 -> 8) is still a flip."""
    history = {"tabular": {"batch_size": SettingHistory((a, b, a), 3.0, 100.0)}}
    state = GuardState(settings_history=history)
    for oldest, emergency in ((0.0, False), (1000.0, True)):
        obs = observation(model_obs(batch_size=a, delay=10, oldest=oldest), time_s=10.0)
        result = guard((Action("tabular", batch_size=b),), obs, CFG, state)
        assert result.emergencies == (("tabular",) if emergency else ())
        flipped = "flip_flop" in [o.guard for o in result.overrides]
        assert flipped is not (passes and emergency)


@pytest.mark.parametrize(
    ("setting", "a", "b", "errors", "vetoed"),
    [
        ("batch_size", 3, 5, math.nan, True),  # 3 -> 5 -> 3 -> 5 at the same load: a flip
        ("batch_size", 3, 5, 0.05, False),  # ... but batch 3 sheds 5 %: the raise passes
        ("batch_size", 3, 5, 0.01, True),  # 1 % is the served p99, not shedding
        ("batch_size", 5, 3, 0.05, True),  # a cut while shedding is still a flip
        ("workers", 1, 2, 0.05, False),  # so is a worker added while shedding
        ("max_batch_delay_ms", 10, 20, 0.05, True),  # a longer delay adds no capacity
    ],
)
def test_a_capacity_raise_while_shedding_is_never_a_flip(
    setting: str, a: int, b: int, errors: float, vetoed: bool
) -> None:
    """No emergency (attainment 0.95 sheds 5 %); holding settings that turn requests away
    is worse than the flip (aimd on the 2-core CI box: vetoed back to batch 5, it shed 20 s)."""
    history = {"tabular": {setting: SettingHistory((a, b, a), 3.0, 100.0)}}
    state = GuardState(settings_history=history)
    kw = {"batch_size": 4, "delay": 10, "workers": 1}
    kw[{"batch_size": "batch_size", "workers": "workers"}.get(setting, "delay")] = a
    obs = observation(model_obs(**kw, attainment=0.95, errors=errors), time_s=10.0)
    result = guard((Action("tabular", **{setting: b}),), obs, CFG, state)
    assert result.emergencies == ()
    assert ("flip_flop" in [o.guard for o in result.overrides]) is vetoed
