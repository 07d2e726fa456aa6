"""The sweep's verdict: PPO against the cheapest Nexus that reaches 99 % (means over seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from tsadapt.fleet.catalog import build_catalogue
from tsadapt.fleet.evaluate import NEXUS_99, PointResult
from tsadapt.fleet.report import verdict
from tsadapt.fleet.run import FleetResult


def _runs(policy: str, gpus: float, attainment: float, seeds: int = 2) -> list[FleetResult]:
    good = int(round(attainment * 10_000))
    return [
        FleetResult(policy, 8, 10, "diurnal", s, 600.0, gpus, 10_000, good, 0, 0, 0, 0, 0, 1.0)
        for s in range(seeds)
    ]


@pytest.fixture(scope="module")
def cat():
    return build_catalogue(8, 10, "diurnal", 60.0)


@pytest.mark.parametrize(
    ("nexus", "higher", "ppo", "short"),
    [
        ((5.4, 0.992), None, (5.0, 0.991), "**met** vs nexus x1.5"),
        ((5.4, 0.992), None, (5.6, 0.995), "**not met** vs nexus x1.5"),
        ((5.4, 0.992), None, (5.0, 0.985), "**not met** vs nexus x1.5"),
        ((5.4, 0.989), ("nexus x2", 6.3, 0.993), (5.6, 0.995), "**met** vs nexus x2"),
        ((5.4, 0.989), ("nexus x2", 6.3, 0.993), (6.5, 0.995), "**not met** vs nexus x2"),
        ((5.4, 0.80), ("nexus x2.5", 6.3, 0.85), (6.5, 0.90), "Nexus < 99 % (to x2.5)"),
    ],
)
def test_verdict(cat, nexus, higher, ppo, short: str) -> None:
    runs = {"nexus": _runs("nexus", *nexus), "ppo": _runs("ppo", *ppo)}
    if higher:
        runs[NEXUS_99] = _runs(*higher)
    p = PointResult(cat, runs, np.ones(60), {})
    assert verdict(p)[0] == short


def test_verdict_of_an_infeasible_point(cat) -> None:
    p = PointResult(cat, {}, np.ones(60), {}, None, "10 models need a slot each")
    assert verdict(p) == ("infeasible", "No policy ran: 10 models need a slot each.")
