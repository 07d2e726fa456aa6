"""The pod's capacity demand (the metric the pod autoscalers read) and its exposition."""

from __future__ import annotations

import dataclasses

import pytest
import requests

from tests.controller_helpers import config, limits, model_obs, observation
from tsadapt.policy.types import Action
from tsadapt.sidecar.exporter import (
    DEMAND_RATIO,
    SHORTFALL,
    MetricsExporter,
    capacity_demand,
)

TWO = (limits("a", max_workers=3), limits("b", max_workers=3))


def saturated(name: str, workers: int, arrivals: float, completions: float, queue: int = 50):
    m = model_obs(name, workers=workers, rate=arrivals, queue=queue)
    return dataclasses.replace(m, completion_rate_rps=completions)


def test_idle_pod_wants_what_it_runs() -> None:
    cfg = config(*TWO, worker_budget=4)
    d = capacity_demand(observation(model_obs("a", workers=1), model_obs("b", workers=2)), cfg)
    assert d.wanted == {"a": 1, "b": 2}
    assert (d.capacity, d.shortfall, d.ratio) == (4, 0, 0.75)


@pytest.mark.parametrize(
    ("arrivals", "completions", "queue", "want"),
    [
        (300.0, 100.0, 50, 6),  # saturated: 2 workers x 3
        (300.0, 100.0, 0, 2),  # no queue: not saturated, whatever the rates say
        (100.0, 100.0, 50, 2),  # keeping up
        (101.0, 100.0, 5, 3),  # just above: rounds up
    ],
)
def test_saturated_model_wants_workers_for_its_arrivals(
    arrivals: float, completions: float, queue: int, want: int
) -> None:
    cfg = config(*TWO, worker_budget=4)
    obs = observation(saturated("a", 2, arrivals, completions, queue), model_obs("b", workers=1))
    assert capacity_demand(obs, cfg).wanted["a"] == want


def test_shortfall_counts_max_workers_and_budget() -> None:
    cfg = config(*TWO, worker_budget=4)
    obs = observation(saturated("a", 2, 300.0, 100.0), model_obs("b", workers=2))
    d = capacity_demand(obs, cfg)
    # a wants 6 (3 beyond its max of 3); inside: 3 + 2 = 5 > budget 4 -> 1 more
    assert (d.wanted, d.shortfall, d.ratio) == ({"a": 6, "b": 2}, 4, 2.0)


def test_proposals_and_emergencies_raise_the_demand() -> None:
    cfg = config(*TWO, worker_budget=4)
    obs = observation(model_obs("a", workers=2), model_obs("b", workers=2))
    d = capacity_demand(obs, cfg, proposed=[Action("a", workers=3)], emergencies=["b"])
    assert d.wanted == {"a": 3, "b": 3} and d.shortfall == 2
    lower = capacity_demand(obs, cfg, proposed=[Action("a", workers=1, batch_size=4)])
    assert lower.wanted == {"a": 2, "b": 2}  # a proposed decrease is not demand


def test_capacity_is_the_budget_or_the_sum_of_max_workers() -> None:
    cfg = config(*TWO, worker_budget=10)
    d = capacity_demand(observation(model_obs("a"), model_obs("b")), cfg)
    assert d.capacity == 6


def test_exporter_serves_the_pod_series() -> None:
    cfg = config(*TWO, worker_budget=4)
    exporter = MetricsExporter(port=0, config=cfg)
    try:
        obs = observation(saturated("a", 2, 300.0, 100.0), model_obs("b", workers=2))
        exporter.update(obs, {}, {}, proposed=(), emergencies=())
        text = requests.get(exporter.url, timeout=5).text
    finally:
        exporter.close()
    assert f"{DEMAND_RATIO} 2.0" in text.splitlines()
    assert f"{SHORTFALL} 4.0" in text.splitlines()
    assert f"# TYPE {DEMAND_RATIO} gauge" in text
    assert 'tsadapt_controller_wanted_workers{model="a"} 6.0' in text


def test_exporter_without_config_has_no_pod_series() -> None:
    exporter = MetricsExporter(port=0)
    try:
        exporter.update(observation(model_obs()), {}, {})
        assert DEMAND_RATIO not in exporter.render()
    finally:
        exporter.close()


def test_exporter_binds_the_given_host() -> None:
    exporter = MetricsExporter(port=0, host="0.0.0.0")
    try:
        assert exporter._http.server_address[0] == "0.0.0.0"
        assert requests.get(exporter.url, timeout=5).status_code == 200
    finally:
        exporter.close()


def test_a_configured_model_not_served_wants_nothing() -> None:
    cfg = config(*TWO, worker_budget=4)
    d = capacity_demand(observation(model_obs("a", workers=2)), cfg)
    assert d.wanted == {"a": 2} and d.ratio == 0.5


def test_no_controlled_model_wants_nothing_and_divides_by_nothing() -> None:
    """A restarted server answers before it registers its models: the config in force then
    controls none, and the demand is 0, not a division by zero that stops the loop."""
    empty = dataclasses.replace(config(), models=())
    d = capacity_demand(observation(), empty)
    assert d.wanted == {} and d.capacity == 0 and d.ratio == 0.0 and d.shortfall == 0


def test_ready_and_live_probes() -> None:
    exporter = MetricsExporter(port=0, config=config(*TWO, worker_budget=4))
    base = exporter.url.rsplit("/", 1)[0]
    try:
        assert requests.get(f"{base}/ready", timeout=5).status_code == 503  # no tick yet
        assert requests.get(f"{base}/live", timeout=5).status_code == 200
        exporter.update(observation(model_obs("a", workers=0), model_obs("b")), {}, {})
        r = requests.get(f"{base}/ready", timeout=5)
        assert r.status_code == 503 and "no worker for a" in r.text
        exporter.update(observation(model_obs("a"), model_obs("b")), {}, {})
        assert requests.get(f"{base}/ready", timeout=5).status_code == 200
        exporter.update(None, {}, {})  # TorchServe lost: not ready, still live
        assert requests.get(f"{base}/ready", timeout=5).status_code == 503
        assert requests.get(f"{base}/live", timeout=5).status_code == 200
        exporter.stall_s = 0.0
        assert requests.get(f"{base}/live", timeout=5).status_code == 503
    finally:
        exporter.close()


def test_exporter_uses_the_config_in_force_this_tick() -> None:
    exporter = MetricsExporter(port=0, config=config(*TWO, worker_budget=4))
    try:
        obs = observation(model_obs("a", workers=2), model_obs("b", workers=2))
        exporter.update(obs, {}, {}, config=config(*TWO, worker_budget=6))
        assert f"{DEMAND_RATIO} {4 / 6!r}" in exporter.render().splitlines()
    finally:
        exporter.close()
