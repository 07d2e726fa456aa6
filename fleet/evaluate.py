"""The scale sweep: every policy on every sweep point, and the hindsight bound."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tsadapt.fleet.baselines import HoldStart, SidecarRules, StaticDedicated, gpu_lower_bound
from tsadapt.fleet.catalog import MIXES, Catalogue, build_catalogue
from tsadapt.fleet.constants import (
    NEXUS_HEADROOM,
    NEXUS_HEADROOMS,
    NEXUS_TUNING_SEED0,
    SLOTS_PER_GPU,
)
from tsadapt.fleet.nexus import NexusPolicy
from tsadapt.fleet.ppo import FleetPPOPolicy, picks_of, policy_path
from tsadapt.fleet.run import FleetResult, mean_of, run_fleet

#: The scale sweep: every (GPUs, models) of these, both mixes; horizon (s) by fleet size
#: (the 128-GPU fleets run a shorter one: they simulate ~10k requests per second).
SWEEP_GPUS, SWEEP_MODELS = (8, 32, 128), (10, 50, 200)
SWEEP: tuple[tuple[int, int, float], ...] = tuple(
    (g, m, 300.0 if g >= 128 else 600.0) for g in SWEEP_GPUS for m in SWEEP_MODELS
)
POLICIES = ("static", "hold", "sidecar", "nexus", "ppo")
#: The SLO attainment the criterion asks for, and the key of the tuned Nexus's runs (its
#: headroom chosen on the tuning seeds, see :func:`tune_nexus`).
TARGET, NEXUS_99 = 0.99, "nexus-99"
#: Where ``tsadapt lab fleet train`` writes and ``evaluate`` looks for policies.
TRAINED_DIR = Path(__file__).resolve().parent / "trained"


@dataclass(frozen=True)
class PointResult:
    """One sweep point: the catalogue, each policy's runs (one per seed), the bound per
    tick; ``infeasible`` says why nothing ran (the fleet cannot hold the models at all)."""

    cat: Catalogue
    runs: dict[str, list[FleetResult]]
    bound: np.ndarray
    missing: dict[str, str]
    #: the trained policy's metadata (``.json`` beside it), when PPO ran
    ppo_meta: dict | None = None
    infeasible: str | None = None
    #: Nexus on the tuning seeds, one :class:`Tuning` per headroom tried (see :func:`tune_nexus`)
    tuning: tuple[Tuning, ...] = ()
    tuning_seeds: tuple[int, ...] = ()
    #: PPO's picks per tick in these runs (None: PPO did not run)
    ppo_picks: int | None = None


@dataclass(frozen=True)
class Tuning:
    """Nexus at one headroom, means over the tuning seeds; ``chosen``: the setting
    the sweep evaluates; ``reason``: ``"99 %"`` (cheapest at the target) or ``"goodput"``
    (none reached it: the most goodput)."""

    headroom: float
    mean_gpus: float
    attainment: float
    goodput_rps: float
    chosen: bool = False
    reason: str = ""

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def make(name: str, cat: Catalogue, trained: Path, picks: int | None = None):
    """Policy ``name`` for ``cat``; ``picks``: PPO's picks per tick (default: as trained)."""
    if name == "static":
        return StaticDedicated(cat)
    if name == "hold":
        return HoldStart(cat)
    if name == "sidecar":
        return SidecarRules(cat)
    if name == "nexus":
        return NexusPolicy(cat)
    if name == "ppo":
        return FleetPPOPolicy(policy_path(trained), cat, picks)
    raise ValueError(f"policy: unknown {name!r}; known: {', '.join(POLICIES)}")


def nexus_runs(cat: Catalogue, headroom: float, seeds) -> list[FleetResult]:
    """Nexus at ``headroom`` on each arrival seed (runs named ``nexus xH``)."""
    runs = []
    for seed in seeds:
        policy = NexusPolicy(cat, headroom=headroom)
        policy.name = f"nexus x{headroom:g}"
        runs.append(run_fleet(cat, policy, seed))
    return runs


