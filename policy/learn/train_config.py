"""Typed training configuration (``configs/train.yaml``): env, reward weights, randomisation, PPO.

Every field has a default; the YAML overrides any subset. Unknown keys are errors that name
the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from tsadapt.constants import REPO_DIR
from tsadapt.policy.defaults import TUNING_SEEDS
from tsadapt.policy.learn.reward import RewardWeights
from tsadapt.policy.supervisor import ACTION_DESIGNS

DEFAULT_TRAIN_CONFIG = REPO_DIR / "configs" / "train.yaml"
BACKGROUND_POLICIES = ("static", "aimd", "queue")


@dataclass(frozen=True)
class EnvConfig:
    """The Gym environment: control timing, episode length, the other models' controller."""

    tick_s: float = 1.0
    window_s: float = 5.0
    cooldown_s: float = 3.0
    episode_ticks: int = 120
    delay_step_ms: int = 10
    max_delay_ms: int = 50
    #: Policies that drive the models not in focus (one drawn per episode).
    background: tuple[str, ...] = ("queue", "aimd", "static")
    #: Scenario files mixed into the randomised ones with this probability (0 = none).
    scenario_files: tuple[str, ...] = ()
    scenario_file_prob: float = 0.0
    #: ``direct`` (the network sets batch, delay, workers), ``supervisor`` (it picks a fast
    #: rule and a worker bias each tick) or ``residual`` (a rule plus a learned offset):
    #: :mod:`tsadapt.policy.supervisor`.
    action_design: str = "direct"

    def __post_init__(self) -> None:
        if self.action_design not in ACTION_DESIGNS:
            raise ValueError(
                f"env.action_design must be one of {', '.join(ACTION_DESIGNS)}, "
                f"got {self.action_design!r}"
            )
        if self.episode_ticks < 2:
            raise ValueError("env.episode_ticks must be >= 2")
        if self.delay_step_ms < 1:
            raise ValueError("env.delay_step_ms must be >= 1")
        bad = [b for b in self.background if b not in BACKGROUND_POLICIES]
        if bad or not self.background:
            raise ValueError(f"env.background: choose from {BACKGROUND_POLICIES}, got {bad}")
        if not 0 <= self.scenario_file_prob <= 1:
            raise ValueError("env.scenario_file_prob must be in [0, 1]")
        if self.scenario_file_prob > 0 and not self.scenario_files:
            raise ValueError("env.scenario_file_prob > 0 needs env.scenario_files")


