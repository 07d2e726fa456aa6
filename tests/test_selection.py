"""Seed selection in ``tsadapt train``: the ranking rule, the config's errors, and a tiny
two-candidate run whose chosen file is the chosen seed's own training, bit for bit."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from tsadapt.cli.learn_commands import main
from tsadapt.cli.main import main as tsadapt_main
from tsadapt.policy.learn.ppo_train import train
from tsadapt.policy.learn.selection import (
    SCORE_TIE_RPS,
    Validation,
    better,
    candidates_dir,
    choose,
    resolve_scenario_file,
    train_selected,
)
from tsadapt.policy.learn.train_config import (
    EnvConfig,
    PPOConfig,
    RandomiseConfig,
    SelectConfig,
    TrainConfig,
    train_config_from_dict,
)
from tsadapt.policy.ppo_policy import WEIGHTS_MEMBER, load_policy_file, read_metadata


def _v(seed: int, goodput: float, worker_s: float = 100.0, reconf: float = 10.0) -> Validation:
    return Validation(seed, {"a": goodput}, {"a": worker_s}, {"a": reconf}, 1.0, 1.0)


@pytest.mark.parametrize(
    ("a", "b", "a_first"),
    [
        (_v(0, 10.0), _v(1, 9.0), True),  # more goodput wins, whatever it costs
        (_v(0, 10.0, worker_s=500), _v(1, 9.0, worker_s=100), True),
        (_v(0, 10.0, worker_s=200), _v(1, 10.0 + SCORE_TIE_RPS / 2, worker_s=100), False),
        (_v(0, 10.0, reconf=5), _v(1, 10.0, reconf=50), True),  # tie, same workers: churn
        (_v(3, 10.0), _v(1, 10.0), False),  # all tied: the lower seed
    ],
)
def test_ranking_rule(a: Validation, b: Validation, a_first: bool) -> None:
    assert better(a, b) is a_first
    assert better(b, a) is not a_first
    assert choose([a, b]) is (a if a_first else b)
    assert choose([b, a]) is (a if a_first else b)


def test_choose_needs_candidates() -> None:
    with pytest.raises(ValueError, match="no candidates"):
        choose([])


@pytest.mark.parametrize(
    ("select", "match"),
    [
        ({"candidates": 0}, "select.candidates must be an integer >= 1"),
        ({"candidates": 2}, "select.candidates > 1 needs select.scenario_files"),
        ({"seeds": []}, "select.seeds must be integers >= 0"),
        ({"seeds": [-1]}, "select.seeds must be integers >= 0"),
        ({"seeds": 5}, "select.seeds must be integers >= 0"),
        ({"scenario_files": "configs/scenarios/bursty.yaml"}, "must be a list of paths"),
        ({"processes": -1}, "select.processes"),
        ({"bogus": 1}, "select.bogus: unknown field"),
    ],
)
def test_select_config_errors_name_the_field(select: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        train_config_from_dict({"select": select})


def test_scenario_files_resolve_from_the_repo_or_fail_by_name(tmp_path: Path) -> None:
    assert resolve_scenario_file("configs/scenarios/bursty.yaml").is_file()
    with pytest.raises(ValueError, match="select.scenario_files: no such scenario file"):
        resolve_scenario_file(str(tmp_path / "missing.yaml"))


@pytest.fixture(scope="module")
def small_scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("sel") / "small.yaml"
    p.write_text(
        "duration_s: 20\nseed: 5\ndevices: [{name: cpu, cores: 2}]\n"
        "models:\n"
        "  - {name: a, slo_ms: 60, profile: {alpha_ms: 2, beta_ms: 5}, min_workers: 1,"
        " max_workers: 2, max_batch: 16}\n"
        "workload:\n  - {model: a, kind: bursty, base_rate: 40, spike_rate: 400, spike_s: 5,"
        " period_s: 10}\n"
        "budget: {workers: 2}\n"
    )
    return p


def _tiny(scenario: Path, candidates: int) -> TrainConfig:
    return TrainConfig(
        seed=3,
        total_timesteps=128,
        env=EnvConfig(episode_ticks=16, background=("static",)),
        randomise=RandomiseConfig(models=(1, 2), max_rate_rps=80.0),
        ppo=PPOConfig(n_steps=64, batch_size=64, n_epochs=1, n_envs=2, net_arch=(16,)),
        select=SelectConfig(
            candidates=candidates,
            scenario_files=(str(scenario),),
            seeds=(1,),
            processes=2,
            random_scenarios=2,
        ),
    )


@pytest.fixture(scope="module")
def chosen(
    small_scenario: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict, TrainConfig, set[int]]:
    cfg = _tiny(small_scenario, candidates=2)
    seen: set[int] = set()
    out = tmp_path_factory.mktemp("chosen") / "chosen.zip"
    meta = train_selected(cfg, out, command="pytest select", on_progress=lambda s, *_: seen.add(s))
    return out, meta, cfg, seen


def test_two_candidates_keep_the_better_seed_bit_for_bit(
    chosen: tuple[Path, dict, TrainConfig, set[int]], tmp_path: Path
) -> None:
    out, meta, cfg, seen = chosen
    sel = read_metadata(out)["selection"]
    assert sel == meta["selection"]
    assert [c["seed"] for c in sel["candidates"]] == [3, 4]
    assert seen == {3, 4}  # both candidates reported progress from their processes
    assert sel["validation_seeds"] == [1] and sel["wall_seconds"] > 0
    ranked = [
        Validation(
            c["seed"],
            {n: x["goodput_rps"] for n, x in c["scenarios"].items()},
            {n: x["worker_seconds"] for n, x in c["scenarios"].items()},
            {n: x["reconfigurations"] for n, x in c["scenarios"].items()},
            0.0,
            0.0,
        )
        for c in sel["candidates"]
    ]
    assert sel["chosen_seed"] == choose(ranked).seed == meta["seed"]
    load_policy_file(out)  # the chosen file loads like any policy file
    assert sel["random_scenarios"] == 2
    assert all(c["random_goodput_rps"] > 0 for c in sel["candidates"])  # scored, not ranked on
    kept = candidates_dir(out)
    assert sorted(p.name for p in kept.iterdir()) == ["seed3.zip", "seed4.zip"]
    with zipfile.ZipFile(out) as a, zipfile.ZipFile(kept / f"seed{meta['seed']}.zip") as b:
        assert a.read(WEIGHTS_MEMBER) == b.read(WEIGHTS_MEMBER)
    # ... and holds exactly what training the chosen seed alone writes.
    alone = tmp_path / "alone.zip"
    train(replace(cfg, seed=sel["chosen_seed"]), alone, command="pytest alone")
    with zipfile.ZipFile(out) as a, zipfile.ZipFile(alone) as b:
        assert a.read(WEIGHTS_MEMBER) == b.read(WEIGHTS_MEMBER)


def test_evaluate_reports_the_selection(
    chosen: tuple[Path, dict, TrainConfig, set[int]], small_scenario: Path, tmp_path: Path
) -> None:
    out, meta, _, _ = chosen
    argv = ["lab", "evaluate", "--scenarios", str(small_scenario), "--policies", "ppo"]
    argv += ["--policy-file", str(out), "--seeds", "1", "--out-dir", str(tmp_path)]
    assert tsadapt_main(argv) == 0
    md = (tmp_path / "simulation.md").read_text()
    seed = meta["selection"]["chosen_seed"]
    assert f"- policy selection: seed {seed} kept of 2 trained" in md


@pytest.mark.parametrize(
    ("yaml_text", "flags", "match"),
    [
        ("select: {candidates: 1}\n", ["--candidates", "0"], "select.candidates"),
        ("select: {}\n", ["--candidates", "2"], "needs select.scenario_files"),
        (
            "select: {candidates: 2, scenario_files: [nowhere.yaml]}\n",
            [],
            "no such scenario file 'nowhere.yaml'",
        ),
    ],
)
def test_train_cli_names_the_bad_select_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    yaml_text: str,
    flags: list[str],
    match: str,
) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml_text)
    out = tmp_path / "p.zip"
    rc = main(["train", "--config", str(cfg), "--out", str(out), *flags])
    assert rc == 2 and match in capsys.readouterr().err
    assert not out.exists()
