"""PPO's discount per control tick: picks before a tick's last carry no discount."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer

from tsadapt.fleet.env import FleetEnv
from tsadapt.fleet.tick_discount import tick_rollout_buffer_class

#: Two picks, then the tick's end, then a one-pick tick: rewards only at tick ends.
TICK_END = [0.0, 0.0, 1.0, 1.0]
REWARDS = [0.0, 0.0, 1.0, 1.0]


def _returns(cls: type, tick_end: list[float] | None) -> np.ndarray:
    buf = cls(4, spaces.Box(0.0, 1.0, (2,)), spaces.Discrete(3), gamma=0.5, gae_lambda=1.0)
    for step, r in enumerate(REWARDS):
        if tick_end is not None:
            buf.tick_end[buf.pos] = tick_end[step]
        buf.add(
            np.zeros((1, 2), np.float32), np.zeros((1, 1)), np.array([r]), np.array([step == 0]),
            torch.zeros(1), torch.zeros(1),
        )  # fmt: skip
    buf.compute_returns_and_advantage(torch.zeros(1), np.array([False]))
    return buf.returns[:, 0]


def test_returns_are_discounted_per_tick_not_per_pick() -> None:
    # per tick: G3 = 1, G2 = 1 + 0.5 * 1 = 1.5, and the picks before it see 1.5 undiscounted
    np.testing.assert_allclose(_returns(tick_rollout_buffer_class(), TICK_END), [1.5, 1.5, 1.5, 1])
    # per step (SB3's own buffer): every pick halves what comes after it
    np.testing.assert_allclose(_returns(RolloutBuffer, None), [0.375, 0.75, 1.5, 1])


def test_every_step_ending_a_tick_is_sb3s_buffer() -> None:
    np.testing.assert_allclose(
        _returns(tick_rollout_buffer_class(), [1.0] * 4), _returns(RolloutBuffer, None)
    )


@pytest.mark.parametrize("picks", [1, 3])
def test_the_env_says_which_steps_end_a_tick(picks: int) -> None:
    from tsadapt.fleet.catalog import build_catalogue

    env = FleetEnv([build_catalogue(2, 3, "diurnal", 40.0)], episode_ticks=5, picks_per_tick=picks)
    env.reset(seed=0)
    first_candidate = 1  # not the no-op: a pick that does not end the tick while picks remain
    _, r, _, _, info = env.step(np.array([first_candidate]))
    assert info["tick_end"] is (picks == 1)
    _, r, _, _, info = env.step(np.array([0]))  # the no-op ends the tick
    assert info["tick_end"] is True
