"""``tsadapt lab simulate`` / ``evaluate`` through argparse (the lab module's register())."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tsadapt.cli.lab.simulate import register

REPO = Path(__file__).resolve().parent.parent
FIELDS = (
    "slo_attainment",
    "goodput_rps",
    "p50_ms",
    "p99_ms",
    "worker_seconds",
    "reconfigurations",
    "requests",
    "rejected",
)


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    return args.func(args)


@pytest.fixture()
def small_scenario(tmp_path: Path) -> Path:
    p = tmp_path / "small.yaml"
    p.write_text(
        "duration_s: 20\nseed: 5\ndevices: [{name: cpu, cores: 2}]\n"
        "models:\n"
        "  - {name: a, slo_ms: 100, profile: {alpha_ms: 2, beta_ms: 5}, min_workers: 1,"
        " max_workers: 2, max_batch: 16}\n"
        "  - {name: b, slo_ms: 60, profile: {alpha_ms: 0.5, beta_ms: 2}, min_workers: 1,"
        " max_workers: 2, max_batch: 32}\n"
        "workload:\n  - {model: a, kind: bursty, base_rate: 20, spike_rate: 150, spike_s: 5,"
        " period_s: 10}\n  - {model: b, kind: poisson, rate: 80}\n"
        "budget: {workers: 3}\n"
    )
    return p


@pytest.mark.parametrize("policy", ["static", "aimd", "queue"])
def test_simulate_json(policy: str, small_scenario: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        _run(
            [
                "simulate",
                "--scenario",
                str(small_scenario),
                "--policy",
                policy,
                "--seed",
                "1",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    for f in FIELDS:
        assert f in out
        for m in ("a", "b"):
            assert f in out["models"][m]
    assert 0.0 <= out["slo_attainment"] <= 1.0
    assert out["requests"] == sum(out["models"][m]["requests"] for m in ("a", "b"))
    assert out["worker_seconds"] <= 3 * 20 + 1e-9  # the guards keep the budget
    assert out["policy"] == policy and out["seed"] == 1


def test_simulate_is_deterministic_per_seed(
    small_scenario: Path, capsys: pytest.CaptureFixture
) -> None:
    outs = []
    for seed in ("2", "2", "3"):
        _run(
            [
                "simulate",
                "--scenario",
                str(small_scenario),
                "--policy",
                "aimd",
                "--seed",
                seed,
                "--json",
            ]
        )
        outs.append(json.loads(capsys.readouterr().out))
    assert outs[0] == outs[1]
    assert outs[0]["requests"] != outs[2]["requests"]


def test_simulate_best_static_and_ppo_errors(
    small_scenario: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert (
        _run(["simulate", "--scenario", str(small_scenario), "--policy", "best-static", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["reconfigurations"] == 0 and out["static_configs"]
    # Without --policy-file, ppo is the shipped policy, as in ``tsadapt control``.
    assert _run(["simulate", "--scenario", str(small_scenario), "--policy", "ppo", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["policy"] == "ppo"
    bad = tmp_path / "bad.zip"
    bad.write_text("x")
    assert (
        _run(
            [
                "simulate",
                "--scenario",
                str(small_scenario),
                "--policy",
                "ppo",
                "--policy-file",
                str(bad),
            ]
        )
        == 2
    )
    assert "not a zip archive" in capsys.readouterr().err


def test_simulate_bad_scenario(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("duration_s: -1\n")
    assert _run(["simulate", "--scenario", str(p), "--policy", "aimd"]) == 2
    assert "duration_s" in capsys.readouterr().err


def test_evaluate_writes_table_and_plots(small_scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert (
        _run(
            [
                "evaluate",
                "--scenarios",
                str(small_scenario),
                "--policies",
                "static",
                "aimd",
                "queue",
                "--seeds",
                "2",
                "--out-dir",
                str(out),
            ]
        )
        == 0
    )
    md = (out / "simulation.md").read_text()
    assert "| aimd |" in md and "±" in md
    rows = json.loads((out / "simulation.json").read_text())
    assert len(rows) == 3 * 2
    assert (out / "simulation_goodput_rps.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--random", "-1"], "--random: need a count >= 0"),
        (["--random", "2", "--policies", "static"], "--random: needs ppo"),
        (["--random", "2", "--random-horizon", "0"], "--random-horizon"),
        (["--random", "2", "--processes", "0"], "--processes"),
        (["--random", "20000"], "--random: need 1..10000"),
    ],
)
def test_evaluate_random_names_the_bad_flag(
    small_scenario: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    flags: list[str],
    match: str,
) -> None:
    argv = ["evaluate", "--scenarios", str(small_scenario), "--seeds", "1"]
    assert _run([*argv, "--out-dir", str(tmp_path), *flags]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "simulation.md").exists()


def test_evaluate_random_writes_the_held_out_section(small_scenario: Path, tmp_path: Path) -> None:
    """The rules and PPO on two short held-out scenarios (best-static's search, the slow part,
    has tests of its own: test_evaluate_heldout.py)."""
    argv = ["evaluate", "--scenarios", str(small_scenario), "--seeds", "1", "--random", "2"]
    argv += ["--random-horizon", "4", "--out-dir", str(tmp_path)]
    argv += ["--policies", "static", "aimd", "queue", "ppo"]
    assert _run(argv) == 0
    md = (tmp_path / "simulation.md").read_text()
    assert md.startswith("# Simulation results: `tsadapt lab evaluate --scenarios")
    assert "## Random held-out scenarios (2)" in md and "4 s each (training episodes" in md
    assert "| best rule | 2 |" in md
    held = json.loads((tmp_path / "simulation-heldout.json").read_text())
    assert len(held) == 2
    for res in held:
        assert {r["policy"] for r in res["rows"]} == {"static", "aimd", "queue", "ppo"}
        assert {r["generator_seed"] for r in res["rows"]} == {res["rows"][0]["generator_seed"]}


def test_cpu_scale_runs_the_scenario_on_a_slower_machine(
    small_scenario: Path, capsys: pytest.CaptureFixture
) -> None:
    def p50(*extra: str) -> dict:
        argv = ["simulate", "--scenario", str(small_scenario), "--policy", "static", *extra]
        assert _run([*argv, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    base, slow = p50(), p50("--cpu-scale", "2")
    assert slow["scenario"] == "small-cpu2" and base["scenario"] == "small"
    assert slow["requests"] == base["requests"]  # the same arrivals ...
    assert slow["p50_ms"] > 1.3 * base["p50_ms"]  # ... served by a slower machine


@pytest.mark.parametrize("bad", ["0", "-1", "x"])
def test_cpu_scale_must_be_positive(
    bad: str, small_scenario: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["simulate", "--scenario", str(small_scenario), "--policy", "static"]
    with pytest.raises(SystemExit):
        _run([*argv, "--cpu-scale", bad])
    assert "--cpu-scale" in capsys.readouterr().err
