"""Gymnasium environment: DNN-Adapt's slot actions on the fleet simulator, behind the guards.

One step = one pick of an incremental slot action (one of the candidates, or the no-op =
"done"). A tick takes up to ``picks_per_tick`` picks (:class:`~tsadapt.fleet.agent.Picks`: the
candidates are listed again after each); after the no-op or the last pick, the tick's actions
pass through the fleet guards together and the simulator runs one control tick; the reward is
Eq. 2 over that tick (:mod:`tsadapt.fleet.agent`), 0 on the picks before it. With one pick per
tick every step is a tick. Each episode draws one of the catalogues (any fleet
shapes: the observation does not depend on the fleet's size), starts from the packed placement
every policy starts from (Nexus's plan for the t = 0 rates), draws a fresh arrival seed, and
is truncated after ``episode_ticks`` ticks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from tsadapt.fleet.agent import Picks, tick_reward
from tsadapt.fleet.candidates import K, obs_size
from tsadapt.fleet.catalog import Catalogue
from tsadapt.fleet.constants import TICK_S
from tsadapt.fleet.guards import GuardState, guard
from tsadapt.fleet.nexus import NexusPolicy
from tsadapt.fleet.sim import FleetSim
from tsadapt.fleet.types import FleetObservation


def start(sim: FleetSim, cat: Catalogue, state: GuardState) -> FleetObservation:
    """Place the fleet as every adaptive policy starts: Nexus's plan at the t = 0 rates."""
    obs = sim.observe(rates=[float(m.workload.rate_at(0.0)) for m in cat.models])
    acts, _ = guard(NexusPolicy(cat).decide(obs), obs, cat, state, 0.0)
    sim.apply(acts, ready=True)
    return sim.observe(rates=[v.rate_rps for v in obs.models])


class FleetEnv(gym.Env):
    """Seed 000's slot formulation over fleet catalogues (one drawn per episode)."""

    metadata = {"render_modes": []}

    def __init__(
        self, cats: Sequence[Catalogue], episode_ticks: int = 200, picks_per_tick: int = 1
    ) -> None:
        super().__init__()
        if episode_ticks < 1:
            raise ValueError(f"episode_ticks must be >= 1, got {episode_ticks}")
        if picks_per_tick < 1:
            raise ValueError(f"picks_per_tick must be >= 1, got {picks_per_tick}")
        self.picks_per_tick = picks_per_tick
        if not cats:
            raise ValueError("cats: need at least one catalogue")
        self.cats, self.cat, self.episode_ticks = tuple(cats), cats[0], episode_ticks
        self.observation_space = spaces.Box(0.0, 1.0, shape=(obs_size(),), dtype=np.float32)
        self.action_space = spaces.Discrete(K)
        self.sim: FleetSim | None = None
        self._obs: FleetObservation | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.cat = self.cats[int(self.np_random.integers(len(self.cats)))]
        self.sim = FleetSim(self.cat, int(self.np_random.integers(2**31)))
        self.state = GuardState()
        self._obs = start(self.sim, self.cat, self.state)
        self._tick = 0
        self._picks = Picks(self._obs, self.cat, self.picks_per_tick)
        return self._picks.x, {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.int64).reshape(-1)
        if a.size != 1 or not self.action_space.contains(int(a[0])):
            raise ValueError(f"action must be in {self.action_space}, got {action!r}")
        if self._picks.pick(int(a[0])):
            info = {"picks": len(self._picks.actions), "tick_end": False}
            return self._picks.x, 0.0, False, False, info
        t = self._tick * TICK_S
        acts, over = guard(self._picks.actions, self._obs, self.cat, self.state, t)
        switched = self.sim.apply(acts)
        self._tick += 1
        tick = self.sim.advance(self._tick * TICK_S)
        self._obs = self.sim.observe()
        r, terms = tick_reward(tick, self.sim.gpus_in_use, self.cat.gpus, switched)
        truncated = self._tick >= self.episode_ticks or self._tick * TICK_S >= self.cat.horizon_s
        info = terms | {
            "overrides": len(over),
            "gpus_in_use": self.sim.gpus_in_use,
            "picks": len(self._picks.actions),
            "tick_end": True,
        }
        self._picks = Picks(self._obs, self.cat, self.picks_per_tick)
        return self._picks.x, float(r), False, truncated, info
