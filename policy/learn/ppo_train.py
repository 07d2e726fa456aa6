"""PPO training (Stable-Baselines3) over the Gym environment; writes a policy file.

The policy file format and the runtime :class:`~tsadapt.policy.ppo_policy.PPOPolicy` live in
:mod:`tsadapt.policy.ppo_policy`; this module only learns.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.policy.learn.curriculum import CurriculumLog, curriculum_callback
from tsadapt.policy.learn.train_config import TrainConfig
from tsadapt.policy.ppo_policy import library_versions, save_policy_file


def learning_curve_callback(
    curve: list[tuple[int, float]],
    total_timesteps: int,
    on_progress: Callable[[int, int, float], None] | None = None,
) -> Any:  # noqa: ANN401 - a stable_baselines3 BaseCallback
    """An SB3 callback that appends ``(timesteps, mean episode reward)`` to ``curve`` after
    each rollout and reports it to ``on_progress(done, total, mean)``."""
    from stable_baselines3.common.callbacks import BaseCallback

    class _Progress(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            buf = self.model.ep_info_buffer
            mean = float(np.mean([e["r"] for e in buf])) if buf else float("nan")
            curve.append((int(self.num_timesteps), mean))
            if on_progress is not None:
                on_progress(int(self.num_timesteps), total_timesteps, mean)

    return _Progress()


def make_ppo(config: TrainConfig, seed: int, scenarios: Sequence[Any] | None = None) -> Any:
    """SB3's PPO with ``config.ppo``'s settings over ``n_envs`` copies of the Gym env: random
    scenarios from ``config``, or ``scenarios`` when given (a fine-tune's slices)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from tsadapt.policy.learn.gym_env import AdaptEnv

    p = config.ppo
    fixed = None if scenarios is None else tuple(scenarios)

    def make(i: int) -> Callable[[], Any]:
        return lambda: Monitor(AdaptEnv(config, scenarios=fixed))

    venv = DummyVecEnv([make(i) for i in range(p.n_envs)])
    venv.seed(seed)
    return PPO(
        "MlpPolicy",
        venv,
        learning_rate=p.learning_rate,
        n_steps=p.n_steps,
        batch_size=p.batch_size,
        n_epochs=p.n_epochs,
        gamma=p.gamma,
        gae_lambda=p.gae_lambda,
        clip_range=p.clip_range,
        ent_coef=p.ent_coef,
        seed=seed,
        device="cpu",
        policy_kwargs={"net_arch": {"pi": list(p.net_arch), "vf": list(p.net_arch)}},
        verbose=0,
    )


def train(
    config: TrainConfig,
    out: Path,
    command: str = "",
    on_progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Train PPO over randomised scenarios; write the policy file; return its metadata.

    ``on_progress(done_steps, total_steps, mean_episode_reward)`` is called every rollout.
    """
    import torch
    from stable_baselines3.common.callbacks import CallbackList

    torch.set_num_threads(1)

    model = make_ppo(config, config.seed)
    curve: list[tuple[int, float]] = []
    callbacks = [learning_curve_callback(curve, config.total_timesteps, on_progress)]
    log = CurriculumLog([])
    if config.curriculum.every_steps > 0:
        callbacks.append(curriculum_callback(config, log))

    t0, c0 = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=config.total_timesteps, callback=CallbackList(callbacks))
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    meta = {
        "created_unix": int(time.time()),
        "command": command,
        "seed": config.seed,
        "total_timesteps": int(model.num_timesteps),
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "host": {"cpus": _cpus(), "platform": platform.platform()},
        "net_arch": list(config.ppo.net_arch),
        "delay_step_ms": int(config.env.delay_step_ms),
        "action_design": config.env.action_design,
        "train_config": config.as_dict(),
        "learning_curve": [[s, round(r, 3)] for s, r in curve],
        "curriculum": log.as_list(),
        "versions": library_versions(),
        "argv": list(sys.argv),
    }
    save_policy_file(out, model.policy, meta)
    return meta


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
