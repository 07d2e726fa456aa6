"""The fleet simulation: load split, cohort accounting, metrics and a short run per setup."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from tsadapt.experiments.scaleout.config import SETUPS, load_config
from tsadapt.experiments.scaleout.fleet import (
    Fleet,
    fleet_rates,
    predict_linear,
    run_fleet,
    static_configs,
    step_aware_value,
)
from tsadapt.experiments.scaleout.pods import Cohort, Totals

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture(scope="module")
def flash(cfg):
    sc = next(s for s in cfg.scenarios() if s.name == "flash-crowd")
    return dataclasses.replace(sc, duration_s=240.0)


def test_fleet_rates_scale_one_pods_worth(flash) -> None:
    one, ten = fleet_rates(flash, 1, 10.0), fleet_rates(flash, 10, 10.0)
    assert one == {"image": 30.0, "text": 60.0, "tabular": 20.0}
    assert all(math.isclose(ten[k], 10 * v) for k, v in one.items())


def test_static_pods_use_registration_batching_and_the_fixed_split(flash, cfg) -> None:
    c = static_configs(flash, dict(cfg.static_workers))
    assert (c["image"].batch_size, c["image"].max_batch_delay_ms, c["image"].workers) == (8, 20, 4)
    assert sum(x.workers for x in c.values()) == flash.budget.workers


def test_split_leaves_two_independent_cohorts(flash, cfg) -> None:
    c = Cohort(flash, 5, -45.0, 0.0, 1, None, static_configs(flash, dict(cfg.static_workers)))
    tot = Totals()
    for k in range(1, 4):
        c.feed(k - 1.0, {"image": 30.0, "text": 60.0, "tabular": 20.0})
        c.step(float(k), tot)
    gone = c.split(2)
    assert (c.pods, gone.pods) == (3, 2) and gone.sim is not c.sim
    drained = Totals()
    gone.drain(drained)
    c.feed(3.0, {"image": 30.0})
    c.step(4.0, tot)  # the original goes on with its own queue
    assert drained.arrivals == 0 and drained.answered >= 0
    assert c.split(3) is c


def test_load_balancer_gives_every_ready_pod_the_same_share(flash, cfg) -> None:
    fleet = Fleet(flash, SETUPS[0], 6, 1, cfg)  # 2 initial pods (0.4 x 6), ready at 0
    fleet.add_pods(3, -cfg.pod_startup_s)  # a second cohort, also ready at 0
    fleet.add_pods(4, 0.0)  # not ready before pod_startup_s
    assert fleet.ready_pods(0.0) == 5 and fleet.replicas == 9
    tot = Totals()
    for k in range(30):
        share = {n: r / fleet.ready_pods(k) for n, r in fleet_rates(flash, 6, k + 0.5).items()}
        for c in fleet.cohorts:
            if c.ready(float(k)):
                c.feed(float(k), share)
        for c in fleet.cohorts:
            if c.ready(float(k)):
                c.step(k + 1.0, tot)
    per_pod = [c.queue_wait()[1] for c in fleet.cohorts[:2]]
    want = 30 * sum(fleet_rates(flash, 6, 0.0).values()) / 5
    assert all(abs(x - want) < 4 * math.sqrt(want) for x in per_pod)
    # arrivals counted once per pod: 5 ready pods' worth
    assert abs(tot.arrivals - 5 * want) < 4 * math.sqrt(5 * want) * math.sqrt(5)
    assert fleet.cohorts[2].queue_wait() == (0.0, 0.0)


def test_demand_metric_sums_the_pods(flash, cfg) -> None:
    fleet = Fleet(flash, SETUPS[2], 10, 1, cfg)
    tot = Totals()
    rates = {n: r / fleet.replicas for n, r in fleet_rates(flash, 10, 0.5).items()}
    for c in fleet.cohorts:
        c.feed(0.0, rates)
        c.step(1.0, tot)
    ratio = fleet.cohorts[0].demand_ratio()
    assert 0 < ratio <= 1.5
    assert math.isclose(fleet.metric(1.0), fleet.replicas * ratio)


@pytest.mark.parametrize("setup", SETUPS, ids=lambda s: s.name)
def test_short_run_accounts_for_every_request(flash, cfg, setup) -> None:
    r = run_fleet(flash, setup, 3, 1, cfg)
    offered = sum(sum(fleet_rates(flash, 3, t + 0.5).values()) for t in range(240))
    assert abs(r.totals.arrivals - offered) < 5 * math.sqrt(offered) * 3
    assert r.totals.good <= r.totals.answered <= r.totals.arrivals
    assert r.totals.answered + r.totals.errors == pytest.approx(r.totals.arrivals, rel=1e-9)
    assert r.pod_seconds == pytest.approx(float(np.sum(r.series["pods"])))
    assert len(r.series["t"]) == 240 and 0.5 < r.slo_attainment <= 1.0
    assert (r.reconfigurations > 0) == setup.sidecar


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    base = yaml.safe_load((REPO / "experiments" / "scaleout" / "scaleout.yaml").read_text())
    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump({**base, "scrape_interval": 15}))
    with pytest.raises(ValueError, match="scrape_interval"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({k: v for k, v in base.items() if k != "scales"}))
    with pytest.raises(ValueError, match="missing scales"):
        load_config(bad)


def test_predict_linear_is_promqls_least_squares_line() -> None:
    samples = [(0.0, 1.0), (5.0, 2.0), (10.0, 3.0)]
    assert predict_linear(samples, 70.0) == pytest.approx(15.0)
    assert predict_linear(samples[:1], 70.0) == 1.0


@pytest.mark.parametrize(
    ("samples", "spare", "expected"),
    [
        ([(0.0, 4.0), (5.0, 4.0)], 0.0, 4.0),  # flat: the current sum
        ([(0.0, 4.0), (5.0, 6.0)], 0.0, 6.0 + 2.0 / 5.0 * 60.0),  # rising: its trend, 60 s on
        ([(0.0, 6.0), (5.0, 4.0)], 0.0, 4.0),  # falling: never fewer than the current sum
        ([(0.0, 4.0), (5.0, 4.0)], 1.5, 5.5),  # spare pods' worth on top
    ],
)
def test_step_aware_query(samples, spare, expected) -> None:
    assert step_aware_value(samples, samples[-1][0], 60.0, spare) == pytest.approx(expected)


def test_step_aware_setup_uses_its_own_target_and_intervals(cfg) -> None:
    step = next(s for s in SETUPS if s.step_aware)
    assert cfg.hpa_spec(step, 10).target == cfg.step_aware.demand_target
    assert cfg.intervals(step) == (cfg.step_aware.scrape_s, cfg.step_aware.keda_polling_s)
    assert cfg.intervals(SETUPS[2]) == (cfg.scrape_s, cfg.keda_polling_s)


def test_step_aware_config_errors_name_the_key(tmp_path: Path) -> None:
    base = yaml.safe_load((REPO / "experiments" / "scaleout" / "scaleout.yaml").read_text())
    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump({**base, "step_aware": {"predict": 60}}))
    with pytest.raises(ValueError, match="predict"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({**base, "step_aware": {"scrape_s": 0}}))
    with pytest.raises(ValueError, match="step_aware.scrape_s"):
        load_config(bad)
