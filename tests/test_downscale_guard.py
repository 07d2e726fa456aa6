"""The downscale guard: a worker goes only once fewer have been wanted for ``downscale_delay_s``
in a row (Ray Serve's downscale delay), at once where the worker budget is full and another
model asks for one."""

from __future__ import annotations

import pytest
from controller_helpers import config, limits, model_obs, observation

from tsadapt.policy.guards import GuardState, guard
from tsadapt.policy.types import Action

CFG = config(limits(max_workers=3), downscale_delay_s=30.0, cooldown_s=0.0)


def run(wanted: list[int | None], cfg=CFG, workers: int = 3) -> list[int]:
    """One tick per second, proposing ``wanted[i]`` workers (None: no proposal); the worker
    count after each tick."""
    state, counts = GuardState(), []
    for t, want in enumerate(wanted):
        obs = observation(model_obs(workers=workers), time_s=float(t))
        actions = () if want is None else (Action("tabular", workers=want),)
        result = guard(actions, obs, cfg, state)
        state = result.state
        for a in result.actions:
            workers = a.workers if a.workers is not None else workers
        counts.append(workers)
    return counts


def test_a_worker_goes_after_the_delay_not_before() -> None:
    counts = run([2] * 31)
    assert counts[:30] == [3] * 30  # wanted fewer for 0..29 s
    assert counts[30] == 2  # 30 s in a row: it goes
    more = run([2] * 30 + [1] * 3)
    assert more[30] == 2 and more[31] == 1  # still wanting fewer: no new wait for the next


@pytest.mark.parametrize("gap", [None, 3])
def test_a_tick_that_does_not_want_fewer_restarts_the_count(gap: int | None) -> None:
    counts = run([2] * 20 + [gap] + [2] * 30)
    assert counts[:51] == [3] * 51  # 20 s, then a break, then 30 s less one
    assert run([2] * 20 + [gap] + [2] * 31)[-1] == 2


def test_off_at_zero() -> None:
    assert run([2], config(limits(max_workers=3), downscale_delay_s=0.0)) == [2]


def test_the_override_says_why() -> None:
    obs = observation(model_obs(workers=2))
    result = guard((Action("tabular", workers=1),), obs, CFG, GuardState())
    assert result.actions == ()
    (o,) = result.overrides
    assert o.guard == "downscale_delay" and o.proposed == 1 and o.applied is None
    assert "0 s < downscale_delay_s 30 s" in o.reason


def test_a_full_budget_frees_a_worker_for_another_model_at_once() -> None:
    """The budget of 4 is full (image 3, text 1) and text wants a second worker: image's
    removal passes now, and the budget guard grants text's worker on a later tick."""
    cfg = config(
        limits("image", max_workers=3), limits("text", max_workers=3),
        worker_budget=4, downscale_delay_s=30.0, cooldown_s=0.0,
    )  # fmt: skip
    proposals = (Action("image", workers=2), Action("text", workers=2))
    obs = observation(model_obs("image", workers=3), model_obs("text", workers=1))
    result = guard(proposals, obs, cfg, GuardState())
    assert Action("image", workers=2) in result.actions
    alone = guard(proposals[:1], obs, cfg, GuardState())  # nobody else asks: it waits
    assert alone.actions == ()
