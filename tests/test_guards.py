"""Each guard, and their composition, on hand-built observations with a fake clock."""

from __future__ import annotations

import math

import pytest
from controller_helpers import config, limits, model_obs, observation

from tsadapt.policy.guards import (
    GuardState,
    cooldown,
    drop_noops,
    emergency,
    enforce_bounds,
    guard,
    limit_step,
    memory_budget,
    worker_budget,
)
from tsadapt.policy.types import Action, frozen_map

CFG = config(limits(max_workers=3, max_batch=32, max_delay_ms=40))


@pytest.mark.parametrize(
    ("proposed", "expected"),
    [
        (Action("tabular", batch_size=64), Action("tabular", batch_size=32)),
        (Action("tabular", batch_size=0), Action("tabular", batch_size=1)),
        (Action("tabular", workers=9), Action("tabular", workers=3)),
        (Action("tabular", workers=0), Action("tabular", workers=1)),
        (Action("tabular", max_batch_delay_ms=100), Action("tabular", max_batch_delay_ms=40)),
        (Action("tabular", batch_size=16, workers=2), Action("tabular", batch_size=16, workers=2)),
    ],
)
def test_bounds(proposed: Action, expected: Action) -> None:
    out, overrides = enforce_bounds({"tabular": proposed}, observation(), CFG)
    assert out["tabular"] == expected
    assert len(overrides) == (0 if proposed == expected else 1)
    for o in overrides:
        assert o.guard == "bounds" and "outside" in o.reason


@pytest.mark.parametrize(
    ("proposed", "expected"),
    [
        (Action("tabular", batch_size=30), Action("tabular", batch_size=16)),  # 8 + step 8
        (Action("tabular", batch_size=1), Action("tabular", batch_size=1)),  # 8 - 7 is allowed
        (Action("tabular", workers=3), Action("tabular", workers=2)),
        (Action("tabular", max_batch_delay_ms=40), Action("tabular", max_batch_delay_ms=30)),
    ],
)
def test_max_step(proposed: Action, expected: Action) -> None:
    obs = observation(model_obs(batch_size=8, delay=10, workers=1))
    out, _ = limit_step({"tabular": proposed}, obs, CFG)
    assert out["tabular"] == expected


def test_max_step_lets_an_emergency_cut_the_delay_at_once() -> None:
    obs = observation(model_obs(delay=40))
    proposals = {"tabular": Action("tabular", max_batch_delay_ms=0)}
    limited, _ = limit_step(proposals, obs, CFG)
    exempt, _ = limit_step(proposals, obs, CFG, exempt=("tabular",))
    assert limited["tabular"].max_batch_delay_ms == 20
    assert exempt["tabular"].max_batch_delay_ms == 0


@pytest.mark.parametrize(("now", "vetoed"), [(101.0, True), (102.9, True), (103.0, False)])
def test_cooldown_with_fake_clock(now: float, vetoed: bool) -> None:
    state = GuardState(frozen_map({"tabular": 100.0}))
    obs = observation(model_obs(batch_size=8), time_s=now)
    out, overrides = cooldown({"tabular": Action("tabular", batch_size=10)}, obs, CFG, state)
    assert (out["tabular"].batch_size is None) == vetoed
    assert bool(overrides) == vetoed


@pytest.mark.parametrize(("batch", "passes"), [(12, True), (6, False)])
def test_cooldown_does_not_hold_back_an_emergency(batch: int, passes: bool) -> None:
    """In an emergency the delay, the workers and a batch raise pass; a batch cut waits."""
    state = GuardState(frozen_map({"tabular": 100.0}))
    obs = observation(model_obs(batch_size=8), time_s=100.5)
    proposals = {"tabular": Action("tabular", batch_size=batch, workers=2)}
    out, overrides = cooldown(proposals, obs, CFG, state, exempt=("tabular",))
    assert out["tabular"] == Action("tabular", batch_size=batch if passes else None, workers=2)
    assert [(o.setting, o.guard) for o in overrides] == (
        [] if passes else [("batch_size", "cooldown")]
    )
    held, _ = cooldown(proposals, obs, CFG, state)  # no emergency: everything waits
    assert held["tabular"] == Action("tabular")


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        (dict(attainment=0.2, requests=100), "SLO attainment"),
        (dict(oldest=150.0), "oldest queued request"),
    ],
)
def test_emergency_cuts_delay_and_adds_a_worker(kw: dict, reason: str) -> None:
    obs = observation(model_obs(delay=30, workers=1, **kw))
    out, overrides, hit = emergency({}, obs, CFG)
    assert hit == ("tabular",)
    assert out["tabular"] == Action("tabular", max_batch_delay_ms=0, workers=2)
    assert {o.setting for o in overrides} == {"max_batch_delay_ms", "workers"}
    assert all(reason in o.reason and o.guard == "emergency" for o in overrides)


@pytest.mark.parametrize(
    "kw",
    [
        dict(attainment=0.9),  # fine
        dict(attainment=0.1, requests=3),  # too few requests to judge
        dict(attainment=math.nan, requests=0),  # idle
        dict(oldest=99.0),  # under the SLO
    ],
)
def test_no_emergency(kw: dict) -> None:
    out, overrides, hit = emergency({}, observation(model_obs(**kw)), CFG)
    assert out == {} and overrides == [] and hit == ()


