"""PPO (Stable-Baselines3) on :class:`~tsadapt.fleet.env.FleetEnv`, and the trained policy as
a fleet policy (deterministic picks, up to the number per tick it was trained with, behind the
same guards as any).

The network scores each of the tick's candidate slot actions with one shared MLP over that
candidate's features and the fleet's (a softmax over the scores is the policy; empty entries
are masked out), and values the state from the candidates' mean hidden features: one policy
for every fleet size.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.fleet.agent import Picks
from tsadapt.fleet.candidates import CAND_FEATURES, FLEET_FEATURES, K, obs_size
from tsadapt.fleet.catalog import Catalogue
from tsadapt.fleet.tick_discount import tick_end_callback, tick_rollout_buffer_class
from tsadapt.fleet.types import FleetObservation, SlotAction
from tsadapt.policy.learn.ppo_train import learning_curve_callback

#: PPO's settings for the fleet (chosen on 8 GPUs x 10 models: at 3e-4 with 512-step
#: rollouts the scores stayed near uniform after 30k steps).
PPO_SETTINGS = {
    "learning_rate": 1e-3,
    "n_steps": 1024,
    "batch_size": 256,
    "n_epochs": 10,
    "gamma": 0.98,
    "ent_coef": 0.0,
    "hidden": 64,
}
#: The one policy file (``ActorCriticPolicy.save``: the network alone, no optimizer state).
POLICY_FILE = "ppo-fleet.pt"


def policy_path(directory: Path) -> Path:
    return Path(directory) / POLICY_FILE


@functools.cache
def _policy_class():
    """The SB3 policy with the candidate scorer (built lazily: torch is imported on use)."""
    import torch
    from stable_baselines3.common.policies import ActorCriticPolicy
    from torch import nn

    class CandidateNet(nn.Module):
        """``forward(x) -> (scores over K candidates, critic latent)``."""

        def __init__(self, hidden: int) -> None:
            super().__init__()
            self.latent_dim_pi, self.latent_dim_vf = K, hidden
            d = CAND_FEATURES + FLEET_FEATURES
            self.embed = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, hidden))
            self.score = nn.Sequential(nn.Tanh(), nn.Linear(hidden, 1))
            self.critic = nn.Sequential(nn.Linear(hidden + FLEET_FEATURES, hidden), nn.Tanh())

        def _split(self, x: torch.Tensor):
            cand = x[:, : K * CAND_FEATURES].reshape(-1, K, CAND_FEATURES)
            fleet = x[:, K * CAND_FEATURES :]
            h = self.embed(torch.cat([cand, fleet[:, None, :].expand(-1, K, -1)], dim=-1))
            return cand[..., 0], fleet, h

        def forward_actor(self, x: torch.Tensor) -> torch.Tensor:
            valid, _, h = self._split(x)
            return self.score(h).squeeze(-1) + (valid - 1.0) * 1e4

        def forward_critic(self, x: torch.Tensor) -> torch.Tensor:
            valid, fleet, h = self._split(x)
            pooled = (h * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1.0)
            return self.critic(torch.cat([torch.tanh(pooled), fleet], dim=-1))

        def forward(self, x: torch.Tensor):
            return self.forward_actor(x), self.forward_critic(x)

    class CandidatePolicy(ActorCriticPolicy):
        def __init__(self, *args: Any, hidden: int = 64, **kwargs: Any) -> None:
            self.hidden = hidden
            super().__init__(*args, **kwargs)

        def _build_mlp_extractor(self) -> None:
            self.mlp_extractor = CandidateNet(self.hidden)

        def _build(self, lr_schedule) -> None:
            super()._build(lr_schedule)
            self.action_net = nn.Identity()  # the scores are the logits
            last = self.mlp_extractor.score[-1]
            nn.init.orthogonal_(last.weight, gain=0.01)
            nn.init.zeros_(last.bias)
            self.optimizer = self.optimizer_class(
                self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
            )

        def _get_constructor_parameters(self) -> dict[str, Any]:
            return super()._get_constructor_parameters() | {"hidden": self.hidden}

    return CandidatePolicy


def train(
    cats: Sequence[Catalogue],
    timesteps: int,
    out: Path,
    seed: int = 0,
    episode_ticks: int = 200,
    command: str = "",
    on_progress: Callable[[int, int, float], None] | None = None,
    picks_per_tick: int = 1,
    init: Path | None = None,
    learning_rate: float | None = None,
) -> dict[str, Any]:
    """Train on ``cats`` (any shapes), from ``init``'s network if given (``learning_rate``:
    instead of PPO_SETTINGS's, e.g. lower for a fine-tune); write the policy network and its
    ``.json`` metadata."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import CallbackList
    from stable_baselines3.common.monitor import Monitor

    from tsadapt.fleet.env import FleetEnv

    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    torch.set_num_threads(1)
    env = Monitor(FleetEnv(cats, episode_ticks, picks_per_tick))
    if learning_rate is not None and not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    settings = dict(PPO_SETTINGS)
    if learning_rate is not None:
        settings["learning_rate"] = learning_rate
    s = dict(settings)
    hidden = s.pop("hidden")
    model = PPO(
        _policy_class(),
        env,
        seed=seed,
        device="cpu",
        verbose=0,
        policy_kwargs={"hidden": hidden},
        rollout_buffer_class=tick_rollout_buffer_class(),
        **s,
    )
    if init is not None:
        model.policy.load_state_dict(load_policy(init).state_dict())
    curve: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    callbacks = [learning_curve_callback(curve, timesteps, on_progress), tick_end_callback()]
    model.learn(total_timesteps=timesteps, callback=CallbackList(callbacks))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.policy.save(out)
    meta = {
        "command": command,
        "shapes": sorted({(c.gpus, len(c.models)) for c in cats}),
        "mixes": sorted({c.mix for c in cats}),
        "catalogue_seeds": sorted({c.seed for c in cats}),
        "timesteps": int(model.num_timesteps),
        "episode_ticks": episode_ticks,
        "picks_per_tick": picks_per_tick,
        "init": str(init) if init is not None else None,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "settings": settings,
        "discount": "per tick (fleet/tick_discount.py)",
        "learning_curve": [[n, round(r, 3)] for n, r in curve],
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def load_policy(path: Path):
    """The trained network at ``path`` (a clear error if it is not one of ours)."""
    cls = _policy_class()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no fleet policy at {path}: run `tsadapt lab fleet train` first")
    net = cls.load(str(path), device="cpu")
    if net.observation_space.shape != (obs_size(),):
        raise ValueError(
            f"policy {path}: observation shape {net.observation_space.shape}, the fleet's "
            f"candidate encoding needs {(obs_size(),)}"
        )
    return net


def picks_of(path: Path) -> int:
    """The picks per tick a policy was trained with (its ``.json``; 1 when it says none)."""
    meta = Path(path).with_suffix(".json")
    return int(json.loads(meta.read_text()).get("picks_per_tick", 1)) if meta.exists() else 1


class FleetPPOPolicy:
    """A trained fleet policy: per tick, deterministic picks until it picks the no-op or has
    picked ``picks`` actions (default: as many as it was trained with)."""

    name = "ppo"

    def __init__(self, path: Path, cat: Catalogue, picks: int | None = None) -> None:
        import torch

        torch.set_num_threads(1)  # one core decides (its CPU time is what run_fleet reports)
        self.cat = cat
        self.model = load_policy(path)
        self.picks = picks_of(path) if picks is None else picks

    def decide(self, observation: FleetObservation) -> tuple[SlotAction, ...]:
        """At t = 0 on an empty fleet: the start every adaptive policy shares (Nexus's plan,
        as in training); afterwards the tick's picks."""
        if observation.time_s == 0 and observation.gpus_in_use == 0:
            from tsadapt.fleet.nexus import NexusPolicy

            return NexusPolicy(self.cat).decide(observation)
        picks = Picks(observation, self.cat, self.picks)
        while picks.pick(self._best(picks.x)):
            pass
        return tuple(picks.actions)

    def _best(self, x: np.ndarray) -> int:
        action, _ = self.model.predict(x, deterministic=True)
        return int(np.asarray(action).reshape(-1)[0])