def choose(tried: list[Tuning]) -> tuple[Tuning, ...]:
    """Mark the setting to evaluate: the first (cheapest) that reaches :data:`TARGET`, else
    the one with the most goodput."""
    ok = [t for t in tried if t.attainment >= TARGET]
    pick, why = (ok[0], "99 %") if ok else (max(tried, key=lambda t: t.goodput_rps), "goodput")
    return tuple(replace(t, chosen=True, reason=why) if t is pick else t for t in tried)


def tuning_seeds(n: int) -> tuple[int, ...]:
    """The ``n`` arrival seeds Nexus is tuned on (none of the evaluated ``0..n-1``)."""
    return tuple(range(NEXUS_TUNING_SEED0, NEXUS_TUNING_SEED0 + n))


def tune_nexus(cat: Catalogue, seeds: Sequence[int]) -> tuple[Tuning, ...]:
    """Nexus's headroom for ``cat``, chosen on ``seeds`` (never the evaluated ones): try
    :data:`NEXUS_HEADROOMS` in order until one reaches :data:`TARGET` (see :func:`choose`)."""
    tried = []
    for h in NEXUS_HEADROOMS:
        runs = nexus_runs(cat, h, seeds)
        tried.append(
            Tuning(
                h, mean_of(runs, "mean_gpus"), mean_of(runs, "attainment"),
                mean_of(runs, "goodput_rps"),
            )
        )  # fmt: skip
        if tried[-1].attainment >= TARGET:
            break
    return choose(tried)


def infeasible(cat: Catalogue, bound: np.ndarray) -> str | None:
    """Why no policy can serve ``cat`` within its SLOs (None: the bound fits the fleet)."""
    if len(cat.models) > cat.gpus * SLOTS_PER_GPU:
        return (
            f"{len(cat.models)} models need a slot each; {cat.gpus} GPUs x {SLOTS_PER_GPU} "
            f"slots = {cat.gpus * SLOTS_PER_GPU}"
        )
    if bound.size and bound.max() > cat.gpus:
        return f"the hindsight bound needs {bound.max():.0f} GPUs at the peak, > {cat.gpus}"
    return None


def evaluate_point(
    gpus: int,
    models: int,
    mix: str,
    horizon_s: float,
    seeds: int = 1,
    trained: Path = TRAINED_DIR,
    policies: tuple[str, ...] = POLICIES,
    profiles: Path | None = None,
    picks: int | None = None,
) -> PointResult:
    """Run ``policies`` on one sweep point with arrival seeds ``0..seeds-1`` (a policy
    without a trained file is skipped; an infeasible point runs nothing). ``profiles``: build
    the catalogue from ``gpu-check``'s measured profiles instead of the published tables."""
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    cat = build_catalogue(gpus, models, mix, horizon_s, profiles=profiles)
    bound = gpu_lower_bound(cat)
    why = infeasible(cat, bound)
    if why is not None:
        return PointResult(cat, {}, bound, {}, None, why)
    runs: dict[str, list[FleetResult]] = {}
    missing = {n: "not requested (--policies)" for n in POLICIES if n not in policies}
    for name in policies:
        if name == "ppo" and not policy_path(trained).exists():
            missing[name] = f"no fleet policy at {policy_path(trained)}"
            continue
        runs[name] = []
        for seed in range(seeds):
            runs[name].append(run_fleet(cat, make(name, cat, trained, picks), seed))
    tuning: tuple[Tuning, ...] = ()
    if "nexus" in runs:
        tuning = tune_nexus(cat, tuning_seeds(seeds))
        h = next(t.headroom for t in tuning if t.chosen)
        if h == NEXUS_HEADROOM:  # the default's runs are those runs
            runs[NEXUS_99] = [replace(r, policy=f"nexus x{h:g}") for r in runs["nexus"]]
        else:
            runs[NEXUS_99] = nexus_runs(cat, h, range(seeds))
    meta = None
    if "ppo" in runs:
        meta_file = policy_path(trained).with_suffix(".json")
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else None
    return PointResult(
        cat, runs, bound, missing, meta, tuning=tuning,
        tuning_seeds=tuning_seeds(seeds) if tuning else (),
        ppo_picks=(picks or picks_of(policy_path(trained))) if "ppo" in runs else None,
    )  # fmt: skip