@dataclass(frozen=True)
class RandomiseConfig:
    """Ranges of the randomised training scenarios (uniform, or log-uniform for ``*_log``)."""

    models: tuple[int, int] = (1, 3)
    cores: tuple[int, int] = (2, 4)
    alpha_ms_log: tuple[float, float] = (0.05, 10.0)
    beta_ms_log: tuple[float, float] = (0.5, 30.0)
    #: SLO = this factor x latency(slo_ref_batch) (at least ``min_slo_ms``).
    slo_factor: tuple[float, float] = (2.0, 8.0)
    slo_ref_batch: tuple[int, int] = (1, 16)
    min_slo_ms: float = 20.0
    max_batch: tuple[int, ...] = (16, 32, 64)
    max_workers: tuple[int, int] = (2, 4)
    #: Mean load as a fraction of the model's capacity (its fair share of cores).
    load: tuple[float, float] = (0.1, 0.8)
    burst_factor: tuple[float, float] = (2.0, 5.0)
    max_rate_rps: float = 250.0
    load_delay_s: tuple[float, float] = (0.5, 2.0)
    exec_cv: tuple[float, float] = (0.0, 0.2)
    kinds: tuple[str, ...] = ("poisson", "bursty", "diurnal", "step", "gamma")
    #: Relative probability of each of ``kinds`` (empty: uniform); the curriculum
    #: (:mod:`policy.learn.curriculum`) sets them during training.
    kind_weights: tuple[float, ...] = ()
    #: ``gamma``: the inter-arrival CV.
    gamma_cv: tuple[float, float] = (1.0, 3.0)
    #: ``onoff``: a two-state MMPP: bursts (short random ``on`` periods of mean
    #: ``onoff_mean_on_s``) for this share of the time, near silence (``onoff_off_share`` of
    #: the mean rate) in between; the ``on`` rate is capped at ``max_burst_rps``.
    onoff_on_share: tuple[float, float] = (0.05, 0.3)
    onoff_mean_on_s: tuple[float, float] = (0.2, 3.0)
    onoff_off_share: tuple[float, float] = (0.0, 0.1)
    max_burst_rps: float = 1000.0
    #: ``swing``: a two-state MMPP between a low and a high rate ``swing_ratio`` apart, each
    #: held for a random time of mean ``swing_hold_s`` (minute-scale swings).
    swing_ratio: tuple[float, float] = (3.0, 12.0)
    swing_hold_s: tuple[float, float] = (15.0, 60.0)
    #: Latency outside the worker: with this probability a model gets one calibrated
    #: model's ``overhead_quantiles_ms`` (from ``overhead_calibration``, relative to the repo)
    #: scaled by a log-uniform factor from ``overhead_scale_log``, its p99 held to
    #: ``overhead_max_slo_share`` of the SLO.
    overhead_prob: float = 0.0
    overhead_calibration: str = "docs/results/fidelity-calibration.json"
    overhead_scale_log: tuple[float, float] = (0.5, 8.0)
    overhead_max_slo_share: float = 0.3
    #: Probability of a multi-tenant draw instead (peaks take turns for one spare worker;
    #: see :func:`scenario_gen.shared_budget_scenario`).
    shared_budget_prob: float = 0.0
    #: The machine's speed against the profiles' (log-uniform; ``DeviceSpec.cpu_scale``):
    #: every CPU cost this many times the profile's, while the controller's limits still come
    #: from the profile, as on a real box slower or faster than on the day it was profiled.
    #: Drawn last, so a scenario's other draws are the same with or without it.
    cpu_scale_log: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        for name in ("shared_budget_prob", "overhead_prob", "overhead_max_slo_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"randomise.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("gamma_cv", "onoff_on_share", "onoff_mean_on_s", "swing_ratio",
                     "swing_hold_s", "overhead_scale_log", "cpu_scale_log"):  # fmt: skip
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"randomise.{name} must be [low, high] with 0 < low <= high")
        w = self.kind_weights
        if w and (len(w) != len(self.kinds) or min(w) < 0 or sum(w) <= 0):
            raise ValueError("randomise.kind_weights: one weight >= 0 per kind, not all 0")
        lo, hi = self.onoff_off_share
        if not (0 <= lo <= hi < 1 and self.onoff_on_share[1] < 1):
            raise ValueError("randomise.onoff_off_share / onoff_on_share must be in [0, 1)")


@dataclass(frozen=True)
class PPOConfig:
    """Stable-Baselines3 PPO hyper-parameters."""

    learning_rate: float = 3e-4
    n_steps: int = 1024
    batch_size: int = 256
    n_epochs: int = 5
    gamma: float = 0.95
    gae_lambda: float = 0.9
    clip_range: float = 0.2
    ent_coef: float = 0.01
    net_arch: tuple[int, ...] = (64, 64)
    n_envs: int = 4


