"""``tsadapt lab demo`` argument checks that need no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsadapt import constants as C
from tsadapt.cli.main import main
from tsadapt.experiments.bench_schedule import resolve_scenario


def test_demo_refuses_an_unknown_scenario_before_starting_a_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lab", "demo", "--scenario", "nope", "--workdir", str(tmp_path / "demo")]) == 1
    err = capsys.readouterr().err
    assert "unknown scenario 'nope'" in err and C.DEMO_SCENARIO in err
    assert not (tmp_path / "demo").exists()


def test_the_demo_scenario_exists() -> None:
    assert resolve_scenario(C.DEMO_SCENARIO).is_file()
