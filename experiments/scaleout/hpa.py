"""The Kubernetes HorizontalPodAutoscaler's algorithm (``autoscaling/v2``), for simulation.

Follows the controller (``pkg/controller/podautoscaler``: ``replica_calculator.go`` and
``horizontal.go``) for the metric kinds used here, External metrics:

* target ``Value``: ``ratio = value / target``; inside the tolerance (10 %) the replicas stay,
  else ``desired = ceil(ratio x ready pods)`` (``getUsageRatioReplicaCount``);
* target ``AverageValue`` (KEDA's default for a Prometheus trigger):
  ``ratio = sum / (target x current replicas)``; inside the tolerance they stay, else
  ``desired = ceil(sum / target)`` (``GetExternalPerPodMetricReplicas``).

Then ``normalizeDesiredReplicasWithBehaviors``: stabilization (the recommendation is the
*lowest* of the last ``scale_up_window_s`` and the *highest* of the last
``scale_down_window_s``, each including this one), rate limits from the scaling policies
(``Pods``/``Percent`` per period, ``selectPolicy`` Max or Min, counted against the
replicas at the start of each period from the scale events), and min/max replicas. The
defaults are the documented ones: scale-up no window, max(+4 pods, +100 %) per 15 s;
scale-down a 300 s window, -100 % per 15 s. The controller runs every ``sync_period_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

TOLERANCE = 0.1
SYNC_PERIOD_S = 15.0


@dataclass(frozen=True)
class ScalingPolicy:
    kind: Literal["Pods", "Percent"]
    value: int
    period_s: float


@dataclass(frozen=True)
class ScalingRules:
    stabilization_window_s: float
    policies: tuple[ScalingPolicy, ...]
    select: Literal["Max", "Min", "Disabled"] = "Max"


DEFAULT_SCALE_UP = ScalingRules(
    0.0, (ScalingPolicy("Pods", 4, 15.0), ScalingPolicy("Percent", 100, 15.0))
)
DEFAULT_SCALE_DOWN = ScalingRules(300.0, (ScalingPolicy("Percent", 100, 15.0),))


@dataclass(frozen=True)
class HPASpec:
    min_replicas: int
    max_replicas: int
    target: float
    target_type: Literal["Value", "AverageValue"] = "AverageValue"
    tolerance: float = TOLERANCE
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN
    sync_period_s: float = SYNC_PERIOD_S

    def __post_init__(self) -> None:
        if not (1 <= self.min_replicas <= self.max_replicas):
            raise ValueError("need 1 <= min_replicas <= max_replicas")
        if not self.target > 0:
            raise ValueError("target must be > 0")


def replicas_for_value(current: int, ready: int, value: float, spec: HPASpec) -> int:
    """The raw proposal for an External metric with a ``Value`` target."""
    ratio = value / spec.target
    if current == 0:
        return math.ceil(ratio)
    if abs(1.0 - ratio) <= spec.tolerance:
        return current
    return math.ceil(ratio * ready)


def replicas_for_average(current: int, total: float, spec: HPASpec) -> int:
    """The raw proposal for an External metric with an ``AverageValue`` target (``total``
    is the metric's value, e.g. a ``sum()`` over the pods)."""
    if current == 0:
        return math.ceil(total / spec.target)
    ratio = total / (spec.target * current)
    if abs(1.0 - ratio) <= spec.tolerance:
        return current
    return math.ceil(total / spec.target)


def raw_proposal(current: int, ready: int, value: float, spec: HPASpec) -> int:
    if spec.target_type == "Value":
        return replicas_for_value(current, ready, value, spec)
    return replicas_for_average(current, value, spec)


@dataclass
class HPA:
    """One HorizontalPodAutoscaler: call :meth:`sync` every ``spec.sync_period_s``."""

    spec: HPASpec
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    events: list[tuple[float, int]] = field(default_factory=list)  # (time, signed change)

    def stabilize(self, now: float, current: int, proposal: int) -> int:
        up_cut = now - self.spec.scale_up.stabilization_window_s
        down_cut = now - self.spec.scale_down.stabilization_window_s
        up = down = proposal
        for t, r in self.recommendations:
            if t > up_cut:
                up = min(up, r)
            if t > down_cut:
                down = max(down, r)
        keep = max(self.spec.scale_up.stabilization_window_s,
                   self.spec.scale_down.stabilization_window_s)  # fmt: skip
        self.recommendations = [(t, r) for t, r in self.recommendations if t > now - keep]
        self.recommendations.append((now, proposal))
        out = current
        if out < up:
            out = up
        if out > down:
            out = down
        return out

    def _changed_in(self, now: float, period_s: float, sign: int) -> int:
        return sum(abs(c) for t, c in self.events if t > now - period_s and c * sign > 0)

    def _limit(self, now: float, current: int, rules: ScalingRules, up: bool) -> int:
        """``calculateScaleUpLimitWithScalingRules`` / ``...ScaleDownLimit...``: each policy
        counts from the replicas at the start of its period (scale events undone)."""
        if rules.select == "Disabled":
            return current
        limits = []
        for p in rules.policies:
            added = self._changed_in(now, p.period_s, 1)
            deleted = self._changed_in(now, p.period_s, -1)
            start = current - added + deleted
            if p.kind == "Pods":
                limits.append(start + p.value if up else start - p.value)
            elif up:
                limits.append(math.ceil(start * (1 + p.value / 100.0)))
            else:
                limits.append(int(start * (1 - p.value / 100.0)))
        # "Max" picks the policy that allows the largest change
        if up:
            return max(limits) if rules.select == "Max" else min(limits)
        return min(limits) if rules.select == "Max" else max(limits)

    def normalize(self, now: float, current: int, proposal: int) -> int:
        """Stabilization, then the policies' rate limits, then min/max replicas."""
        s = self.spec
        desired = self.stabilize(now, current, proposal)
        if desired > current:
            desired = min(desired, self._limit(now, current, s.scale_up, True))
        elif desired < current:
            desired = max(desired, self._limit(now, current, s.scale_down, False))
        return max(s.min_replicas, min(s.max_replicas, desired))

    def sync(self, now: float, current: int, ready: int, value: float | None) -> int:
        """One reconcile: the replicas to set. ``value`` None (no metric): no change."""
        if value is None or not math.isfinite(value):
            return current
        desired = self.normalize(now, current, raw_proposal(current, ready, value, self.spec))
        if desired != current:
            self.events.append((now, desired - current))
            keep = max(p.period_s for r in (self.spec.scale_up, self.spec.scale_down)
                       for p in r.policies)  # fmt: skip
            self.events = [(t, c) for t, c in self.events if t > now - keep]
        return desired