def test_emergency_at_max_workers_only_cuts_the_delay() -> None:
    obs = observation(model_obs(delay=30, workers=3, oldest=500.0))
    out, _, _ = emergency({}, obs, CFG)
    assert out["tabular"].workers is None and out["tabular"].max_batch_delay_ms == 0


def two_model_config(**kw: object):
    return config(limits("tabular", max_workers=4), limits("text", max_workers=4), **kw)


def test_worker_budget_grants_the_neediest_first() -> None:
    cfg = two_model_config(worker_budget=4)
    obs = observation(
        model_obs("tabular", workers=1, attainment=0.9),
        model_obs("text", workers=2, attainment=0.4),
    )
    proposals = {"tabular": Action("tabular", workers=2), "text": Action("text", workers=3)}
    out, overrides = worker_budget(proposals, obs, cfg)
    assert out["text"].workers == 3 and out["tabular"].workers is None
    assert [(o.model, o.guard) for o in overrides] == [("tabular", "worker_budget")]


def test_worker_budget_counts_decreases_first() -> None:
    cfg = two_model_config(worker_budget=4)
    obs = observation(model_obs("tabular", workers=1), model_obs("text", workers=3))
    proposals = {"tabular": Action("tabular", workers=2), "text": Action("text", workers=2)}
    out, overrides = worker_budget(proposals, obs, cfg)
    assert out == proposals and not overrides


def test_memory_budget() -> None:
    cfg = config(
        limits("tabular", max_workers=4, memory_mb_per_worker=300),
        limits("text", max_workers=4, memory_mb_per_worker=500),
        memory_budget_mb=1500,
    )
    obs = observation(model_obs("tabular", workers=1), model_obs("text", workers=1))  # 800 MB
    proposals = {"tabular": Action("tabular", workers=4)}  # +900 MB -> only +2 fit (+600)
    out, overrides = memory_budget(proposals, obs, cfg)
    assert out["tabular"].workers == 3 and overrides[0].guard == "memory_budget"


def test_drop_noops() -> None:
    obs = observation(model_obs(batch_size=8, delay=10, workers=1))
    out = drop_noops(
        {"tabular": Action("tabular", batch_size=8, max_batch_delay_ms=12, workers=1)}, obs
    )
    assert out == {"tabular": Action("tabular", max_batch_delay_ms=12)}
    assert drop_noops({"tabular": Action("tabular", batch_size=8)}, obs) == {}


def test_guard_composes_and_records_the_change_time() -> None:
    obs = observation(model_obs(batch_size=8, workers=1), time_s=50.0)
    result = guard((Action("tabular", batch_size=100, workers=3),), obs, CFG, GuardState())
    # bounds: 100 -> 32, then step: 8 -> 16; workers 3 -> step 2
    assert result.actions == (Action("tabular", batch_size=16, workers=2),)
    assert [o.guard for o in result.overrides] == ["bounds", "max_step", "max_step"]
    assert result.state.last_change_s["tabular"] == 50.0
    # next tick, 1 s later: cooldown vetoes everything
    again = guard(
        (Action("tabular", batch_size=24),),
        obs.__class__(51.0, 5.0, (model_obs(batch_size=16, workers=2),), obs.host),
        CFG,
        result.state,
    )
    assert again.actions == () and again.overrides[0].guard == "cooldown"
    assert again.state.last_change_s["tabular"] == 50.0


def test_guard_drops_actions_for_unknown_models() -> None:
    result = guard((Action("nope", workers=2),), observation(), CFG, GuardState())
    assert result.actions == () and result.overrides[0].guard == "unknown_model"


def test_guard_emergency_overrides_a_static_policy() -> None:
    obs = observation(model_obs(delay=30, workers=1, oldest=1000.0))
    result = guard((), obs, CFG, GuardState(frozen_map({"tabular": obs.time_s - 0.5})))
    # the emergency cuts the delay to 0, and the bounds raise it to the 1 ms that still lets
    # TorchServe fill a batch of 8 (a zero delay caps batches at 2)
    assert result.actions == (Action("tabular", max_batch_delay_ms=1, workers=2),)
    assert result.emergencies == ("tabular",)


@pytest.mark.parametrize(
    ("batch_size", "proposed_delay", "applied_delay"),
    [(8, 0, 1), (3, 0, 1), (2, 0, 0), (1, 0, 0), (8, 5, 5)],
)
def test_zero_delay_is_raised_when_it_would_cap_the_batch(
    batch_size: int, proposed_delay: int, applied_delay: int
) -> None:
    obs = observation(model_obs(batch_size=batch_size, delay=10))
    out, overrides = enforce_bounds(
        {"tabular": Action("tabular", max_batch_delay_ms=proposed_delay)}, obs, CFG
    )
    assert out["tabular"].max_batch_delay_ms == applied_delay
    assert bool(overrides) == (applied_delay != proposed_delay)
