"""``tsadapt lab evaluate``'s verdict: PPO beats a policy only by more than a tie."""

from __future__ import annotations

import pytest

from tsadapt.experiments.evaluate import GOODPUT_TIE_RPS, headroom, verdict


def _rows(policy: str, goodputs: list[float], worker_s: float) -> list[dict]:
    return [
        {"scenario": "s", "policy": policy, "seed": k, "goodput_rps": g, "worker_seconds": worker_s}
        for k, g in enumerate(goodputs)
    ]


@pytest.mark.parametrize(
    ("ppo", "ppo_ws", "other", "other_ws", "expected"),
    [
        ([10.0, 10.2], 100, [9.0, 9.1], 100, "**yes** (goodput +1.0 rps, worker-s +0; 2/2 seeds)"),
        ([10.0, 10.2], 101, [9.0, 9.1], 100, "**no** (worker-s +1; higher goodput on 2/2 seeds)"),
        ([9.0, 9.1], 90, [10.0, 10.2], 100, "**no** (goodput -1.0 rps; higher goodput on 0/2"),
        # every request answered by both: equal goodput up to float noise is a tie, not a win
        ([259.4, 259.4 + 1e-9], 100, [259.4, 259.4], 100, "**no** (goodput tied, +0.00 rps;"),
        ([5.0 + GOODPUT_TIE_RPS / 2], 50, [5.0], 60, "**no** (goodput tied, +0.03 rps;"),
    ],
)  # fmt: skip
def test_verdict(ppo: list, ppo_ws: float, other: list, other_ws: float, expected: str) -> None:
    rows = _rows("ppo", ppo, ppo_ws) + _rows("queue", other, other_ws)
    assert verdict(rows, "s", "queue").startswith(expected)


def test_verdict_without_rows_is_na() -> None:
    assert verdict(_rows("ppo", [1.0], 1), "s", "aimd") == "n/a"


def test_headroom_is_offered_load_minus_goodput() -> None:
    rows = [
        {"requests": 1000, "duration_s": 10.0, "goodput_rps": 99.0},
        {"requests": 1200, "duration_s": 10.0, "goodput_rps": 117.0},
    ]
    assert headroom(rows) == (
        "It answers 108.0 of the 110.0 req/s offered within their SLOs, "
        "so no policy can beat it by more than 2.0 rps."
    )
