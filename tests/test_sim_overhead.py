"""The calibration knobs: per-request overhead (constant or a distribution), batch
overhead, measured JSON profiles and calibration files in scenarios."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.policy.sim.scenario import json_profile, load_scenario, scenario_from_dict
from tsadapt.policy.sim.simulator import Simulator
from tsadapt.policy.sim.specs import LatencyModel, ModelSpec
from tsadapt.policy.types import ModelSettings

REPO = Path(__file__).resolve().parents[1]
PER_REQ_10MS = LatencyModel(alpha_ms=10.0, beta_ms=0.0)


def run(arrivals, **spec_kw) -> tuple[np.ndarray, Simulator]:
    spec = ModelSpec("m", PER_REQ_10MS, initial=ModelSettings(1, 100.0, 1), **spec_kw)
    sim = Simulator([spec], {"m": np.asarray(arrivals, dtype=float)}, seed=3)
    return sim.run_until(100.0)["m"].latencies_ms, sim


def test_constant_overhead_adds_to_latency_without_occupying_the_worker() -> None:
    base, _ = run([0.0, 0.001, 0.002])
    shifted, sim = run([0.0, 0.001, 0.002], overhead_ms=7.5)
    np.testing.assert_allclose(shifted, base + 7.5)
    # the worker's busy time is the same: the overhead is outside it
    np.testing.assert_allclose(base, [10.0, 19.0, 28.0])


@pytest.mark.parametrize("q", [(5.0, 5.0), (0.0, 2.0, 4.0, 40.0)])
def test_overhead_quantiles_draw_from_the_distribution(q: tuple[float, ...]) -> None:
    arrivals = np.arange(4000) * 0.05  # one at a time: each latency is 10 ms + overhead
    lat, _ = run(arrivals, overhead_quantiles_ms=q)
    extra = lat - 10.0
    assert extra.min() >= q[0] - 1e-9 and extra.max() <= q[-1] + 1e-9
    # inverse transform with linear interpolation: the median is the middle quantile
    assert np.median(extra) == pytest.approx(np.interp(0.5 * (len(q) - 1), range(len(q)), q),
                                              abs=0.5)  # fmt: skip


def test_overhead_draws_are_seeded_and_leave_exec_jitter_alone() -> None:
    arrivals = np.arange(500) * 0.05
    a, _ = run(arrivals, overhead_quantiles_ms=(0.0, 10.0), exec_cv=0.3)
    b, _ = run(arrivals, overhead_quantiles_ms=(0.0, 10.0), exec_cv=0.3)
    np.testing.assert_array_equal(a, b)
    # the execution jitter's stream is the same with and without overhead draws
    c, _ = run(arrivals, exec_cv=0.3)
    d, _ = run(arrivals, overhead_quantiles_ms=(0.0, 0.0), exec_cv=0.3)
    np.testing.assert_allclose(c, d)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"overhead_ms": -1.0}, "overhead_ms"),
        ({"overhead_ms": float("inf")}, "overhead_ms"),
        ({"overhead_quantiles_ms": (1.0,)}, ">= 2"),
        ({"overhead_quantiles_ms": (2.0, 1.0)}, "not decrease"),
        ({"overhead_quantiles_ms": (-1.0, 1.0)}, ">= 0"),
        ({"overhead_quantiles_ms": (1.0, 2.0), "overhead_ms": 3.0}, "not both"),
    ],
)
def test_overhead_validation(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ModelSpec("m", PER_REQ_10MS, **kw)


# --------------------------------------------------------------------------- scenarios

BASE = {
    "duration_s": 20,
    "seed": 1,
    "devices": [{"name": "cpu", "cores": 2}],
    "models": [
        {"name": "image", "slo_ms": 200, "profile": {"alpha_ms": 2, "beta_ms": 5},
         "min_workers": 1, "max_workers": 2, "max_batch": 16},
    ],
    "workload": [{"model": "image", "kind": "poisson", "rate": 20}],
    "budget": {"workers": 2},
}  # fmt: skip


def _profiles(tmp_path: Path) -> Path:
    p = tmp_path / "profiles.json"
    p.write_text(
        json.dumps(
            [
                {"model": "image", "threads": 2, "batch_sizes": [1, 2, 4],
                 "median_ms": [8.0, 12.0, 20.0], "p90_ms": [9.0, 13.0, 22.0]},
                {"model": "text", "threads": 2, "batch_sizes": [1], "median_ms": [2.0]},
            ]
        )
    )  # fmt: skip
    return p


def test_profile_json_gives_the_models_table(tmp_path: Path) -> None:
    d = copy.deepcopy(BASE)
    d["models"][0].update(profile=str(_profiles(tmp_path)), threads=2)
    sc = scenario_from_dict(d, tmp_path)
    m = sc.model("image")
    assert m.latency.table == ((1, 8.0), (2, 12.0), (4, 20.0))
    assert float(m.latency.batch_ms(3)) == pytest.approx(16.0)
    assert m.profile_path == str(tmp_path / "profiles.json")


@pytest.mark.parametrize(
    "threads, model, match",
    [(1, "image", "threads"), (2, "tabular", "no entry for model")],
)
def test_profile_json_errors(tmp_path: Path, threads: int, model: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        json_profile(_profiles(tmp_path), model, threads)


def test_batch_overhead_adds_to_every_batch(tmp_path: Path) -> None:
    d = copy.deepcopy(BASE)
    d["models"][0].update(profile=str(_profiles(tmp_path)), threads=2, batch_overhead_ms=3.0)
    m = scenario_from_dict(d, tmp_path).model("image")
    assert m.latency.table == ((1, 11.0), (2, 15.0), (4, 23.0))
    assert m.batch_overhead_ms == 3.0
    d["models"][0].update(profile={"alpha_ms": 2, "beta_ms": 5})
    m = scenario_from_dict(d, tmp_path).model("image")
    assert (m.latency.alpha_ms, m.latency.beta_ms) == (2, 8.0)


def _calibration(tmp_path: Path, entry: dict) -> Path:
    p = tmp_path / "cal.json"
    p.write_text(json.dumps({"models": {"image": entry}}))
    return p


def test_calibration_file_fills_what_the_model_does_not_set(tmp_path: Path) -> None:
    cal = _calibration(
        tmp_path,
        {"overhead_quantiles_ms": [1.0, 2.0, 9.0], "exec_cv": 0.4, "batch_overhead_ms": 2.0,
         "ignored_field": 1},
    )  # fmt: skip
    d = copy.deepcopy(BASE)
    d["calibration"] = cal.name
    m = scenario_from_dict(d, tmp_path).model("image")
    assert m.overhead_quantiles_ms == (1.0, 2.0, 9.0) and m.exec_cv == 0.4
    assert m.batch_overhead_ms == 2.0 and m.latency.beta_ms == 7.0
    assert m.spec(ModelSettings()).overhead_quantiles_ms == (1.0, 2.0, 9.0)
    # the model's own overhead replaces the calibrated one (both kinds), the rest stays
    d["models"][0]["overhead_ms"] = 4.0
    m = scenario_from_dict(d, tmp_path).model("image")
    assert m.overhead_ms == 4.0 and m.overhead_quantiles_ms is None and m.exec_cv == 0.4


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda d, p: d.update(calibration="missing.json"), "tsadapt lab fidelity calibrate"),
        (lambda d, p: d.update(calibration=_calibration(p, {}).name) or
         d["models"][0].update(name="other") or d["workload"][0].update(model="other"),
         "no entry for model"),
        (lambda d, p: d["models"][0].update(overhead_quantiles_ms=[3, 1]), "not decrease"),
        (lambda d, p: d["models"][0].update(overhead_quantiles_ms=[1, 2], overhead_ms=1),
         "not both"),
    ],
)  # fmt: skip
def test_calibration_and_overhead_errors(tmp_path: Path, setup, match: str) -> None:
    d = copy.deepcopy(BASE)
    setup(d, tmp_path)
    with pytest.raises(ValueError, match=match):
        scenario_from_dict(d, tmp_path)


@pytest.mark.parametrize("name", ["bursty", "diurnal", "step", "calibrate"])
def test_real_server_scenarios_load_with_measured_profiles(name: str) -> None:
    sc = load_scenario(REPO / "loadtests" / "scenarios" / f"{name}.yaml")
    assert sc.model_names == ["image", "text", "tabular"]
    for m in sc.models:
        # The simulated workers run the intra-op threads the real ones are registered with.
        assert m.threads == DEMO_MODELS[m.name].intra_op_threads
        assert m.latency.table is not None
        assert m.profile_path and m.profile_path.endswith("model-profiles.json")
        if name != "calibrate":
            assert m.overhead_quantiles_ms is not None and m.batch_overhead_ms >= 0
            assert m.host_cpu_ms > 0  # from the calibration file, like the rest
