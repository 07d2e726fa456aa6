"""PPO (Stable-Baselines3) on :class:`~tsadapt.fleet.env.FleetEnv`, and the trained policy as
a fleet policy (one deterministic slot action per tick, behind the same guards as any)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.fleet.agent import decode, features
from tsadapt.fleet.catalog import Catalogue
from tsadapt.fleet.types import FleetObservation, SlotAction
from tsadapt.policy.learn.ppo_train import learning_curve_callback

#: PPO's settings for the fleet (small: a few minutes on 2 cores).
PPO_SETTINGS = {
    "learning_rate": 3e-4,
    "n_steps": 512,
    "batch_size": 128,
    "n_epochs": 5,
    "gamma": 0.95,
    "ent_coef": 0.01,
    "net_arch": [128, 128],
}


def policy_path(directory: Path, gpus: int, models: int) -> Path:
    """Where the policy of a fleet shape lives (``ppo-g8-m10.pt``: the SB3 policy network
    alone, ``ActorCriticPolicy.save``; no optimizer state)."""
    return Path(directory) / f"ppo-g{gpus}-m{models}.pt"


def train(
    cats: Sequence[Catalogue],
    timesteps: int,
    out: Path,
    seed: int = 0,
    episode_ticks: int = 200,
    command: str = "",
    on_progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Train on ``cats`` (one shape); write the policy network and its ``.json`` metadata."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor

    from tsadapt.fleet.env import FleetEnv

    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    torch.set_num_threads(1)
    env = Monitor(FleetEnv(cats, episode_ticks))
    s = dict(PPO_SETTINGS)
    arch = s.pop("net_arch")
    model = PPO(
        "MlpPolicy",
        env,
        seed=seed,
        device="cpu",
        verbose=0,
        policy_kwargs={"net_arch": {"pi": arch, "vf": arch}},
        **s,
    )
    curve: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    model.learn(
        total_timesteps=timesteps, callback=learning_curve_callback(curve, timesteps, on_progress)
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.policy.save(out)
    meta = {
        "command": command,
        "gpus": cats[0].gpus,
        "models": len(cats[0].models),
        "mixes": [c.mix for c in cats],
        "catalogue_seed": cats[0].seed,
        "timesteps": int(model.num_timesteps),
        "episode_ticks": episode_ticks,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "settings": PPO_SETTINGS,
        "learning_curve": [[n, round(r, 3)] for n, r in curve],
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


class FleetPPOPolicy:
    """A trained fleet policy: one slot action per tick from the observation."""

    name = "ppo"

    def __init__(self, path: Path, cat: Catalogue) -> None:
        from stable_baselines3.common.policies import ActorCriticPolicy

        self.cat = cat
        self.model = ActorCriticPolicy.load(str(path), device="cpu")
        want = self.model.observation_space.shape
        have = features_shape(cat)
        if want != have:
            raise ValueError(f"policy {path}: observation shape {want}, this fleet needs {have}")

    def decide(self, observation: FleetObservation) -> tuple[SlotAction, ...]:
        """At t = 0 on an empty fleet: the start every adaptive policy shares (Nexus's plan,
        as in training); afterwards one slot action per tick."""
        if observation.time_s == 0 and observation.gpus_in_use == 0:
            from tsadapt.fleet.nexus import NexusPolicy

            return NexusPolicy(self.cat).decide(observation)
        action, _ = self.model.predict(features(observation, self.cat), deterministic=True)
        a = decode(np.asarray(action), observation, self.cat)
        return (a,) if a is not None else ()


def features_shape(cat: Catalogue) -> tuple[int, ...]:
    from tsadapt.fleet.agent import obs_size
    from tsadapt.fleet.constants import SLOTS_PER_GPU

    return (obs_size(cat.gpus, SLOTS_PER_GPU, len(cat.models)),)
