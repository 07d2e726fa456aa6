"""DNN-Adapt's slot formulation: the Gym environment, action decoding and the reward."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from tsadapt.fleet.agent import FLEET_REWARD, action_nvec, decode, tick_reward
from tsadapt.fleet.catalog import build_catalogue
from tsadapt.fleet.env import FleetEnv
from tsadapt.fleet.sim import TickStats
from tsadapt.fleet.types import EMPTY, FleetObservation, ModelView, Slot, SlotAction


@pytest.fixture(scope="module")
def cats():
    return [build_catalogue(2, 3, mix, 60.0) for mix in ("diurnal", "bursty")]


def test_env_passes_gymnasiums_checker(cats) -> None:
    check_env(FleetEnv(cats, episode_ticks=5), skip_render_check=True)


def test_a_noop_episode_changes_no_slot(cats) -> None:
    env = FleetEnv(cats, episode_ticks=20)
    env.reset(seed=4)
    before = [list(r) for r in env.sim.slots]
    done, ssr = False, []
    while not done:
        _, r, term, trunc, info = env.step(np.zeros(4, dtype=np.int64))
        ssr.append(info["r_ssr"])
        done = term or trunc
    assert [list(r) for r in env.sim.slots] == before
    assert ssr == [1.0] * 20


def test_env_rejects_out_of_space_actions(cats) -> None:
    env = FleetEnv(cats, episode_ticks=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be in"):
        env.step(np.array(action_nvec(2, 4, 3)))


def test_env_needs_one_shape(cats) -> None:
    with pytest.raises(ValueError, match="one \\(gpus, models\\) shape"):
        FleetEnv([cats[0], build_catalogue(3, 3, "diurnal", 60.0)])


def _obs(slots) -> FleetObservation:
    views = tuple(ModelView(i, 100.0, 1.0, 0, 1.0, 0) for i in range(3))
    return FleetObservation(1.0, views, tuple(tuple(r) for r in slots))


@pytest.mark.parametrize(
    ("action", "want"),
    [
        ((0, 2, 9, 1), None),  # slot 0 is the no-op
        ((1, 1, 5, 0), SlotAction(0, 0, 0, 7)),  # same model: batch 6 + 1
        ((1, 1, 0, 1), SlotAction(0, 0, 0, 2, True)),  # same model: 6 - 4, parallel
        ((2, 0, 4, 0), SlotAction(0, 1, EMPTY, 1)),  # empty the slot
        ((5, 0, 4, 0), None),  # emptying an empty slot: nothing to do
    ],
)
def test_decode(cats, action, want) -> None:
    cat = cats[0]
    obs = _obs([[Slot(0, 6), Slot(1, 3), Slot(), Slot()], [Slot()] * 4])
    assert decode(np.array(action), obs, cat) == want


def test_decode_a_new_model_starts_at_its_slo_batch(cats) -> None:
    cat = cats[0]
    obs = _obs([[Slot()] * 4, [Slot()] * 4])
    a = decode(np.array((6, 3, 4, 0)), obs, cat)  # GPU 1 slot 1, model 2, delta 0
    assert a == SlotAction(1, 1, 2, cat.models[2].max_batch)


def test_tick_reward_is_eq2(cats) -> None:
    r, terms = tick_reward(TickStats(good=90, finished=100, fill_sum=5.0, batches=10), 2, 8, 1)
    assert terms == {"r_slo": 0.9, "r_gpu": 0.75, "r_bfr": 0.5, "r_ssr": 0.0}
    w = FLEET_REWARD
    assert r == pytest.approx(w.slo * 0.9 + (w.gpu * 0.75 + w.bfr * 0.5) * 0.9)


def test_fewer_gpus_score_higher(cats) -> None:
    tick = TickStats(good=100, finished=100, fill_sum=10.0, batches=10)
    assert tick_reward(tick, 2, 8, 0)[0] > tick_reward(tick, 6, 8, 0)[0]
