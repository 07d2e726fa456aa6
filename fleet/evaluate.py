"""The scale sweep: every policy on every sweep point, and the hindsight bound."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsadapt.fleet.baselines import HoldStart, SidecarRules, StaticDedicated, gpu_lower_bound
from tsadapt.fleet.catalog import MIXES, Catalogue, build_catalogue
from tsadapt.fleet.nexus import NexusPolicy
from tsadapt.fleet.ppo import FleetPPOPolicy, policy_path
from tsadapt.fleet.run import FleetResult, run_fleet

#: (GPUs, models, horizon s): the sweep's diagonal; the largest point runs a shorter horizon.
SWEEP: tuple[tuple[int, int, float], ...] = ((8, 10, 600.0), (32, 50, 600.0), (128, 200, 300.0))
POLICIES = ("static", "hold", "sidecar", "nexus", "ppo")
#: Where ``tsadapt fleet train`` writes and ``evaluate`` looks for policies.
TRAINED_DIR = Path(__file__).resolve().parent / "trained"


@dataclass(frozen=True)
class PointResult:
    """One sweep point: the catalogue, each policy's run, the bound per tick."""

    cat: Catalogue
    runs: dict[str, FleetResult]
    bound: np.ndarray
    missing: dict[str, str]
    ppo_forward_ms: float | None = None
    #: the trained policy's metadata (``.json`` beside it), when PPO ran
    ppo_meta: dict | None = None


def make(name: str, cat: Catalogue, trained: Path):
    if name == "static":
        return StaticDedicated(cat)
    if name == "hold":
        return HoldStart(cat)
    if name == "sidecar":
        return SidecarRules(cat)
    if name == "nexus":
        return NexusPolicy(cat)
    if name == "ppo":
        return FleetPPOPolicy(policy_path(trained, cat.gpus, len(cat.models)), cat)
    raise ValueError(f"policy: unknown {name!r}; known: {', '.join(POLICIES)}")


def ppo_forward_ms(cat: Catalogue, repeats: int = 50) -> float:
    """Mean time (ms) of one decision of a PPO network of this fleet's shape (untrained
    weights: the cost of the forward pass and decoding, not of any training)."""
    import torch
    from stable_baselines3 import PPO

    from tsadapt.fleet.agent import decode, features
    from tsadapt.fleet.env import FleetEnv
    from tsadapt.fleet.ppo import PPO_SETTINGS
    from tsadapt.fleet.sim import FleetSim

    torch.set_num_threads(1)
    env = FleetEnv([cat])
    arch = PPO_SETTINGS["net_arch"]
    model = PPO("MlpPolicy", env, device="cpu", policy_kwargs={"net_arch": arch})
    obs = FleetSim(cat).observe(rates=[m.mean_rate for m in cat.models])
    t0 = time.perf_counter()
    for _ in range(repeats):
        a, _ = model.predict(features(obs, cat), deterministic=True)
        decode(np.asarray(a), obs, cat)
    return 1000.0 * (time.perf_counter() - t0) / repeats


def evaluate_point(
    gpus: int,
    models: int,
    mix: str,
    horizon_s: float,
    seed: int = 0,
    trained: Path = TRAINED_DIR,
    policies: tuple[str, ...] = POLICIES,
    on_run: Callable[[str, Catalogue], Callable[[float], None] | None] | None = None,
) -> PointResult:
    """Run ``policies`` on one sweep point (a policy without a trained file is skipped)."""
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
    cat = build_catalogue(gpus, models, mix, horizon_s)
    runs, missing = {}, {}
    for name in policies:
        if name == "ppo" and not policy_path(trained, gpus, models).exists():
            missing[name] = f"no policy trained for {gpus} GPUs x {models} models"
            continue
        tick = on_run(name, cat) if on_run else None
        runs[name] = run_fleet(cat, make(name, cat, trained), seed, tick)
    fwd, meta = None, None
    if "ppo" in policies and "ppo" not in runs:
        fwd = ppo_forward_ms(cat)
    if "ppo" in runs:
        meta_file = policy_path(trained, gpus, models).with_suffix(".json")
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else None
    return PointResult(cat, runs, gpu_lower_bound(cat), missing, fwd, meta)
