"""Held-out scenarios of ``tsadapt lab evaluate --random`` never share a seed with training or
selection (``policy/learn/scenario_sets.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.seeding import np_random

from tsadapt.policy.defaults import HELDOUT_SCENARIO_SEED, SELECTION_SCENARIO_SEED, TUNING_SEEDS
from tsadapt.policy.learn import scenario_sets
from tsadapt.policy.learn.scenario_sets import (
    MAX_HELDOUT,
    check_heldout,
    draw,
    heldout_scenario_seeds,
    selection_scenario_seeds,
    training_generator_seeds,
    used_seeds,
)
from tsadapt.policy.learn.train_config import (
    PPOConfig,
    SelectConfig,
    TrainConfig,
    load_train_config,
)


@pytest.fixture(scope="module")
def shipped() -> TrainConfig:
    return load_train_config()  # configs/train.yaml: what trained policy/trained/ppo.zip


def test_the_shipped_training_uses_none_of_the_held_out_seeds(shipped: TrainConfig) -> None:
    held = set(heldout_scenario_seeds(MAX_HELDOUT))
    assert not held & used_seeds(shipped)
    assert check_heldout(shipped, MAX_HELDOUT) == tuple(sorted(held))
    # what the shipped config trains and selects on, spelled out
    c, e = shipped.select.candidates, shipped.ppo.n_envs
    assert training_generator_seeds(shipped) == {
        shipped.seed + k + i for k in range(c) for i in range(e)
    }
    assert set(selection_scenario_seeds(shipped)) == set(
        range(SELECTION_SCENARIO_SEED, SELECTION_SCENARIO_SEED + shipped.select.random_scenarios)
    )
    assert set(shipped.select.seeds) <= used_seeds(shipped)
    assert set(TUNING_SEEDS) <= used_seeds(shipped)


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(seed=HELDOUT_SCENARIO_SEED - 1, ppo=PPOConfig(n_envs=2)),  # env 1 = held-out 0
        TrainConfig(select=SelectConfig(candidates=1, seeds=(HELDOUT_SCENARIO_SEED + 3,))),
    ],
)
def test_a_config_that_would_meet_the_held_out_seeds_is_refused(config: TrainConfig) -> None:
    with pytest.raises(ValueError, match="--random: held-out scenario seeds"):
        check_heldout(config, 10)


def test_selection_scenarios_running_into_the_held_out_ones_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scenario_sets, "SELECTION_SCENARIO_SEED", HELDOUT_SCENARIO_SEED - 2)
    config = TrainConfig(select=SelectConfig(candidates=1, random_scenarios=5))
    assert selection_scenario_seeds(config)[-1] == HELDOUT_SCENARIO_SEED + 2
    with pytest.raises(ValueError, match=r"seeds \[50000000, 50000001, 50000002\]"):
        check_heldout(config, 10)


@pytest.mark.parametrize("n", [0, -1, MAX_HELDOUT + 1, 2.5])
def test_held_out_count_is_checked(n: object) -> None:
    with pytest.raises(ValueError, match="--random"):
        heldout_scenario_seeds(n)  # type: ignore[arg-type]


def test_a_seed_means_the_same_stream_to_training_and_to_the_draw() -> None:
    """Training environments get gymnasium's generator for their seed, the held-out draw
    numpy's default_rng: the same stream, so distinct seeds are distinct streams."""
    for s in (0, 7, HELDOUT_SCENARIO_SEED):
        gym_rng, _ = np_random(s)
        assert np.array_equal(gym_rng.random(4), np.random.default_rng(s).random(4))


def test_draw_is_deterministic_and_named(shipped: TrainConfig) -> None:
    seeds = heldout_scenario_seeds(6)
    a = draw(shipped, seeds, 30.0, "heldout")
    b = draw(shipped, seeds, 30.0, "heldout")
    assert [x.name for x in a] == [x.name for x in b]
    assert [x.seed for x in a] == [x.seed for x in b]
    assert all(x.duration_s == 30.0 for x in a)
    assert all(x.name.startswith(f"heldout-{k}") for k, x in enumerate(a))
    other = draw(shipped, selection_scenario_seeds(shipped)[:6], 30.0, "select")
    assert {x.seed for x in a}.isdisjoint({x.seed for x in other})
