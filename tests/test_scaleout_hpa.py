"""The simulated HPA reproduces the worked examples of the Kubernetes documentation
("Horizontal Pod Autoscaling": algorithm details, stabilization window, scaling policies)."""

from __future__ import annotations

import pytest

from tsadapt.experiments.scaleout.hpa import (
    HPA,
    HPASpec,
    ScalingPolicy,
    ScalingRules,
    raw_proposal,
)


def spec(**kw) -> HPASpec:
    base = dict(min_replicas=1, max_replicas=1000, target=0.1, target_type="Value")
    return HPASpec(**{**base, **kw})


@pytest.mark.parametrize(
    ("current", "value", "want"),
    [
        (1, 0.200, 2),  # 200m against 100m: double
        (4, 0.200, 8),
        (4, 0.050, 2),  # 50m: halve
        (10, 0.109, 10),  # ratio 1.09: inside the 10 % tolerance, no change
        (10, 0.091, 10),  # 0.91: inside
        (10, 0.111, 12),  # 1.11: outside, ceil(11.1)
        (10, 0.089, 9),  # 0.89: outside, ceil(8.9)
    ],
)
def test_algorithm_details(current: int, value: float, want: int) -> None:
    """desiredReplicas = ceil[currentReplicas * (currentMetricValue / desiredMetricValue)]."""
    assert raw_proposal(current, current, value, spec()) == want


def test_value_target_scales_ready_pods_only() -> None:
    assert raw_proposal(10, 6, 0.2, spec()) == 12  # ceil(2.0 x 6 ready)


@pytest.mark.parametrize(
    ("current", "total", "want"), [(3, 9.0, 9), (3, 3.2, 3), (3, 3.4, 4), (5, 0.5, 1)]
)
def test_average_value_target(current: int, total: float, want: int) -> None:
    s = spec(target=1.0, target_type="AverageValue")
    assert raw_proposal(current, current, total, s) == want


def test_scale_down_stabilization_keeps_the_highest_recent_recommendation() -> None:
    """Default: 300 s; the highest recommendation of the window wins, so a dip is ignored."""
    hpa = HPA(spec(target=1.0, target_type="AverageValue"))
    n = hpa.sync(0.0, 10, 10, 10.0)
    assert n == 10
    for t in range(15, 300, 15):
        n = hpa.sync(float(t), n, n, 2.0)  # wants 2 from here on
        assert n == 10, t
    assert hpa.sync(300.0, n, n, 2.0) == 2  # the 10 at t=0 has left the window


def test_scale_up_stabilization_keeps_the_lowest_recent_recommendation() -> None:
    up = ScalingRules(60.0, (ScalingPolicy("Percent", 100, 15.0),))
    hpa = HPA(spec(target=1.0, target_type="AverageValue", scale_up=up))
    assert hpa.sync(0.0, 2, 2, 2.0) == 2
    assert hpa.sync(15.0, 2, 2, 8.0) == 2  # the 2 at t=0 is still in the window
    assert hpa.sync(30.0, 2, 2, 8.0) == 2
    assert hpa.sync(60.0, 2, 2, 8.0) == 4  # window now [8, 8, 8]: +100 % per 15 s
    assert hpa.sync(75.0, 4, 4, 8.0) == 8


def test_default_scale_up_is_the_larger_of_four_pods_and_double() -> None:
    hpa = HPA(spec(target=1.0, target_type="AverageValue"))
    assert hpa.sync(0.0, 1, 1, 100.0) == 5  # max(1 + 4, 2)
    assert hpa.sync(15.0, 5, 5, 100.0) == 10  # max(5 + 4, 10)
    assert hpa.sync(30.0, 10, 10, 100.0) == 20


def test_scale_down_policies_example() -> None:
    """Docs: Pods 4 / 60 s and Percent 10 / 60 s, from 80 replicas towards 10: 8 removed,
    then at 72 "10 % is 7.2, rounded up to 8"; below 40 the Pods policy removes 4."""
    down = ScalingRules(0.0, (ScalingPolicy("Pods", 4, 60.0), ScalingPolicy("Percent", 10, 60.0)))
    hpa = HPA(spec(target=1.0, target_type="AverageValue", scale_down=down))
    n, seen = 80, []
    for k in range(16):
        n = hpa.sync(60.0 * k, n, n, 10.0)
        seen.append(n)
    # 10 % (truncated replicas, i.e. removals rounded up) while above 40, then 4 at a time
    assert seen == [72, 64, 57, 51, 45, 40, 36, 32, 28, 24, 20, 16, 12, 10, 10, 10]


def test_rate_limit_counts_changes_within_the_period() -> None:
    down = ScalingRules(0.0, (ScalingPolicy("Pods", 4, 60.0),))
    hpa = HPA(spec(target=1.0, target_type="AverageValue", scale_down=down))
    assert hpa.sync(0.0, 20, 20, 1.0) == 16
    assert hpa.sync(15.0, 16, 16, 1.0) == 16  # 4 already removed in this 60 s period
    assert hpa.sync(60.0, 16, 16, 1.0) == 12


def test_disabled_scale_down_and_bounds() -> None:
    off = ScalingRules(0.0, (ScalingPolicy("Percent", 100, 15.0),), select="Disabled")
    hpa = HPA(spec(target=1.0, target_type="AverageValue", scale_down=off, max_replicas=6))
    assert hpa.sync(0.0, 5, 5, 1.0) == 5
    assert hpa.sync(15.0, 5, 5, 100.0) == 6
    assert hpa.sync(30.0, 6, 6, None) == 6  # no metric: no change


def test_spec_checks() -> None:
    with pytest.raises(ValueError, match="min_replicas"):
        HPASpec(min_replicas=3, max_replicas=2, target=1.0)
    with pytest.raises(ValueError, match="target"):
        HPASpec(min_replicas=1, max_replicas=2, target=0.0)