@dataclass(frozen=True)
class SelectConfig:
    """Seed selection (:mod:`policy.selection`): train ``candidates`` PPO seeds (``seed``,
    ``seed + 1``, ...) and keep the one that does best on validation runs."""

    #: PPO seeds to train; 1 = train ``seed`` alone and skip validation.
    candidates: int = 1
    #: Validation scenarios (absolute, or relative to the working directory or the repo).
    scenario_files: tuple[str, ...] = ()
    #: Simulation seeds of the validation runs: best-static's tuning seeds by default.
    seeds: tuple[int, ...] = TUNING_SEEDS
    #: Candidates trained at once (one process each); 0 = one per CPU.
    processes: int = 0
    #: Random validation scenarios (``policy/learn/scenario_sets.py``) every candidate is
    #: also scored on, one run each; recorded next to the ranking, which they do not change.
    random_scenarios: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.candidates, int) and self.candidates >= 1):
            raise ValueError(f"select.candidates must be an integer >= 1, got {self.candidates!r}")
        if not (
            isinstance(self.scenario_files, tuple)
            and all(isinstance(f, str) for f in self.scenario_files)
        ):
            raise ValueError(
                f"select.scenario_files must be a list of paths, got {self.scenario_files!r}"
            )
        if self.candidates > 1 and not self.scenario_files:
            raise ValueError("select.candidates > 1 needs select.scenario_files to validate on")
        seeds_ok = isinstance(self.seeds, tuple) and bool(self.seeds)
        if not seeds_ok or not all(isinstance(s, int) and s >= 0 for s in self.seeds):
            raise ValueError(f"select.seeds must be integers >= 0, got {self.seeds!r}")
        if not (isinstance(self.processes, int) and self.processes >= 0):
            raise ValueError(f"select.processes must be an integer >= 0, got {self.processes!r}")
        if not (isinstance(self.random_scenarios, int) and self.random_scenarios >= 0):
            raise ValueError(
                f"select.random_scenarios must be an integer >= 0, got {self.random_scenarios!r}"
            )


@dataclass(frozen=True)
class CurriculumConfig:
    """Genet-style curriculum (:mod:`policy.learn.curriculum`): every ``every_steps`` steps
    the current policy and the rules run ``per_region`` sampled scenarios of each region (a
    workload kind, or the shared-budget family) and the regions where the policy trails the
    best rule most are drawn more often. ``every_steps`` 0: off (fixed ``randomise``)."""

    every_steps: int = 0
    per_region: int = 3
    horizon_s: float = 60.0
    #: Share of the probability spread evenly over the regions (the rest follows the gaps).
    explore: float = 0.3
    rules: tuple[str, ...] = ("aimd", "queue")

    def __post_init__(self) -> None:
        if not (isinstance(self.every_steps, int) and self.every_steps >= 0):
            raise ValueError(f"curriculum.every_steps must be an int >= 0, got {self.every_steps}")
        if not (isinstance(self.per_region, int) and self.per_region >= 1):
            raise ValueError(f"curriculum.per_region must be an int >= 1, got {self.per_region}")
        if not self.horizon_s > 0:
            raise ValueError(f"curriculum.horizon_s must be > 0, got {self.horizon_s}")
        if not 0 < self.explore <= 1:
            raise ValueError(f"curriculum.explore must be in (0, 1], got {self.explore}")
        bad = [r for r in self.rules if r not in ("static", "aimd", "queue")]
        if bad or not self.rules:
            raise ValueError(f"curriculum.rules: choose from static, aimd, queue; got {bad}")


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    total_timesteps: int = 200_000
    env: EnvConfig = field(default_factory=EnvConfig)
    reward: RewardWeights = field(default_factory=RewardWeights)
    randomise: RandomiseConfig = field(default_factory=RandomiseConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"{path or 'train config'}: must be a mapping, got {data!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(
            f"{path + '.' if path else ''}{unknown[0]}: unknown field; "
            f"known: {', '.join(sorted(known))}"
        )
    nested = {
        "env": EnvConfig,
        "reward": RewardWeights,
        "randomise": RandomiseConfig,
        "ppo": PPOConfig,
        "select": SelectConfig,
        "curriculum": CurriculumConfig,
    }
    kwargs = {}
    for k, v in data.items():
        if cls is TrainConfig and k in nested:
            kwargs[k] = _build(nested[k], v or {}, k)
        else:
            kwargs[k] = tuple(v) if isinstance(v, list) else v
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path or 'train config'}: {exc}") from None


def train_config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    return _build(TrainConfig, data, "")


def load_train_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Read ``path`` (default ``configs/train.yaml``); non-None ``overrides`` replace fields."""
    p = Path(path) if path is not None else DEFAULT_TRAIN_CONFIG
    data = yaml.safe_load(p.read_text()) or {} if p.exists() else {}
    if path is not None and not p.exists():
        raise ValueError(f"{p}: no such train config")
    data = dict(data)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return train_config_from_dict(data)
