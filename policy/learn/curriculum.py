"""Genet-style curriculum (Xia et al., SIGCOMM'22): train more where the policy trails.

A *region* of the training distribution is one workload kind of ``randomise.kinds`` (every
model of a general draw gets that kind) or the shared-budget family (:data:`SHARED`). Every
``curriculum.every_steps`` steps, :class:`CurriculumCallback` writes the current policy to a
file, runs it and the rules (``curriculum.rules``) behind the guards on
``curriculum.per_region`` scenarios sampled from each region, and measures each region's
*gap*: the mean, over its scenarios, of how far the policy's goodput trails the best rule's,
relative to the best rule's (0 where the policy matches or beats it). :func:`region_weights`
turns the gaps into drawing probabilities (``explore`` of the mass spread evenly, the rest in
proportion to the gaps) and :func:`weighted_randomise` into the ``randomise`` ranges every
training environment draws from next (``kind_weights`` and ``shared_budget_prob``).

The curriculum's scenarios come from generators seeded ``[config.seed, CURRICULUM_TAG,
round]`` (a ``SeedSequence`` of three words), a stream no single-integer seed of training,
selection or ``tsadapt evaluate --random`` shares.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.policy.learn.scenario_gen import random_scenario, shared_budget_scenario
from tsadapt.policy.learn.train_config import RandomiseConfig, TrainConfig
from tsadapt.policy.sim.scenario import Scenario

#: The shared-budget family's region name (never a workload kind).
SHARED = "shared"
#: Second word of the curriculum generators' seed (see the module docstring).
CURRICULUM_TAG = 0x6E6574


def regions(cfg: RandomiseConfig) -> tuple[str, ...]:
    """The regions of ``cfg``: its workload kinds, then :data:`SHARED`."""
    return (*cfg.kinds, SHARED)


def region_weights(gaps: Mapping[str, float], explore: float) -> dict[str, float]:
    """Drawing probability per region: ``explore`` spread evenly, ``1 - explore`` in
    proportion to each region's gap (clipped at 0); all even when no region trails."""
    if not gaps:
        raise ValueError("region_weights: no regions")
    if not 0 < explore <= 1:
        raise ValueError(f"region_weights: explore must be in (0, 1], got {explore}")
    clipped = {r: max(0.0, float(g)) if np.isfinite(g) else 0.0 for r, g in gaps.items()}
    total, n = sum(clipped.values()), len(clipped)
    if total <= 0:
        return {r: 1.0 / n for r in clipped}
    return {r: explore / n + (1 - explore) * g / total for r, g in clipped.items()}


def weighted_randomise(cfg: RandomiseConfig, weights: Mapping[str, float]) -> RandomiseConfig:
    """``cfg`` drawing each kind with its region's weight, and the shared-budget family with
    probability ``weights[SHARED]``."""
    kinds = [max(0.0, weights.get(k, 0.0)) for k in cfg.kinds]
    general = sum(kinds)
    shared = min(1.0, max(0.0, weights.get(SHARED, 0.0)))
    if general <= 0:
        kinds, shared = [1.0] * len(cfg.kinds), min(shared, 1.0)
    return replace(cfg, kind_weights=tuple(kinds), shared_budget_prob=shared)


def region_scenario(
    rng: np.random.Generator, cfg: RandomiseConfig, region: str, duration_s: float, name: str
) -> Scenario:
    """One scenario of ``region`` (every model's workload of that kind, or the shared
    family)."""
    if region == SHARED:
        return shared_budget_scenario(rng, cfg, duration_s, name)
    if region not in cfg.kinds:
        raise ValueError(f"curriculum: unknown region {region!r}")
    one = replace(cfg, kinds=(region,), kind_weights=(), shared_budget_prob=0.0)
    return random_scenario(rng, one, duration_s, name)


def scenario_gap(policy_goodput: float, rule_goodputs: Sequence[float]) -> float:
    """How far the policy trails the best rule, relative to it (0 when it does not)."""
    best = max(rule_goodputs)
    if best <= 0:
        return 0.0
    return max(0.0, (best - policy_goodput) / best)


Runner = Callable[[Scenario, str], float]


def region_gaps(
    config: TrainConfig, round_: int, run: Runner, policy: str = "ppo"
) -> dict[str, float]:
    """Each region's mean :func:`scenario_gap` over ``curriculum.per_region`` scenarios;
    ``run(scenario, policy_name)`` is the goodput of one run."""
    c = config.curriculum
    rng = np.random.default_rng([config.seed, CURRICULUM_TAG, round_])
    out = {}
    for region in regions(config.randomise):
        gaps = []
        for k in range(c.per_region):
            sc = region_scenario(rng, config.randomise, region, c.horizon_s, f"cur-{region}-{k}")
            gaps.append(scenario_gap(run(sc, policy), [run(sc, r) for r in c.rules]))
        out[region] = float(np.mean(gaps))
    return out


def simulated_goodput(policy_file: Path | None) -> Runner:
    """A :data:`Runner` over the simulator; ``ppo`` reads ``policy_file``."""
    from tsadapt.policy.sim.control import run_named

    def run(sc: Scenario, name: str) -> float:
        pf = policy_file if name == "ppo" else None
        return float(run_named(sc, name, sc.seed, pf).overall.goodput_rps)

    return run


@dataclass
class CurriculumLog:
    """What the curriculum measured and set at each round (for the policy's metadata)."""

    rounds: list[dict[str, Any]]

    def as_list(self) -> list[dict[str, Any]]:
        return list(self.rounds)


def curriculum_callback(config: TrainConfig, log: CurriculumLog) -> Any:  # noqa: ANN401
    """An SB3 callback re-weighting every training environment's regions every
    ``curriculum.every_steps`` steps (see the module docstring)."""
    from stable_baselines3.common.callbacks import BaseCallback

    from tsadapt.policy.ppo_policy import save_policy_file

    c = config.curriculum

    class _Curriculum(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_at = c.every_steps

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            if self.num_timesteps < self.next_at:
                return
            self.next_at += c.every_steps
            round_ = len(log.rounds)
            with tempfile.TemporaryDirectory(prefix="tsadapt-curriculum-") as tmp:
                meta = {
                    "net_arch": list(config.ppo.net_arch),
                    "delay_step_ms": int(config.env.delay_step_ms),
                    "action_design": config.env.action_design,
                }
                path = save_policy_file(Path(tmp) / "current.zip", self.model.policy, meta)
                gaps = region_gaps(config, round_, simulated_goodput(path))
            weights = region_weights(gaps, c.explore)
            randomise = weighted_randomise(config.randomise, weights)
            self.training_env.env_method("set_randomise", randomise)
            log.rounds.append(
                {
                    "timesteps": int(self.num_timesteps),
                    "gaps": {r: round(g, 4) for r, g in gaps.items()},
                    "weights": {r: round(w, 4) for r, w in weights.items()},
                }
            )

    return _Curriculum()
