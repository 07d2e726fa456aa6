"""``tsadapt lab bench --seeds N``: figures across seeds, paired differences, the report and the
demo's reading of it (no server: the runs' results are built from known figures)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from tsadapt.cli.lab.bench import register
from tsadapt.cli.main import main
from tsadapt.experiments.bench import BenchConfig
from tsadapt.experiments.bench_report import RunResult, write_markdown
from tsadapt.experiments.bench_schedule import resolve_scenario, scenario_schedule
from tsadapt.experiments.bench_seeds import (
    ReportError,
    Stat,
    bench_seeds,
    best_adaptive,
    best_adaptive_from_report,
    complete,
    paired,
    ranking,
    stats,
    summary_json,
)
from tsadapt.experiments.demo import run_demo
from tsadapt.policy.sim.metrics import ModelResult
from tsadapt.policy.sim.scenario import load_scenario


def overall(goodput: float, attainment: float, p99: float = 50.0, ws: float = 270.0):
    """An overall result with these figures (90 s run)."""
    requests = 1000
    return ModelResult(
        "overall", None, requests, requests, 0, 0, round(attainment * requests), attainment,
        goodput, 10.0, p99, 12.0, ws, 0.0, 4.0,
    )  # fmt: skip


def ok(controller: str, goodput: float, attainment: float = 0.95, **kw: float) -> RunResult:
    return RunResult(controller, "ok", overall=overall(goodput, attainment, **kw),
                     reconfigurations={"image": 2, "text": 1})  # fmt: skip


#: Goodput per seed: queue beats aimd on every seed, static trails, ppo is mixed vs queue.
GOODPUT = {
    "static": (100.0, 101.0, 99.0),
    "aimd": (110.0, 111.0, 112.0),
    "queue": (115.0, 113.0, 116.0),
    "ppo": (116.0, 112.0, 115.0),
    "rayserve": (90.0, 95.0, 93.0),
}


@pytest.fixture
def runs() -> dict[int, list[RunResult]]:
    return {
        seed: [ok(c, g[k], attainment=g[k] / 120.0) for c, g in GOODPUT.items()]
        for k, seed in enumerate((5, 6, 7))
    }


def test_seeds_are_consecutive_draws_from_the_base() -> None:
    assert bench_seeds(5, 3) == (5, 6, 7)
    assert bench_seeds(0, 1) == (0,)
    with pytest.raises(ValueError, match="seeds"):
        bench_seeds(5, 0)


@pytest.mark.parametrize(
    ("values", "mean", "sd"),
    [([1.0, 2.0, 3.0], 2.0, 1.0), ([4.0], 4.0, math.nan), ([2.0, math.nan, 4.0], 3.0, 2**0.5)],
)
def test_stat_is_mean_and_sample_sd(values: list[float], mean: float, sd: float) -> None:
    s = Stat.of(values)
    assert s.mean == pytest.approx(mean)
    assert (math.isnan(s.sd) and math.isnan(sd)) or s.sd == pytest.approx(sd)


def test_stats_over_seeds(runs: dict[int, list[RunResult]]) -> None:
    st = stats(runs)
    assert st["aimd"]["goodput_rps"].mean == pytest.approx(111.0)
    assert st["aimd"]["goodput_rps"].sd == pytest.approx(1.0)
    assert st["aimd"]["reconfigurations"].mean == 3.0
    assert st["static"]["slo_attainment_pct"].mean == pytest.approx(100 * 100 / 120)


def test_each_controller_is_paired_with_the_best_other(runs: dict[int, list[RunResult]]) -> None:
    by = {p.controller: p for p in paired(runs)}
    # mean goodput: queue 114.67, ppo 114.33: queue's best other is ppo, everyone else's queue
    assert by["queue"].other == "ppo" and by["aimd"].other == "queue"
    assert by["queue"].goodput_diff == {5: -1.0, 6: 1.0, 7: 1.0}
    assert (by["queue"].wins, by["queue"].losses, by["queue"].sign) == (2, 1, "mixed")
    assert by["aimd"].goodput_diff == {5: -5.0, 6: -2.0, 7: -4.0} and by["aimd"].sign == "-"
    assert by["rayserve"].other == "queue" and by["rayserve"].losses == 3
    assert by["aimd"].attainment_diff[5] == pytest.approx(100 * (110 - 115) / 120)


def test_ranking_and_best_adaptive_skip_static_and_peers(
    runs: dict[int, list[RunResult]],
) -> None:
    assert ranking(runs) == ["queue", "ppo", "aimd", "static", "rayserve"]
    assert best_adaptive(runs) == "queue"
    # static best on every seed: the best *adaptive* is still chosen among adaptive ones
    for results in runs.values():
        results[0] = ok("static", 500.0)
    assert ranking(runs)[0] == "static" and best_adaptive(runs) == "queue"


def test_a_controller_missing_a_seed_is_neither_ranked_nor_paired(
    runs: dict[int, list[RunResult]],
) -> None:
    runs[6][2] = RunResult("queue", "failed", "locust exited with code 2")
    assert "queue" not in complete(runs) and best_adaptive(runs) == "ppo"
    assert all("queue" not in (p.controller, p.other) for p in paired(runs))
    assert stats(runs)["queue"]["goodput_rps"].n == 2


def test_summary_json_is_strict_and_the_demo_reads_it(
    runs: dict[int, list[RunResult]], tmp_path: Path
) -> None:
    runs[5][1] = ok("aimd", 110.0, p99=math.nan)
    path = tmp_path / "bench-co-surge.json"
    path.write_text(json.dumps(summary_json("co-surge", runs, "tsadapt lab bench", 90.0),
                               allow_nan=False))  # fmt: skip
    data = json.loads(path.read_text())
    assert data["seeds"] == [5, 6, 7] and data["best_adaptive"] == "queue"
    assert data["controllers"]["aimd"]["per_seed"]["5"]["p99_ms"] is None
    assert best_adaptive_from_report(path, scenario="co-surge") == "queue"


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (None, "no multi-seed bench report"),
        ("{not json", "not a readable JSON"),
        ({"version": 99}, "version"),
        ({"version": 1, "scenario": "surge", "seeds": [5], "best_adaptive": "queue"}, "seeds"),
        ({"version": 1, "scenario": "surge", "seeds": [5, 6], "best_adaptive": "static"},
         "best_adaptive"),
        ({"version": 1, "scenario": "bursty", "seeds": [5, 6], "best_adaptive": "ppo"},
         "scenario"),
    ],
)  # fmt: skip
def test_a_missing_or_malformed_report_is_a_clear_error(
    tmp_path: Path, content: object, field: str
) -> None:
    path = tmp_path / "bench-surge.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ReportError, match=field):
        best_adaptive_from_report(path, scenario="surge")


def test_the_demo_takes_its_controller_from_the_report_before_any_server(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    with pytest.raises(ReportError, match=r"bench-surge\.json.*--bench-s 0"):
        run_demo(workdir, 10, 2, 30.0, scenario="surge", results_dir=tmp_path / "results")
    assert not workdir.exists()


def test_multi_seed_report_has_the_summary_pairs_and_each_seed(
    runs: dict[int, list[RunResult]], tmp_path: Path
) -> None:
    path = resolve_scenario("co-surge")
    scenario = load_scenario(path)
    schedules = {s: scenario_schedule(scenario, s, 5.0) for s in runs}
    cfg = BenchConfig(scenario="co-surge", seeds=3, command="tsadapt lab bench --seeds 3")
    md = write_markdown(tmp_path / "bench-co-surge.md", cfg, scenario, schedules, runs,
                        "2026-11-30 00:00", 1.0)  # fmt: skip
    text = md.read_text()
    assert "## Across 3 seeds" in text and "Best adaptive controller" in text
    assert "**queue**" in text and "### Paired against the best other controller" in text
    assert "| aimd | queue | s5: -5.00, s6: -2.00, s7: -4.00 | -3.67 | 0 / 0 / 3 | - |" in text
    assert "| queue | 3/3 | " in text and "114.67 ± 1.53" in text
    assert all(f"## Seed {s}" in text for s in runs)


def test_cli_takes_seeds_and_peers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--scenario", "surge", "--seeds", "3", "--peers",
                              "rayserve"])  # fmt: skip
    assert args.seeds == 3 and args.peers == "rayserve"
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--scenario", "surge", "--seeds", "0"])
    assert main(["lab", "bench", "--scenario", "surge", "--peers", "triton"]) == 2
    assert "--peers: unknown peer 'triton'" in capsys.readouterr().err
    assert main(["lab", "bench", "--scenario", "surge", "--controllers", ""]) == 2
    assert "--controllers: nothing to run" in capsys.readouterr().err
