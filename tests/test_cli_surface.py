"""The command's two faces: the product at the top of ``tsadapt``, research under ``tsadapt
lab``; old command lines say where they went; bare ``tsadapt control`` runs the demo."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from tsadapt import constants as C
from tsadapt.cli import moved
from tsadapt.cli.main import TOP_LEVEL, build_parser, main
from tsadapt.sidecar.decision_log import read_log

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ["plugin", "train", "profile", "control", "status", "packrat", "lab"]
MAX_TOP_LEVEL = 8


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-commands of ``parser`` (argparse keeps them in a sub-parsers action)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return subs[0].choices if subs else {}


def test_the_top_level_is_the_product_and_the_rest_is_in_the_lab() -> None:
    top = _choices(build_parser())
    assert list(top) == PRODUCT or list(top) == [*PRODUCT[:6], "trace", "lab"]
    assert len(top) <= MAX_TOP_LEVEL
    lab = _choices(top["lab"])
    for name in ("bench", "simulate", "sim-bench", "evaluate", "fidelity", "fleet", "scaleout"):
        assert name in lab
    for name in ("gpu-check", "demo", "serve", "archive", "demo-models", "packrat", "plugin"):
        assert name in lab
    assert "tsadapt.cli.trace_commands" in TOP_LEVEL  # its registration point


@pytest.mark.parametrize(
    ("argv", "new"),
    [
        (["bench", "--scenario", "surge"], "tsadapt lab bench"),
        (["-v", "evaluate"], "tsadapt lab evaluate"),
        (["serve", "start"], "tsadapt lab serve"),
        (["serve", "status", "--json"], "tsadapt status"),
        (["models", "profile"], "tsadapt lab demo-models"),
        (["packrat", "bench-planner"], "tsadapt lab packrat bench-planner"),
        (["plugin", "check-telemetry"], "tsadapt lab plugin check-telemetry"),
    ],
)
def test_an_old_command_says_where_it_went(
    argv: list[str], new: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == moved.EXIT_MOVED
    assert capsys.readouterr().err.strip().endswith(f"-> {new}")


@pytest.mark.parametrize(
    "argv", [["packrat", "plan"], ["plugin", "path"], ["control"], ["lab", "bench"]]
)
def test_a_current_command_is_not_taken_for_a_moved_one(argv: list[str]) -> None:
    assert moved.where(argv) is None


def test_every_moved_command_exists_where_it_went() -> None:
    parser = build_parser()
    for new in set(moved.MOVED.values()):
        node = parser
        for word in new.split()[1:]:
            assert word in _choices(node), new
            node = _choices(node)[word]


def test_a_config_without_slos_names_the_file_and_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("policy: queue\nmodels:\n  mlp: {min_workers: 1, max_workers: 2}\n")
    assert main(["control", "--config", str(config), "--management-url", "http://x"]) == 1
    err = capsys.readouterr().err
    assert "models.mlp.slo_ms" in err and str(config) in err
    assert "tsadapt control init --slo-ms MS" in err and "--scenario" in err


@pytest.mark.server
@pytest.mark.slow
def test_bare_control_runs_the_demo_on_the_demo_server(torchserve, tmp_path: Path) -> None:
    """No --config, no --scenario: the shipped demo config with the demo scenario's SLOs."""
    log = tmp_path / "bare.jsonl"
    done = subprocess.run(
        [
            sys.executable, "-m", "tsadapt.cli.main", "control",
            "--workdir", str(torchserve.workdir), "--decision-log", str(log),
            "--metrics-port", "0", "--max-ticks", "2",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the demo config configs/controller.yaml with the SLOs of scenario " in done.stdout
    assert repr(C.DEMO_SCENARIO) in done.stdout
    ticks = [r for r in read_log(log) if r.get("event") == "tick"]
    assert len(ticks) == 2 and {"image", "text", "tabular"} <= set(ticks[-1]["settings"])


def test_the_product_commands_load_no_experiment_code() -> None:
    """Without ``lab`` on the command line the parser imports neither experiments/ nor the
    extras' stacks (the sidecar's start-up and memory)."""
    probe = (
        "import sys; from tsadapt.cli.main import build_parser; build_parser(lab=False); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'gymnasium', 'stable_baselines3', 'locust', 'matplotlib') "
        "or m.startswith('tsadapt.experiments')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
