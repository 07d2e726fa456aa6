"""The SLO-feasible batch bound the simulated sidecar puts on every policy's max_batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsadapt.policy.sim.control import SLO_BATCH_SHARE, controller_config_for, slo_feasible_batch
from tsadapt.policy.sim.scenario import load_scenario
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
