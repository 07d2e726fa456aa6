"""The peers report's pieces without any server: the invalid-run rule, the fixed and
adaptive tables with their paired differences, the time breakdown from saved counters, the
replicas' time accounts, the capacity systems and the handler's boolean shortcut."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.test_bench_seeds import overall
from tsadapt.experiments.bench_capacity import Capacity, capacity_systems
from tsadapt.experiments.bench_run import RunResult
from tsadapt.experiments.bench_schedule import LATENESS_LIMIT_MS, RateCheck
from tsadapt.experiments.bench_seeds import invalid_runs, per_controller
from tsadapt.experiments.peers.breakdown import metric_sum, prometheus, splits_of
from tsadapt.experiments.peers.peer_bench import variant_names, variant_of
from tsadapt.experiments.peers.peers_report import pair, write_peers_report
from tsadapt.experiments.peers.settings import SettingRow
from tsadapt.experiments.peers.timing import ENV_DIR, TimeAccount, read_accounts
from tsadapt.handlers.base import may_hold_booleans


def run(name: str, goodput: float, late: float = 5.0, attainment: float = 0.95) -> RunResult:
    rate = RateCheck("all", 100.0, 6000, 6000, 100.0, 1.0, late, late + 1, 60.0)
    return RunResult(name, "ok", overall=overall(goodput, attainment), rates=(rate,))


@pytest.mark.parametrize(("late", "valid"), [(LATENESS_LIMIT_MS - 1, True),
                                             (LATENESS_LIMIT_MS + 1, False)])  # fmt: skip
def test_a_late_load_generator_makes_the_run_invalid(late: float, valid: bool) -> None:
    res = run("static", 100.0, late)
    assert res.valid is valid
    assert res.label == ("static" if valid else "static (invalid)")
    assert (3 in per_controller({3: [res]})["static"]) is valid
    assert invalid_runs({3: [res]}) == ({} if valid else {"static": {3: late}})


def test_pairs_use_only_seeds_where_both_runs_are_valid() -> None:
    runs = {
        5: [run("static", 100.0), run("rayserve-fixed", 90.0)],
        6: [run("static", 101.0), run("rayserve-fixed", 80.0, late=400.0)],
        7: [run("static", 99.0, late=60.0), run("rayserve-fixed", 95.0)],
    }
    p = pair(runs, "rayserve-fixed", "static")
    assert p is not None and list(p["goodput_diff"]) == [5]
    assert p["mean_goodput_diff"] == pytest.approx(-10.0)
    assert pair({5: [run("a", 1.0, late=99.0), run("b", 1.0)]}, "a", "b") is None


def test_report_has_both_tables_capacity_settings_and_the_rule(tmp_path: Path) -> None:
    runs = {
        s: [run("static", 100.0 + s), run("aimd", 110.0 + s), run("rayserve-fixed", 90.0),
            run("rayserve-auto", 95.0, late=500.0 if s == 6 else 5.0),
            run("bentoml-nobatch", 97.0), run("bentoml-adaptive", 112.0)]
        for s in (5, 6)
    }  # fmt: skip
    caps = [Capacity("static", "image", "ok", rps=60.0, p50_ms=40.0, p99_ms=90.0, window_s=8.0),
            Capacity("bentoml-adaptive", "image", "failed", "no venv")]  # fmt: skip
    rows = [SettingRow("rayserve-auto", "upscale_delay_s", "1.0", "30", "surges last 10 s")]
    md = write_peers_report(
        tmp_path / "peers.md", "tsadapt lab bench --peers rayserve,bentoml", "co-surge", 60.0,
        "2026-12-07 05:00", runs, caps, rows, {"rayserve": "its own venv"}, ["## Where"],
        "docs/results/peers/bench-co-surge.md", (0.4, 1.9),
    )  # fmt: skip
    text = md.read_text()
    assert "load average 0.4 when the bench started and 1.9 when it ended" in text
    assert text.count("tsadapt lab bench --peers rayserve,bentoml") == 1
    for needle in ("## Fixed against fixed", "## Adaptive against adaptive",
                   "| static | image | 60.0", "failed: no venv", "`upscale_delay_s` | 1.0 | 30",
                   f"{LATENESS_LIMIT_MS:.0f} ms",
                   "| rayserve-auto | 1/2 |", "s6: 500", "## Where"):  # fmt: skip
        assert needle in text, needle
    data = json.loads(md.with_suffix(".json").read_text())
    assert data["invalid"] == {"rayserve-auto": {"6": 500.0}}
    fixed = {(p["system"], p["against"]) for p in data["fixed_pairs"]}
    assert fixed == {("rayserve-fixed", "static"), ("bentoml-nobatch", "static")}
    adaptive = {(p["system"], p["against"]) for p in data["adaptive_pairs"]}
    assert adaptive == {("rayserve-auto", "aimd"), ("bentoml-adaptive", "aimd"),
                        ("aimd", "bentoml-adaptive")}  # fmt: skip
    assert data["systems"]["bentoml-adaptive"]["goodput_rps"]["mean"] == pytest.approx(112.0)


PROM = """# HELP ts_inference_requests_total Total number of inference requests.
ts_inference_requests_total{model_name="image",model_version="default",hostname="h"} 100.0
ts_inference_latency_microseconds{model_name="image",model_version="default",hostname="h"} 3e6
ts_queue_latency_microseconds{model_name="image",model_version="default",hostname="h"} 1e6
AdaptBatches{ModelName="image",Level="Model",Hostname="h"} 50.0
AdaptBatchRequests{ModelName="image",Level="Model",Hostname="h"} 100.0
AdaptHandlerMilliseconds{ModelName="image",Level="Model",Hostname="h"} 500.0
"""


def _records(folder: Path, model: str, latencies: list[float]) -> None:
    from tsadapt.experiments.bench_schedule import RECORD_FIELDS, record_row

    rows = [record_row(1000.0 + i, i * 0.1, i * 0.1, model, lat, 200, True, "")
            for i, lat in enumerate(latencies)]  # fmt: skip
    with (folder / "requests.csv").open("w") as fh:
        fh.write(",".join(RECORD_FIELDS) + "\n")
        for r in rows:
            fh.write(",".join(map(str, r)) + "\n")


def test_torchserve_split_from_its_counters(tmp_path: Path) -> None:
    samples = prometheus(PROM)
    assert metric_sum(samples, "AdaptBatches", "image") == 50.0
    assert math.isnan(metric_sum(samples, "AdaptBatches", "text"))
    (tmp_path / "server-metrics.txt").write_text(PROM)
    _records(tmp_path, "image", [40.0, 40.0])
    [sp] = splits_of(RunResult("static", "ok", rundir=tmp_path))
    assert (sp.server_ms, sp.wait_ms, sp.handler_ms, sp.mean_batch) == (30.0, 10.0, 10.0, 2.0)
    assert sp.other_ms == 10.0 and sp.outside_ms == 10.0 and sp.client_ms == 40.0


def test_replica_accounts_add_up_across_processes(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "timing"))
    (tmp_path / "timing").mkdir()
    a = TimeAccount("text")
    a.batch(4, 10.0)
    for _ in range(4):
        a.request(5.0, 20.0)
    a.maybe_write(force=True)
    acc = read_accounts(tmp_path / "timing")["text"]
    assert (acc.requests, acc.batches, acc.handler_ms, acc.wait_ms) == (4, 1, 40.0, 20.0)
    _records(tmp_path, "text", [30.0] * 4)
    [sp] = splits_of(RunResult("rayserve-auto", "ok", rundir=tmp_path))
    assert (sp.server_ms, sp.wait_ms, sp.handler_ms, sp.outside_ms) == (20.0, 5.0, 10.0, 10.0)


def test_variants_and_capacity_systems() -> None:
    assert variant_names(("rayserve", "bentoml-adaptive")) == [
        "rayserve-fixed", "rayserve-auto", "bentoml-adaptive"]  # fmt: skip
    assert variant_of("bentoml-nobatch") == ("bentoml", "fixed")
    with pytest.raises(ValueError, match="unknown peer run"):
        variant_of("triton")
    runs = tuple(variant_names(("rayserve", "bentoml")))
    assert capacity_systems(runs) == ["static", "rayserve-fixed", "bentoml-nobatch",
                                      "bentoml-adaptive"]  # fmt: skip


@pytest.mark.parametrize(("body", "maybe"), [
    (b'{"features": [1.0, 2.0]}', False), (b'{"features": [true, 2.0]}', True),
    ('{"features": [false]}', True), ({"features": [1.0]}, True),
])  # fmt: skip
def test_boolean_shortcut_only_when_the_raw_json_has_no_boolean(body: object, maybe: bool) -> None:
    assert may_hold_booleans({"body": body}) is maybe
