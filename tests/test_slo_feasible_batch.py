"""The SLO-feasible batch bound the simulated sidecar puts on every policy's max_batch."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from tsadapt.policy.sim.control import (
    OUTSIDE_QUANTILE,
    SLO_BATCH_SHARE,
    controller_config_for,
    outside_latency_ms,
    scenario_config,
    slo_feasible_batch,
)
from tsadapt.policy.sim.scenario import ModelEntry, load_scenario
from tsadapt.policy.sim.specs import LatencyModel

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("latency", "slo_ms", "max_batch", "expected"),
    [
        (LatencyModel(alpha_ms=6, beta_ms=10), 200, 32, 15),  # 6*15+10 = 100 = SLO/2
        (LatencyModel(alpha_ms=6, beta_ms=10), 202, 32, 15),  # 6*16+10 = 106 > 101
        (LatencyModel(alpha_ms=3, beta_ms=8), 150, 32, 22),
        (LatencyModel(alpha_ms=0.1, beta_ms=1), 50, 64, 64),  # the configured cap binds
        (LatencyModel(alpha_ms=10, beta_ms=100), 50, 32, 1),  # nothing fits: still 1
        (LatencyModel(table=((1, 5.0), (4, 20.0), (8, 60.0))), 100, 32, 7),  # interpolated
    ],
)
def test_largest_batch_within_half_the_slo(
    latency: LatencyModel, slo_ms: float, max_batch: int, expected: int
) -> None:
    b = slo_feasible_batch(latency, slo_ms, max_batch)
    assert b == expected
    if b < max_batch:
        assert latency.batch_ms(b + 1) > SLO_BATCH_SHARE * slo_ms
    if b > 1:
        assert latency.batch_ms(b) <= SLO_BATCH_SHARE * slo_ms


def test_controller_config_bounds_max_batch_by_the_profile() -> None:
    sc = load_scenario(REPO / "configs" / "scenarios" / "bursty.yaml")
    cfg = controller_config_for(sc)
    for m in sc.models:
        lim = cfg.limits(m.name)
        assert lim.max_batch == slo_feasible_batch(m.latency, m.slo_ms, m.max_batch)
        assert 1 <= lim.max_batch <= m.max_batch
    # image (6b+10 ms, SLO 200 ms, max_batch 32) is the one the bound lowers.
    assert cfg.limits("image").max_batch == 15
    assert cfg.limits("tabular").max_batch == 64


@pytest.mark.parametrize(
    ("slo_ms", "outside_ms", "expected"),
    [
        (200, 0.0, 15),  # 6*15+10 = 100 = SLO/2
        (200, 12.0, 14),  # (200-12)/2 = 94: 6*14+10 = 94 fits, 6*15+10 = 100 does not
        (200, 13.0, 13),  # (200-13)/2 = 93.5: 94 no longer fits
        (200, 199.0, 1),  # nothing fits: still 1
    ],
)
def test_the_latency_outside_the_worker_comes_off_the_slo_first(
    slo_ms: float, outside_ms: float, expected: int
) -> None:
    latency = LatencyModel(alpha_ms=6, beta_ms=10)
    assert slo_feasible_batch(latency, slo_ms, 32, outside_ms) == expected


@pytest.mark.parametrize("outside_ms", [-1.0, float("nan"), float("inf")])
def test_outside_latency_must_be_a_finite_non_negative_time(outside_ms: float) -> None:
    with pytest.raises(ValueError, match="outside_ms"):
        slo_feasible_batch(LatencyModel(alpha_ms=6, beta_ms=10), 200, 32, outside_ms)


@pytest.mark.parametrize(
    ("overhead", "expected"),
    [
        ({}, 0.0),
        ({"overhead_ms": 4.5}, 4.5),
        ({"overhead_quantiles_ms": [0.0, 10.0]}, 9.9),  # linear between q[0] and q[1]
        ({"overhead_quantiles_ms": [0.0, 1.0, 2.0, 50.0]}, 48.56),  # p99 = 2 + 0.97*48
    ],
)
def test_outside_latency_is_the_p99_the_simulator_draws_from(
    overhead: dict, expected: float
) -> None:
    m = ModelEntry(
        name="m", latency=LatencyModel(alpha_ms=1, beta_ms=1), slo_ms=100.0,
        min_workers=1, max_workers=1, max_batch=8,
    )  # fmt: skip
    m = replace(
        m,
        overhead_ms=overhead.get("overhead_ms", 0.0),
        overhead_quantiles_ms=(
            tuple(overhead["overhead_quantiles_ms"])
            if "overhead_quantiles_ms" in overhead
            else None
        ),
    )
    assert OUTSIDE_QUANTILE == 0.99
    assert outside_latency_ms(m) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["bursty", "step"])
def test_sidecar_and_simulator_cap_a_calibrated_scenario_alike(name: str) -> None:
    """The calibrated scenarios carry a measured outside latency: both the simulated sidecar
    (controller_config_for) and `tsadapt control --scenario` (scenario_config) take it off
    the SLO, through the one rule."""
    path = REPO / "loadtests" / "scenarios" / f"{name}.yaml"
    sc = load_scenario(path)
    sim = controller_config_for(sc)
    real = scenario_config(REPO / "configs" / "controller.yaml", path)
    image = next(m for m in sc.models if m.name == "image")
    outside = outside_latency_ms(image)
    assert outside > 0  # the fidelity calibration measured one
    cap = slo_feasible_batch(image.latency, image.slo_ms, image.max_batch, outside)
    assert sim.limits("image").max_batch == cap
    configured = yaml.safe_load((REPO / "configs" / "controller.yaml").read_text())["models"]
    expected = slo_feasible_batch(
        image.latency, image.slo_ms, configured["image"]["max_batch"], outside
    )
    assert real.limits("image").max_batch == expected
    assert cap < slo_feasible_batch(image.latency, image.slo_ms, image.max_batch)
    assert image.latency.batch_ms(cap) <= SLO_BATCH_SHARE * (image.slo_ms - outside)
