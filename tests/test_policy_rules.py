"""Policies on hand-built observations: pure functions, no server, no clock but the tick's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from controller_helpers import IDLE, config, limits, model_obs, observation

from tsadapt.policy.controller_config import AimdParams, QueueParams
from tsadapt.policy.factory import make_policy
from tsadapt.policy.features import FEATURE_NAMES, normalise, normalise_all
from tsadapt.policy.rules import AimdPolicy, QueuePolicy, StaticPolicy
from tsadapt.policy.types import Action, ModelSettings, Policy, PolicyState

AIMD = AimdPolicy((limits(),), AimdParams(additive_step=2, decrease_factor=0.5))


def decide_one(policy: Policy, **kw: object) -> Action | None:
    actions, state = policy.decide(observation(model_obs(**kw)), PolicyState())
    assert state.tick == 1
    assert len(actions) <= 1
    return actions[0] if actions else None


@pytest.mark.parametrize("name", ["static", "aimd", "queue"])
def test_every_policy_fits_the_protocol(name: str) -> None:
    policy = make_policy(name, config())
    assert isinstance(policy, Policy)
    assert policy.name == name


def test_unknown_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="policy"):
        make_policy("ppo2", config())


@pytest.mark.parametrize("p99", [10.0, 500.0])
def test_static_changes_nothing(p99: float) -> None:
    assert decide_one(StaticPolicy(), p99=p99, queue=90, fill=1.0) is None


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        # under the SLO with full batches: additive probe upwards
        (dict(p99=50.0, fill=0.9), Action("tabular", batch_size=10)),
        # over the SLO with full batches: the queue waits for capacity -> bigger batch
        (dict(p99=150.0, fill=0.95), Action("tabular", batch_size=10)),
        # over the SLO, batches half-empty but a backlog of a whole batch: capacity -> grow
        (dict(p99=150.0, fill=0.5, queue=20), Action("tabular", batch_size=10)),
        # over the SLO with half-empty batches: the batch is too slow -> multiplicative back-off
        (dict(p99=150.0, fill=0.5), Action("tabular", batch_size=4)),
        # batches mostly empty under low load: shrink
        (dict(p99=30.0, fill=0.1), Action("tabular", batch_size=4)),
        # comfortable, half-full: hold
        (dict(p99=50.0, fill=0.5), None),
        # close to the SLO with full batches: do not probe further
        (dict(p99=90.0, fill=0.9), None),
        # ... unless the full queue sheds: 20 % answered 503, so the p99 of all requests is
        # past any SLO though every served one was in time (batch 1 under a load step)
        (dict(p99=90.0, fill=0.9, queue=30, errors=0.2), Action("tabular", batch_size=10)),
        (dict(p99=90.0, fill=0.9, errors=0.01), None),  # 1 %: the p99 itself is still served
        # shed in the window but drained by the tick, batches half-empty: the shedding says
        # capacity, so grow, not back off (the 2-core CI box: a cut to 3 shed for 20 s more)
        (dict(p99=150.0, fill=0.5, queue=0, errors=0.05), Action("tabular", batch_size=10)),
        # no traffic: nothing to learn from
        (IDLE, None),
    ],
)
def test_aimd_rules(kw: dict, expected: Action | None) -> None:
    assert decide_one(AIMD, **kw) == expected


def test_aimd_adds_a_worker_at_max_batch_and_gives_it_back_when_idle() -> None:
    assert decide_one(AIMD, batch_size=32, workers=1, p99=200.0, fill=1.0) == Action(
        "tabular", workers=2
    )
    assert decide_one(AIMD, batch_size=32, workers=3, p99=200.0, fill=1.0) is None
    assert decide_one(AIMD, batch_size=1, workers=2, p99=20.0, fill=0.05) == Action(
        "tabular", workers=1
    )


def test_aimd_converges_upwards_then_backs_off() -> None:
    """Simulated sequence: batch grows by the additive step until p99 crosses, then halves."""
    policy = AimdPolicy((limits(),), AimdParams(additive_step=2, decrease_factor=0.5, headroom=1))
    settings, state = ModelSettings(2, 10, 1), PolicyState()
    sizes = []
    for tick in range(8):
        p99 = 40.0 + 8.0 * settings.batch_size  # a toy latency model: crosses 100 ms at b > 7
        fill = 1.0 if p99 <= 100 else 0.6
        obs = observation(
            model_obs(batch_size=settings.batch_size, p99=p99, fill=fill), time_s=tick
        )
        actions, state = policy.decide(obs, state)
        for a in actions:
            settings = a.apply_to(settings)
        sizes.append(settings.batch_size)
    # 8 -> p99 104 ms > SLO with batches not full -> x0.5, then probe again (the sawtooth)
    assert sizes == [4, 6, 8, 4, 6, 8, 4, 6]
    assert state.tick == 8


QUEUE = QueuePolicy(
    (limits(max_workers=3, max_batch=32, max_delay_ms=40),),
    QueueParams(
        target_ongoing_per_worker=4,
        batch_wait_fraction=0.25,
        ewma_alpha=1.0,
        downscale_delay_s=2.0,
    ),
)


def test_queue_sizes_workers_and_batch_from_load() -> None:
    # 400 rps x 20 ms mean latency = 8 ongoing -> 2 workers; 200 rps each x 25 ms = 5 per batch
    action = decide_one(QUEUE, rate=400.0, p50=20.0, batch_size=1, delay=0, workers=1)
    assert action == Action("tabular", batch_size=5, max_batch_delay_ms=25, workers=2)


def test_queue_uses_queue_depth_when_it_exceeds_littles_law() -> None:
    action = decide_one(QUEUE, rate=10.0, p50=10.0, queue=50, workers=1, batch_size=1, delay=0)
    assert action is not None and action.workers == 3


def test_queue_low_load_means_batch_one_and_no_delay() -> None:
    action = decide_one(QUEUE, rate=2.0, p50=10.0, batch_size=8, delay=10, workers=1)
    assert action == Action("tabular", batch_size=1, max_batch_delay_ms=0, workers=1)


@pytest.mark.parametrize("queue", [0, 3])
def test_queue_keeps_the_batch_while_a_backlog_drains(queue: int) -> None:
    # 100 rps over 3 workers x 25 ms wants batch 1, but a backlog of 42 asks for 14 each ...
    first = decide_one(QUEUE, rate=100.0, p50=10.0, queue=42, batch_size=1, delay=0, workers=3)
    assert first == Action("tabular", batch_size=14, max_batch_delay_ms=25, workers=3)
    # ... the batch that drains it stays while anything is queued, and goes once nothing is
    action = decide_one(
        QUEUE, rate=100.0, p50=10.0, queue=queue, batch_size=14, delay=25, workers=3
    )
    if queue:
        assert action is None
    else:
        assert action is not None and action.batch_size == 1


def test_queue_waits_before_scaling_down() -> None:
    state = PolicyState()
    workers_seen = []
    workers = 3
    for tick in range(5):
        obs = observation(
            model_obs(rate=20.0, p50=10.0, workers=workers, batch_size=1, delay=0), time_s=tick
        )
        actions, state = QUEUE.decide(obs, state)
        for a in actions:
            workers = a.workers if a.workers is not None else workers
        workers_seen.append(workers)
    # two seconds of patience at 1 s ticks (downscale_delay_s=2), then straight to the wanted count
    # (the max_step guard, not the policy, limits how far one tick goes)
    assert workers_seen == [3, 3, 1, 1, 1]


def test_queue_smooths_arrival_rate() -> None:
    policy = QueuePolicy((limits(),), QueueParams(ewma_alpha=0.5, target_ongoing_per_worker=100))
    _, state = policy.decide(observation(model_obs(rate=400.0, batch_size=1)), PolicyState())
    _, state = policy.decide(observation(model_obs(rate=0.0, batch_size=1)), state)
    assert state.memory["tabular"].arrival_rate_ewma == pytest.approx(200.0)


def test_normalise_is_bounded_and_handles_missing_values() -> None:
    lim = limits()
    busy = normalise(model_obs(rate=1e6, p99=1e6, queue=1000, oldest=1e6, fill=1.5), lim)
    idle = normalise(model_obs(**IDLE), lim)
    for vec in (busy, idle):
        assert vec.shape == (len(FEATURE_NAMES),) and vec.dtype == np.float32
        assert np.all((vec >= 0) & (vec <= 1)) and not np.isnan(vec).any()
    assert idle[FEATURE_NAMES.index("no_traffic")] == 1.0
    assert busy[FEATURE_NAMES.index("p99_over_slo")] == 1.0
    both = normalise_all(observation(model_obs(), model_obs("text")), (lim, limits("text")))
    assert both.shape == (2, len(FEATURE_NAMES))
    assert math.isclose(float(both[0, FEATURE_NAMES.index("workers")]), 1 / 3, rel_tol=1e-6)
