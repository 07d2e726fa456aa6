"""Seed 000's Eq. 2 and its named terms."""

from __future__ import annotations

import pytest

from tsadapt.policy.learn.reward import (
    RewardWeights,
    r_bfr,
    r_gpu,
    r_slo,
    r_slo_team,
    r_ssr,
    reward,
    slo_mask,
)


def test_r_slo_fraction_and_empty_interval() -> None:
    assert r_slo(90, 100) == pytest.approx(0.9)
    assert r_slo(0, 0) == 1.0
    with pytest.raises(ValueError):
        r_slo(5, 4)


@pytest.mark.parametrize(
    ("own", "host", "team", "expected"),
    [(0.9, 0.5, 0.0, 0.9), (0.9, 0.5, 1.0, 0.5), (0.9, 0.5, 0.5, 0.7), (1.0, 1.0, 0.3, 1.0)],
)
def test_r_slo_team_blends_own_and_host(
    own: float, host: float, team: float, expected: float
) -> None:
    assert r_slo_team(own, host, team) == pytest.approx(expected)


def test_r_slo_team_rejects_weight_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="team"):
        r_slo_team(1.0, 1.0, 1.5)
    with pytest.raises(ValueError, match="reward.team"):
        RewardWeights(team=-0.1)


def test_r_gpu_prefers_fewer_workers() -> None:
    assert r_gpu(1, 1, 3) == 1.0
    assert r_gpu(2, 1, 3) == pytest.approx(0.5)
    assert r_gpu(3, 1, 3) == 0.0
    assert r_gpu(2, 2, 2) == 1.0
    with pytest.raises(ValueError):
        r_gpu(1, 3, 2)


def test_r_bfr_mean_fill_capped() -> None:
    assert r_bfr(3.0, 4) == pytest.approx(0.75)
    assert r_bfr(0.0, 0) == 1.0
    assert r_bfr(5.0, 4) == 1.0


def test_r_ssr_penalises_changes() -> None:
    assert r_ssr(0) == 1.0
    assert r_ssr(3) == 0.0
    assert r_ssr(1) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        r_ssr(4)


def test_masks() -> None:
    assert slo_mask(0.8, "paper") == pytest.approx(0.2)
    assert slo_mask(0.8, "gate") == pytest.approx(0.8)
    with pytest.raises(ValueError):
        slo_mask(0.5, "other")  # type: ignore[arg-type]


def test_eq2_paper_form() -> None:
    w = RewardWeights(slo=2.0, gpu=0.5, bfr=0.25, ssr=0.1, mask="paper")
    # R = a*S + (b*G + g*F + w*W) * (1 - S)
    expected = 2.0 * 0.6 + (0.5 * 1.0 + 0.25 * 0.5 + 0.1 * 0.0) * 0.4
    assert reward(0.6, 1.0, 0.5, 0.0, w) == pytest.approx(expected)
    # with the SLO fully met the paper's mask removes every secondary term
    assert reward(1.0, 0.0, 0.0, 0.0, w) == reward(1.0, 1.0, 1.0, 1.0, w) == 2.0


def test_eq2_gate_rewards_fewer_workers_when_slo_met() -> None:
    w = RewardWeights()
    assert reward(1.0, 1.0, 1.0, 1.0, w) > reward(1.0, 0.0, 1.0, 1.0, w)
    # the SLO dominates: losing 20 % of SLO costs more than every secondary term gains
    assert reward(1.0, 0.0, 0.0, 0.0, w) > reward(0.8, 1.0, 1.0, 1.0, w)


def test_weights_validated() -> None:
    with pytest.raises(ValueError, match="reward.gpu"):
        RewardWeights(gpu=-1)
    with pytest.raises(ValueError, match="mask"):
        RewardWeights(mask="bogus")  # type: ignore[arg-type]
