"""The emergency guard's hysteresis: no cut-restore-cut flip-flop around the threshold.

A policy that keeps restoring the batch delay (as the ``queue`` rule did on a real server)
against a plant whose SLO attainment sits just below the emergency threshold with the delay
and just above it without: without hysteresis the delay alternated 0, 10, 0, 10 ... tick
after tick.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from controller_helpers import config, limits, model_obs, observation

from tsadapt.policy.controller_config import ConfigError
from tsadapt.policy.guards import GuardState, emergency_hold, guard
from tsadapt.policy.types import Action

RESTORED_DELAY_MS = 10


def plant(delay_ms: int, time_s: float, attainment_cut: float):
    """SLO attainment 0.45 (< 0.5: emergency) while the delay is up, ``attainment_cut``
    (>= 0.5: clear) once it is cut; one worker, the model's maximum."""
    attainment = 0.45 if delay_ms >= RESTORED_DELAY_MS else attainment_cut
    m = model_obs(batch_size=2, delay=delay_ms, workers=1, attainment=attainment, requests=200)
    return observation(m, time_s=time_s)


def run(ticks: int, attainment_cut: float, **cfg) -> list[int]:
    """The delay applied at each tick with a policy that always asks for 10 ms."""
    cfg_ = config(limits(max_workers=1, max_batch=2, max_delay_ms=40), **cfg)
    delay, state, seen = RESTORED_DELAY_MS, GuardState(), []
    for tick in range(ticks):
        obs = plant(delay, 100.0 + tick, attainment_cut)
        proposed = (Action("tabular", max_batch_delay_ms=RESTORED_DELAY_MS),)
        result = guard(proposed, obs, cfg_, state)
        state = result.state
        for action in result.actions:
            if action.max_batch_delay_ms is not None:
                delay = action.max_batch_delay_ms
        seen.append(delay)
    return seen


def longest_alternation(values: list[int]) -> int:
    """Most consecutive ticks on which the value changed back to the one two ticks before."""
    best = run_ = 0
    for i in range(2, len(values)):
        flipping = values[i] != values[i - 1] and values[i] == values[i - 2]
        run_ = run_ + 1 if flipping else 0
        best = max(best, run_)
    return best


@pytest.mark.parametrize("attainment_cut", [0.6, 0.95])
@pytest.mark.parametrize("cooldown_s", [0.0, 3.0])
def test_no_setting_flips_between_two_values(attainment_cut: float, cooldown_s: float) -> None:
    delays = run(60, attainment_cut, cooldown_s=cooldown_s)
    assert longest_alternation(delays) <= 3, delays
    assert delays[0] == 0  # the emergency still cuts at once


@pytest.mark.parametrize("cooldown_s", [0.0, 3.0])
def test_delay_stays_cut_until_attainment_recovers(cooldown_s: float) -> None:
    # clear of the emergency condition (0.6 >= 0.5) but never back to the exit level (0.9)
    assert run(30, 0.6, cooldown_s=cooldown_s) == [0] * 30


def test_leaves_after_the_clear_ticks_once_recovered() -> None:
    delays = run(8, 0.95, cooldown_s=0.0, emergency_exit_ticks=5)
    # cut at tick 0, clear from tick 1: the 5th clear tick in a row (tick 5) lets it go
    assert delays[:5] == [0] * 5 and delays[5] == RESTORED_DELAY_MS


@pytest.mark.parametrize(
    ("flip_hold_s", "expected"),
    [(0.0, [0, 10, 0, 10, 0, 10]), (30.0, [0, 10, 0, 0, 0, 0])],
)
def test_no_hysteresis_when_exit_ticks_is_zero(flip_hold_s: float, expected: list[int]) -> None:
    """Without hysteresis the cycle comes back, unless the flip-flop guard stops the policy's
    second restore (the emergency's cut always passes)."""
    delays = run(
        6, 0.95, cooldown_s=0.0, emergency_exit_ticks=0, emergency_exit_attainment=0.5,
        flip_hold_s=flip_hold_s,
    )  # fmt: skip
    assert delays == expected


def test_hold_keeps_workers_and_counts_clear_ticks() -> None:
    cfg = config(limits(max_workers=3), cooldown_s=0.0)
    state = GuardState(emergency_clear_ticks={"tabular": 2})
    obs = observation(model_obs(batch_size=2, workers=2, delay=0, attainment=0.7, requests=200))
    result = guard((Action("tabular", workers=1, max_batch_delay_ms=20),), obs, cfg, state)
    assert result.actions == ()
    assert {o.guard for o in result.overrides} == {"emergency_hold"}
    assert dict(result.state.emergency_clear_ticks) == {"tabular": 3}
    assert result.emergencies == ()
    assert emergency_hold(obs, cfg, GuardState()) == {}


@pytest.mark.parametrize(
    ("field", "value"), [("emergency_exit_ticks", -1), ("emergency_exit_attainment", 0.4)]
)
def test_bad_hysteresis_config_names_the_field(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        replace(config(), **{field: value})
