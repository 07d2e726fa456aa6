"""Gymnasium environment over the simulator: one model's view, DNN-Adapt's actions and reward.

Design (shared policy across models). Each episode draws a scenario (randomised, or one of
``env.scenario_files``) and a *focus* model. Every step is one control tick (``tick_s``):

1. the focus model's incremental action (see :mod:`policy.agent_view`) becomes an absolute
   :class:`Action`; the other models get the actions of a *background* rule policy drawn
   per episode (``queue``, ``aimd`` or ``static``), so the focus model shares cores and the
   worker budget with live, changing neighbours;
2. all actions pass through the one control step (:func:`loop.control_step`: the same
   guards as ``tsadapt control`` and ``tsadapt lab simulate``) and are applied to the simulator;
3. the simulator runs one tick; the reward is Eq. 2 (:mod:`policy.reward`) of the focus
   model over that tick, whose R_SLO counts the whole host's requests in proportion
   ``reward.team`` (:func:`reward.r_slo_team`), so that a worker of a shared budget held
   by the focus model is charged for what its neighbours miss; the observation is the
   focus model's :func:`agent_view.agent_features` over the last ``window_s``.

Why one focus model per episode rather than a padded joint action: the deployed policy
decides for each model from (own features + global context) alone, so training exactly
that mapping keeps the network independent of the number of models, and the reward of
each step is the reward of the model that acted. The price: during training the neighbours
follow rules, not the learned policy.

Episodes end by truncation after ``episode_ticks`` ticks (there is no terminal state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from tsadapt.policy.agent_view import OBS_LAYOUT, agent_features
from tsadapt.policy.controller_config import ControllerConfig
from tsadapt.policy.factory import make_policy
from tsadapt.policy.learn.reward import r_bfr, r_gpu, r_slo, r_slo_team, r_ssr, reward
from tsadapt.policy.learn.scenario_gen import random_scenario
from tsadapt.policy.learn.train_config import RandomiseConfig, TrainConfig
from tsadapt.policy.loop import LoopState, control_step
from tsadapt.policy.sim.control import (
    SimBackend,
    SimControlConfig,
    controller_config_for,
    observer_for,
)
from tsadapt.policy.sim.scenario import Scenario, load_scenario
from tsadapt.policy.supervisor import RuleSetPoints, action_spec, decode
from tsadapt.policy.types import Action, Decision, ModelSettings, Observation, Policy, PolicyState


@dataclass(frozen=True)
class FocusPolicy:
    """The agent's action for the focus model, a background rule's for the others."""

    background: Policy
    focus: str
    action: Action | None
    name: str = "agent"

    def decide(self, observation: Observation, state: PolicyState) -> Decision:
        actions, state = self.background.decide(observation, state)
        proposals = [x for x in actions if x.model != self.focus]
        if self.action is not None:
            proposals.append(self.action)
        return tuple(proposals), state


class AdaptEnv(gym.Env):
    """Single-agent view of one model in a multi-model simulated TorchServe."""

    metadata = {"render_modes": []}

    def __init__(
        self, config: TrainConfig | None = None, scenarios: tuple[Scenario, ...] | None = None
    ) -> None:
        super().__init__()
        self.config = config or TrainConfig()
        e = self.config.env
        self.sim_config = SimControlConfig(e.tick_s, e.window_s, e.cooldown_s, e.max_delay_ms)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(len(OBS_LAYOUT),), dtype=np.float32)
        self.design = action_spec(e.action_design)
        self.action_space = spaces.MultiDiscrete(np.array(self.design.nvec, dtype=np.int64))
        files = tuple(load_scenario(Path(p)) for p in e.scenario_files)
        self._files: tuple[Scenario, ...] = tuple(scenarios or ()) + files
        self._fixed_only = scenarios is not None and e.scenario_file_prob == 0
        self.scenario: Scenario | None = None
        self.controller: ControllerConfig | None = None
        self.focus = ""
        self._backend: SimBackend | None = None
        self._observation: Observation | None = None
        self._tick = 0

    def set_randomise(self, randomise: RandomiseConfig) -> None:
        """Draw the next episodes' random scenarios from ``randomise`` (the curriculum)."""
        self.config = replace(self.config, randomise=randomise)

    # ------------------------------------------------------------------ episode set-up

    def _draw_scenario(self) -> Scenario:
        e, rng = self.config.env, self.np_random
        duration = e.episode_ticks * e.tick_s
        if self._files and (self._fixed_only or rng.random() < e.scenario_file_prob):
            return self._files[int(rng.integers(len(self._files)))]
        return random_scenario(rng, self.config.randomise, duration)

    def _initial(self, sc: Scenario, cfg: ControllerConfig) -> dict[str, ModelSettings]:
        """Random start within the limits and the budget (so the agent sees varied states)."""
        rng = self.np_random
        out, used = {}, sum(lim.min_workers for lim in cfg.models)
        for lim in cfg.models:
            extra = int(rng.integers(0, lim.max_workers - lim.min_workers + 1))
            extra = min(extra, cfg.worker_budget - used)
            used += extra
            out[lim.name] = ModelSettings(
                int(rng.integers(1, lim.max_batch + 1)),
                int(rng.integers(0, lim.max_delay_ms + 1)),
                lim.min_workers + extra,
            )
        return out

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        rng = self.np_random
        sc = self._draw_scenario()
        cfg = controller_config_for(sc, self.sim_config)
        self.scenario, self.controller = sc, cfg
        self.focus = str(sc.model_names[int(rng.integers(len(sc.model_names)))])
        bg = self.config.env.background
        self._background = make_policy(bg[int(rng.integers(len(bg)))], cfg)
        self._state = LoopState()
        self._rules, self._rule_state = RuleSetPoints.for_config(cfg), PolicyState()
        sim = sc.simulator(self._initial(sc, cfg), int(rng.integers(2**31)))
        self._backend = SimBackend(sim, observer_for(sc, self.sim_config))
        self._tick = 0
        self._advance()
        return self._features(), self._info(0)

    # ------------------------------------------------------------------ stepping

    def _advance(self) -> dict:
        self._tick += 1
        stats = self._backend.advance(self._tick * self.sim_config.tick_s)
        self._observation = self._backend.observe()
        return stats

    def _features(self) -> np.ndarray:
        return agent_features(self._observation, self.focus, self.controller)

    def _info(self, changed: int) -> dict[str, Any]:
        m = self._observation.model(self.focus)
        return {
            "scenario": self.scenario.name,
            "focus": self.focus,
            "tick": self._tick,
            "settings": m.settings.as_dict(),
            "changed": changed,
        }

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.int64).reshape(-1)
        if a.shape != (len(self.design.nvec),) or not self.action_space.contains(a):
            raise ValueError(f"action must be in {self.action_space}, got {action!r}")
        obs, cfg = self._observation, self.controller
        lim = cfg.limits(self.focus)
        focus_m = obs.model(self.focus)
        # the rules decide every tick, chosen or not (their memory stays current)
        proposals, self._rule_state = self._rules.propose(obs, self._rule_state)
        own = decode(
            self.design, a, focus_m, lim, proposals[self.focus], self.config.env.delay_step_ms
        )
        policy = FocusPolicy(self._background, self.focus, own)
        step = control_step(self._backend, policy, cfg, self._state, obs)
        self._state = step.state
        changed = sum(len(x.changes) for x in step.applied if x.model == self.focus)
        stats = self._advance()
        good = {
            x.name: int(np.count_nonzero(stats[x.name].latencies_ms <= x.slo_ms))
            for x in self.scenario.models
        }
        finished = {n: st.completed + st.rejected + st.failed for n, st in stats.items()}
        s = stats[self.focus]
        own = r_slo(good[self.focus], finished[self.focus])
        host = r_slo(sum(good.values()), sum(finished.values()))
        terms = {
            "r_slo": r_slo_team(own, host, self.config.reward.team),
            "r_gpu": r_gpu(s.config.workers, lim.min_workers, lim.max_workers),
            "r_bfr": r_bfr(s.fill_sum, s.batches),
            "r_ssr": r_ssr(min(changed, 3)),
        }
        r = reward(
            terms["r_slo"], terms["r_gpu"], terms["r_bfr"], terms["r_ssr"], self.config.reward
        )
        truncated = self._tick >= self.config.env.episode_ticks
        info = self._info(changed) | terms
        return self._features(), float(r), False, truncated, info

    def noop(self) -> np.ndarray:
        return np.array(self.design.noop, dtype=np.int64)


def episode_return(env: AdaptEnv, seed: int, actions: Any = None) -> float:
    """Total reward of one episode with a fixed action (default: no-op); for tests/checks."""
    env.reset(seed=seed)
    total, done = 0.0, False
    act = env.noop() if actions is None else np.asarray(actions)
    while not done:
        _, r, term, trunc, _ = env.step(act)
        total += r
        done = term or trunc
    return total if math.isfinite(total) else math.nan
