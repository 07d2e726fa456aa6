"""The synthetic catalogue, the interference fit and the lower bound."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tsadapt.fleet.baselines import gpu_lower_bound
from tsadapt.fleet.catalog import build_catalogue, zipf_shares
from tsadapt.fleet.constants import MEAN_LOAD_SHARE
from tsadapt.fleet.interference import FIT_A, FIT_B, fit, fit_file, slowdown_table, throughputs

REPO = Path(__file__).resolve().parents[1]


def test_interference_constants_are_the_fit_of_the_committed_measurements() -> None:
    a, b = fit_file(REPO / "docs/results/gpu.json")
    assert (a, b) == pytest.approx((FIT_A, FIT_B), abs=5e-4)


def test_fit_reproduces_the_measured_gains() -> None:
    a, b = fit({1: 135.0, 2: 180.6, 4: 159.9})
    f = slowdown_table(a, b, 4)
    assert 2 / f[1] == pytest.approx(180.6 / 135.0, rel=1e-3)
    assert 4 / f[3] == pytest.approx(159.9 / 135.0, rel=1e-3)
    assert all(x <= y for x, y in zip(f, f[1:], strict=False))


def test_throughputs_need_the_single_worker_case() -> None:
    with pytest.raises(ValueError, match="colocation.cases"):
        throughputs([{"setting": "image x2", "workers": 2, "throughput_rps": 1.0}])


def test_zipf_shares() -> None:
    s = zipf_shares(50)
    assert s.sum() == pytest.approx(1.0) and np.all(np.diff(s) < 0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"gpus": 0}, "gpus"), ({"horizon_s": 0}, "horizon_s"), ({"mix": "weekly"}, "mix")],
)
def test_bad_input_names_the_field(kwargs, field) -> None:
    args = {"gpus": 4, "models": 5, "mix": "diurnal", "horizon_s": 60.0} | kwargs
    with pytest.raises(ValueError, match=field):
        build_catalogue(**args)


def test_every_model_meets_the_slo_rule_and_the_load_share() -> None:
    cat = build_catalogue(32, 50, "bursty", 120.0)
    for m in cat.models:
        assert m.batch_ms(m.max_batch) <= m.slo_ms / 2
        assert m.max_batch == 64 or m.batch_ms(m.max_batch + 1) > m.slo_ms / 2
    gpus = sum(m.mean_rate / m.throughput(m.max_batch) for m in cat.models)
    assert gpus == pytest.approx(MEAN_LOAD_SHARE * 32)


def test_lower_bound_is_below_the_mean_load_in_gpus() -> None:
    cat = build_catalogue(8, 10, "diurnal", 600.0)
    lb = gpu_lower_bound(cat)
    assert lb.shape == (600,)
    mean_need = sum(m.mean_rate / m.throughput(m.max_batch) for m in cat.models)
    assert mean_need / 1.34 <= lb.mean() <= mean_need + len(cat.models)


def test_lower_bound_counts_one_slot_per_loaded_model() -> None:
    cat = build_catalogue(32, 50, "diurnal", 60.0)
    assert gpu_lower_bound(cat).min() >= 13  # 50 models, 4 slots per GPU


def _profiles(tmp_path: Path, rows) -> Path:
    path = tmp_path / "gpu-profiles.json"
    path.write_text(json.dumps(rows))
    return path


def test_a_catalogue_from_gpu_check_profiles_uses_the_measured_tables(tmp_path: Path) -> None:
    rows = [
        {"model": "image", "batch_sizes": [1, 8, 32], "median_ms": [4.0, 30.0, 110.0]},
        {"model": "text", "batch_sizes": [1, 8, 32], "median_ms": [1.0, 1.5, 3.0]},
    ]
    cat = build_catalogue(4, 6, "diurnal", 60.0, profiles=_profiles(tmp_path, rows))
    assert cat.tables == "gpu-profiles.json"
    assert {m.family for m in cat.models} <= {"gpu-check-image", "gpu-check-text"}
    for m in cat.models:
        want = {"gpu-check-image": 30.0, "gpu-check-text": 1.5}[m.family]
        assert m.batch_ms(8) == pytest.approx(want)  # unscaled


@pytest.mark.parametrize(
    "rows",
    [
        [{"model": "image", "batch_sizes": [1, 8]}],
        [{"model": "image", "batch_sizes": [1, 8], "median_ms": [4.0]}],
        [{"model": "image", "batch_sizes": [0, 8], "median_ms": [4.0, 9.0]}],
        [],
        "not a list",
    ],
)
def test_bad_profiles_name_the_option(tmp_path: Path, rows) -> None:
    with pytest.raises(ValueError, match="--profiles"):
        build_catalogue(4, 6, "diurnal", 60.0, profiles=_profiles(tmp_path, rows))
