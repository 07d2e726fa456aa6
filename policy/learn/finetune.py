"""Fine-tuning a trained policy on a user's own traffic (``tsadapt train --scenario``).

The user's scenario (its models, SLOs and latency profiles; its arrivals, typically a
``trace`` from ``tsadapt trace``) is cut in time into slices of ``slice_s`` seconds; every
``heldout_every``-th slice is held out and the others are trained on. Training starts FROM
the given policy's weights (Stable-Baselines3 PPO, the same network and hyperparameters as
its metadata records, a lower learning rate) and runs episodes of one slice each, behind the
same guards as ever. The held-out slices are for the comparison that follows
(:mod:`tsadapt.policy.learn.finetune_report`); nothing here looks at them.

The fine-tuned weights are kept only if, on the TRAINING slices (validation seeds, never
the held-out slices), their mean goodput is at least the base policy's; otherwise ``out``
holds the base weights, and its metadata says so (``finetune.kept``). The result is written
to a temporary file beside ``out`` and renamed, so an interrupted run leaves ``out`` as it
was.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.policy.learn.train_config import TrainConfig, train_config_from_dict
from tsadapt.policy.ppo_policy import (
    SHIPPED_POLICY,
    PolicyFileError,
    copy_policy_file,
    file_sha256,
    library_versions,
    load_policy_file,
    save_policy_file,
)
from tsadapt.policy.sim.scenario import Scenario, WorkloadEntry
from tsadapt.policy.sim.specs import LatencyModel
from tsadapt.policy.sim.trace_import import FILE_MODE, trace_text
from tsadapt.policy.sim.workload_files import Trace

#: The fine-tune's learning rate as a share of the base policy's: small steps away from a
#: policy that already works.
FINETUNE_LR_SHARE = 0.3
#: Fewest PPO steps per environment per rollout (a short fine-tune still updates).
MIN_ROLLOUT_STEPS = 64
#: Seeds of the validation on the training slices (the held-out comparison uses 0..N-1).
VALIDATION_SEEDS = (1001, 1002)


def train_goodput(slices: Sequence[Scenario], policy_file: Path) -> float:
    """Mean goodput (req/s) of a policy file over ``slices`` x :data:`VALIDATION_SEEDS`."""
    from tsadapt.policy.sim.control import run_named

    runs = [
        run_named(sc, "ppo", seed, policy_file).overall.goodput_rps
        for sc in slices
        for seed in VALIDATION_SEEDS
    ]
    return float(np.mean(runs))


def is_shipped_policy(path: Path) -> bool:
    """Whether ``path`` is (or links to) the shipped policy file."""
    p = Path(path)
    if p.resolve() == SHIPPED_POLICY.resolve():
        return True
    try:
        return p.exists() and os.path.samefile(p, SHIPPED_POLICY)
    except OSError:
        return False


def with_profiles(
    scenario: Scenario, latencies: Sequence[tuple[str, LatencyModel, str]]
) -> Scenario:
    """``scenario`` with each named model's latency replaced by a measured one
    (``(model, latency, source)``); a model the scenario lacks is an error naming it."""
    models = {m.name: m for m in scenario.models}
    for name, latency, source in latencies:
        if name not in models:
            raise ValueError(
                f"{source}: model {name!r} is not in the scenario (its models: {', '.join(models)})"
            )
        m = models[name]
        if m.batch_overhead_ms:  # the worker's work the profile does not see stays in
            table = tuple(
                (b, float(latency.batch_ms(b)) + m.batch_overhead_ms)
                for b in range(1, m.max_batch + 1)
            )
            latency = LatencyModel(table=table)
        models[name] = dataclasses.replace(m, latency=latency, profile_path=source)
    return dataclasses.replace(scenario, models=tuple(models[m.name] for m in scenario.models))


@dataclass(frozen=True)
class Slices:
    """The scenario cut in time: scenarios of one slice each, trained on or held out."""

    train: tuple[Scenario, ...]
    heldout: tuple[Scenario, ...]
    slice_s: float

    def describe(self) -> str:
        return (
            f"{len(self.train) + len(self.heldout)} slices of {self.slice_s:g} s: "
            f"train {', '.join(s.name for s in self.train)}; "
            f"held out {', '.join(s.name for s in self.heldout)}"
        )


def time_slices(scenario: Scenario, slice_s: float, heldout_every: int, folder: Path) -> Slices:
    """Cut ``scenario`` into ``slice_s`` slices (arrivals drawn once with its seed, so a
    generated workload is cut the same way as a trace); slice ``i`` is held out when
    ``i % heldout_every == heldout_every - 1``. The slices' trace files go to ``folder``
    (read at once: the scenarios keep the arrivals in memory)."""
    if not (math.isfinite(slice_s) and slice_s > 0):
        raise ValueError(f"--slice-s must be > 0, got {slice_s}")
    if heldout_every < 2:
        raise ValueError(f"--heldout-every must be >= 2, got {heldout_every}")
    n = int(scenario.duration_s // slice_s)
    if n < 2:
        raise ValueError(
            f"scenario {scenario.name}: {scenario.duration_s:g} s holds {n} slice(s) of "
            f"{slice_s:g} s; at least 2 are needed (one to train on, one to hold out)"
        )
    rng = np.random.default_rng(scenario.seed)
    arrivals = {}
    for name in scenario.model_names:
        w = scenario.workload_for(name)
        arrivals[name] = np.sort(w.arrivals(scenario.duration_s, rng)) if w else np.empty(0)
    train, held = [], []
    for i in range(n):
        lo, hi = i * slice_s, (i + 1) * slice_s
        entries = []
        for name, t in arrivals.items():
            part = t[(t >= lo) & (t < hi)] - lo
            path = Path(folder) / f"slice{i}-{name}.csv"
            path.write_text(trace_text(part, [f"{scenario.name} [{lo:g}, {hi:g}) s, {name}"]))
            entries.append(WorkloadEntry(name, Trace(str(path))))
        sc = dataclasses.replace(
            scenario, name=f"{scenario.name}[{lo:g}-{hi:g}s]", duration_s=slice_s,
            workload=tuple(entries),
        )  # fmt: skip
        (held if i % heldout_every == heldout_every - 1 else train).append(sc)
    return Slices(tuple(train), tuple(held), slice_s)


def finetune_config(
    base_meta: dict[str, Any], slice_s: float, timesteps: int, seed: int
) -> TrainConfig:
    """The base policy's training config, set for episodes of one slice and a short run."""
    cfg = train_config_from_dict(base_meta.get("train_config") or {})
    ticks = max(2, int(slice_s // cfg.env.tick_s))
    p = cfg.ppo
    n_steps = max(MIN_ROLLOUT_STEPS, min(p.n_steps, timesteps // p.n_envs))
    ppo = dataclasses.replace(
        p,
        n_steps=n_steps,
        batch_size=min(p.batch_size, n_steps * p.n_envs),
        learning_rate=p.learning_rate * FINETUNE_LR_SHARE,
    )
    env = dataclasses.replace(
        cfg.env, episode_ticks=ticks, scenario_files=(), scenario_file_prob=0.0
    )
    select = dataclasses.replace(cfg.select, candidates=1, scenario_files=())
    return dataclasses.replace(
        cfg, seed=seed, total_timesteps=timesteps, env=env, ppo=ppo, select=select
    )


def finetune(
    base: Path,
    slices: Slices,
    out: Path,
    timesteps: int,
    seed: int = 0,
    command: str = "",
    extra_meta: dict[str, Any] | None = None,
    on_progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Train from ``base``'s weights on ``slices.train``; write ``out`` atomically; return
    its metadata. Refuses to write the shipped policy."""
    import torch

    from tsadapt.policy.learn.ppo_train import learning_curve_callback, make_ppo

    out = Path(out)
    if is_shipped_policy(out):
        raise PolicyFileError(
            f"--out {out} is the shipped policy ({SHIPPED_POLICY}); write the fine-tuned "
            "policy to a file of your own (e.g. --out my-policy.zip)"
        )
    if timesteps < 1:
        raise ValueError(f"--timesteps must be >= 1, got {timesteps}")
    net, base_meta = load_policy_file(base)
    cfg = finetune_config(base_meta, slices.slice_s, timesteps, seed)
    torch.set_num_threads(1)
    p = cfg.ppo
    train = slices.train

    model = make_ppo(cfg, seed, scenarios=train)
    if list(p.net_arch) != list(base_meta["net_arch"]):
        raise PolicyFileError(
            f"policy file {base}: net_arch {base_meta['net_arch']} differs from its "
            f"train_config's {list(p.net_arch)}"
        )
    model.policy.load_state_dict(net.state_dict())  # start FROM the base policy
    curve: list[tuple[int, float]] = []
    t0, c0 = time.perf_counter(), time.process_time()
    model.learn(
        total_timesteps=timesteps,
        callback=learning_curve_callback(curve, timesteps, on_progress),
    )
    meta = {
        "created_unix": int(time.time()),
        "command": command,
        "seed": seed,
        "total_timesteps": int(model.num_timesteps),
        "train_seconds": round(time.perf_counter() - t0, 1),
        "train_cpu_seconds": round(time.process_time() - c0, 1),
        "net_arch": list(p.net_arch),
        "delay_step_ms": int(cfg.env.delay_step_ms),
        "train_config": cfg.as_dict(),
        "learning_curve": [[s, round(r, 3)] for s, r in curve],
        "versions": library_versions(),
        "finetuned_from": {
            "path": str(base),
            "sha256": file_sha256(base),
            "total_timesteps": base_meta.get("total_timesteps"),
        },
        "finetune": {"slices": slices.describe(), **(extra_meta or {})},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        save_policy_file(Path(tmp), model.policy, meta)
        tuned_g, base_g = train_goodput(train, Path(tmp)), train_goodput(train, base)
        kept = "fine-tuned" if tuned_g >= base_g else "base"
        meta["finetune"]["validation"] = {
            "on": "the training slices",
            "seeds": list(VALIDATION_SEEDS),
            "goodput_rps": {"fine-tuned": round(tuned_g, 4), "base": round(base_g, 4)},
        }
        meta["finetune"]["kept"] = kept
        if kept == "base":  # the fine-tune did not help on the traffic it saw
            copy_policy_file(base, Path(tmp), meta)
        else:
            save_policy_file(Path(tmp), model.policy, meta)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return meta
