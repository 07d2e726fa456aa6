"""The shared policy's per-model view: global context entries."""

from __future__ import annotations

import math

import pytest
from controller_helpers import IDLE, config, limits, model_obs, observation

from tsadapt.policy.agent_view import CONTEXT_NAMES, OBS_LAYOUT, agent_features


def _context(obs, name: str, cfg) -> dict[str, float]:
    x = agent_features(obs, name, cfg)
    return dict(zip(CONTEXT_NAMES, x[-len(CONTEXT_NAMES) :].tolist(), strict=True))


@pytest.fixture
def cfg():
    return config(limits("a"), limits("b"), limits("c"), worker_budget=4)


def test_rate_share_and_others_shortfall(cfg) -> None:
    obs = observation(
        model_obs("a", rate=100.0, attainment=1.0, workers=2),
        model_obs("b", rate=300.0, attainment=0.5),
        model_obs("c", rate=100.0, attainment=0.8),
    )
    a, b = _context(obs, "a", cfg), _context(obs, "b", cfg)
    assert a["rate_share"] == pytest.approx(0.2)
    assert b["rate_share"] == pytest.approx(0.6)
    # a's neighbours miss 300*0.5 + 100*0.2 = 170 of 500 requests per second; b's miss 20
    assert a["others_shortfall"] == pytest.approx(170 / 500)
    assert b["others_shortfall"] == pytest.approx(20 / 500)
    assert a["budget_used"] == pytest.approx(4 / 4) and a["budget_free"] == 0.0


def test_idle_host_gives_zero_shares_not_nan(cfg) -> None:
    obs = observation(model_obs("a", **IDLE), model_obs("b", **IDLE), model_obs("c", **IDLE))
    ctx = _context(obs, "a", cfg)
    assert ctx["rate_share"] == 0.0 and ctx["others_shortfall"] == 0.0
    assert all(math.isfinite(v) for v in agent_features(obs, "a", cfg))
    assert len(agent_features(obs, "a", cfg)) == len(OBS_LAYOUT)
