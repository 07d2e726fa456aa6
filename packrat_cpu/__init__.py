"""Packrat CPU planner: pick <instances, threads, batch> that minimise batch latency on CPU."""

from tsadapt.packrat_cpu.estimator import EstimatorConfig, EstimatorState, decide, observe
from tsadapt.packrat_cpu.planner import (
    Baseline,
    Instance,
    Plan,
    PlanError,
    baseline,
    plan,
    plan_uniform,
)
from tsadapt.packrat_cpu.profile_table import (
    ProfileTable,
    load_profile,
    parse_profile,
    save_profile,
)

__all__ = [
    "Baseline",
    "EstimatorConfig",
    "EstimatorState",
    "Instance",
    "Plan",
    "PlanError",
    "ProfileTable",
    "baseline",
    "decide",
    "load_profile",
    "observe",
    "parse_profile",
    "plan",
    "plan_uniform",
    "save_profile",
]
