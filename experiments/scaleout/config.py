"""What a scale-out evaluation runs: the pod template, the fleet's load, the autoscalers.

``experiments/scaleout/scaleout.yaml`` names pod scenarios (ordinary scenario files: the
pod's models, cores and worker budget; their workloads are the load of *one pod's worth*,
multiplied by each fleet ``scale``) and the Kubernetes settings of the setups. The fourth
setup, ``step-aware-sidecar``, is the third with the settings of the YAML's ``step_aware``
mapping (:class:`StepAware`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tsadapt.experiments.scaleout.hpa import DEFAULT_SCALE_UP, HPASpec, ScalingPolicy, ScalingRules
from tsadapt.policy.sim.scenario import Scenario, load_scenario

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "scaleout.yaml"


@dataclass(frozen=True)
class Setup:
    """One way to run the fleet."""

    name: str
    label: str
    metric: str  # "queue_latency" (Value target, prometheus-adapter) | "demand" (KEDA)
    sidecar: bool
    step_aware: bool = False  # the demand query and timings of ScaleOutConfig.step_aware


SETUPS = (
    Setup("hpa-static", "HPA on queue latency, static batching", "queue_latency", False),
    Setup("hpa-sidecar", "HPA on queue latency, sidecar in every pod", "queue_latency", True),
    Setup("shortfall-sidecar", "KEDA on the sidecar's capacity demand", "demand", True),
    Setup(
        "step-aware-sidecar",
        "KEDA on the sidecar's capacity demand and its trend, with headroom",
        "demand",
        True,
        step_aware=True,
    ),
)


@dataclass(frozen=True)
class StepAware:
    """Setup 4's KEDA ScaledObject: the query
    ``s + clamp_min(predict_linear(s[W:scrape], predict_s) - s, 0) + spare x target``
    with ``s = sum(tsadapt_controller_capacity_demand_ratio)`` (the trend only ever adds
    pods; ``spare = spare_pods_per_scale x scale`` pods' worth of demand are always asked
    for on top), a lower threshold (``demand_target``: each pod keeps in-pod headroom its
    sidecar uses in the first seconds of a step), and shorter intervals (ServiceMonitor
    ``interval``, KEDA ``pollingInterval``). The HPA's own sync period stays the cluster's 15 s."""

    demand_target: float = 0.7
    predict_s: float = 30.0
    trend_window_s: float = 60.0
    spare_pods_per_scale: float = 0.0
    scrape_s: float = 5.0
    keda_polling_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.demand_target > 0:
            raise ValueError("step_aware.demand_target must be > 0")
        for key in ("predict_s", "spare_pods_per_scale"):
            if getattr(self, key) < 0:
                raise ValueError(f"step_aware.{key} must be >= 0")
        for key in ("trend_window_s", "scrape_s", "keda_polling_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"step_aware.{key} must be > 0")


@dataclass(frozen=True)
class ScaleOutConfig:
    pod_scenarios: tuple[Path, ...]
    scales: tuple[int, ...]
    seeds: tuple[int, ...]
    tick_s: float = 1.0
    pod_startup_s: float = 45.0
    scrape_s: float = 15.0
    rate_window_s: float = 60.0
    keda_polling_s: float = 30.0
    queue_latency_target_ms: float = 10.0
    demand_target: float = 0.8
    initial_replicas_per_scale: float = 0.3
    max_replicas_per_scale: float = 2.0
    sidecar_policy: str = "queue"
    static_workers: Mapping[str, int] = field(default_factory=dict)
    scale_down_window_s: float = 300.0
    step_aware: StepAware = field(default_factory=StepAware)
    setups: tuple[Setup, ...] = SETUPS

    def scenarios(self) -> list[Scenario]:
        return [load_scenario(p) for p in self.pod_scenarios]

    def hpa_spec(self, setup: Setup, scale: int) -> HPASpec:
        down = ScalingRules(self.scale_down_window_s, (ScalingPolicy("Percent", 100, 15.0),))
        common = dict(
            min_replicas=1,
            max_replicas=max(1, math.ceil(self.max_replicas_per_scale * scale)),
            scale_up=DEFAULT_SCALE_UP,
            scale_down=down,
        )
        if setup.metric == "queue_latency":
            return HPASpec(target=self.queue_latency_target_ms, target_type="Value", **common)  # type: ignore[arg-type]
        target = self.step_aware.demand_target if setup.step_aware else self.demand_target
        return HPASpec(target=target, target_type="AverageValue", **common)  # type: ignore[arg-type]

    def intervals(self, setup: Setup) -> tuple[float, float]:
        """(Prometheus scrape, KEDA polling) of ``setup``, in s."""
        if setup.step_aware:
            return self.step_aware.scrape_s, self.step_aware.keda_polling_s
        return self.scrape_s, self.keda_polling_s

    def initial_replicas(self, scale: int) -> int:
        return max(1, round(self.initial_replicas_per_scale * scale))


_KEYS = {f for f in ScaleOutConfig.__dataclass_fields__ if f != "setups"}


def load_config(path: Path = DEFAULT_CONFIG) -> ScaleOutConfig:
    """Read ``path``; a missing or unknown key is a ``ValueError`` naming it."""
    path = Path(path)
    raw: Any = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping")
    extra = set(raw) - _KEYS
    if extra:
        raise ValueError(f"{path}: unknown key(s) {sorted(extra)}; known: {sorted(_KEYS)}")
    for key in ("pod_scenarios", "scales", "seeds"):
        if key not in raw:
            raise ValueError(f"{path}: missing {key}")
    kw = dict(raw)
    kw["pod_scenarios"] = tuple((path.parent / p).resolve() for p in raw["pod_scenarios"])
    kw["scales"] = tuple(int(s) for s in raw["scales"])
    kw["seeds"] = tuple(int(s) for s in raw["seeds"])
    kw["static_workers"] = dict(raw.get("static_workers", {}))
    step = raw.get("step_aware", {})
    if not isinstance(step, dict):
        raise ValueError(f"{path}: step_aware must be a mapping")
    unknown = set(step) - set(StepAware.__dataclass_fields__)
    if unknown:
        raise ValueError(f"{path}: unknown step_aware key(s) {sorted(unknown)}")
    kw["step_aware"] = StepAware(**{k: float(v) for k, v in step.items()})
    return ScaleOutConfig(**kw)
