"""``tsadapt lab fleet simulate`` and ``evaluate`` end to end on a tiny fleet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tsadapt.cli.main import main


@pytest.mark.parametrize("shapes", ["8", "8x0", "axb", ""])
def test_train_names_bad_shapes(shapes: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["lab", "fleet", "train", "--shapes", shapes])
    assert "--shapes" in capsys.readouterr().err


def test_simulate_json_fields(capsys) -> None:
    argv = ["lab", "fleet", "simulate", "--gpus", "2", "--models", "3", "--horizon", "30", "--json"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    r = json.loads(text[text.index("{") :])
    assert r["policy"] == "nexus" and 0.0 <= r["attainment"] <= 1.0
    assert 0 < r["mean_gpus"] <= 2 and r["requests"] > 0


def test_evaluate_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["lab", "fleet", "evaluate", "--points", "2x3x30,1x9x30", "--out-dir", str(out)]
    assert main([*argv, "--seeds", "2", "--jobs", "1", "--trained", str(tmp_path / "none")]) == 0
    text = (out / "fleet.md").read_text()
    assert text.splitlines()[2].startswith("Written by `tsadapt lab fleet evaluate")
    assert "not run: no fleet policy at" in text
    assert "Not run: 9 models need a slot each; 1 GPUs x 4 slots = 4." in text
    assert (out / "fleet-diurnal-g2-m3.png").stat().st_size > 0
    rows = json.loads((out / "fleet.json").read_text())
    names = {r["policy"] for r in rows}
    assert {"static", "hold", "sidecar", "nexus"} <= names
    assert all(n.startswith("nexus x") for n in names - {"static", "hold", "sidecar", "nexus"})
    assert sorted({r["seed"] for r in rows}) == [0, 1]
    assert "| diurnal | 1 | 9 | - | - | - | - | - | infeasible |" in text
    tuning = json.loads((out / "fleet-nexus-tuning.json").read_text())
    assert {(t["mix"], t["gpus"], t["models"]) for t in tuning} == {
        ("diurnal", 2, 3),
        ("bursty", 2, 3),
    }
    for t in tuning:  # tuned on seeds that are not evaluated; exactly one setting chosen
        assert not set(t["seeds"]) & {0, 1}
        assert sum(x["chosen"] for x in t["tried"]) == 1
        assert f"{next(x for x in t['tried'] if x['chosen'])['headroom']:g}" in text


def test_bad_points_name_the_option(capsys) -> None:
    assert main(["lab", "fleet", "evaluate", "--points", "8x10"]) == 1
    assert "--points" in capsys.readouterr().err


@pytest.mark.parametrize("policy", ["sidecar", "hold"])
def test_simulate_each_baseline(policy: str, capsys) -> None:
    argv = ["lab", "fleet", "simulate", "--gpus", "2", "--models", "3", "--horizon", "20"]
    assert main([*argv, "--policy", policy]) == 0
    assert f"{policy}:" in capsys.readouterr().out


def test_simulate_on_the_committed_gpu_check_profiles(capsys) -> None:
    profiles = Path(__file__).resolve().parents[1] / "docs/results/gpu-profiles.json"
    argv = ["lab", "fleet", "simulate", "--gpus", "2", "--models", "3", "--horizon", "20", "--json"]
    assert main([*argv, "--profiles", str(profiles)]) == 0
    text = capsys.readouterr().out
    assert json.loads(text[text.index("{") :])["requests"] > 0


def test_simulate_names_a_bad_profiles_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "p.json"
    bad.write_text("{}")
    argv = ["lab", "fleet", "simulate", "--gpus", "2", "--models", "3", "--profiles", str(bad)]
    assert main(argv) == 1
    assert "--profiles" in capsys.readouterr().err


def test_evaluate_runs_only_the_policies_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["lab", "fleet", "evaluate", "--points", "2x3x20", "--out-dir", str(out), "--seeds", "1"]
    assert main([*argv, "--jobs", "1", "--policies", "hold,nexus"]) == 0
    names = {r["policy"] for r in json.loads((out / "fleet.json").read_text())}
    assert {"hold", "nexus"} <= names and not {"static", "sidecar", "ppo"} & names
    assert "not run: not requested (--policies)" in (out / "fleet.md").read_text()


@pytest.mark.parametrize("policies", ["nexus,bogus", ","])
def test_evaluate_names_bad_policies(policies: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["lab", "fleet", "evaluate", "--policies", policies])
    assert "--policies" in capsys.readouterr().err
