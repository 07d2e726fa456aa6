"""The report helpers every writer under docs/results/ shares: the command that wrote a
report (its first line) and the paths it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsadapt.constants import REPO_DIR
from tsadapt.markdown import rel, typed_command


@pytest.mark.parametrize(
    ("argv", "within", "expected"),
    [
        (["-v", "lab", "fleet", "train", "--gpus", "8"], None, "tsadapt lab fleet train --gpus 8"),
        (["lab", "fleet", "train"], None, "tsadapt lab fleet train"),
        (
            ["--verbose", "lab", "fidelity", "run", "--out", "a b"],
            None,
            "tsadapt lab fidelity run --out 'a b'",
        ),
        (
            ["-v", "lab", "bench", "--scenario", "surge"],
            "bench",
            "tsadapt lab bench --scenario surge",
        ),
        (["lab", "demo", "--scenario", "surge"], "bench", ""),
    ],
)
def test_typed_command(argv: list[str], within: str | None, expected: str) -> None:
    assert typed_command(argv, within=within) == expected


def test_typed_command_reads_sys_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tsadapt -v fleet train`` once wrote "fleet train train"."""
    monkeypatch.setattr("sys.argv", ["tsadapt", "-v", "fleet", "train", "--seed", "3"])
    assert typed_command() == "tsadapt fleet train --seed 3"


def test_rel_inside_and_outside_the_checkout(tmp_path: Path) -> None:
    assert rel(REPO_DIR / "docs" / "results" / "x.md") == "docs/results/x.md"
    assert rel(tmp_path / "x.md") == str(tmp_path / "x.md")


def test_command_of_prefers_what_main_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main(argv)`` in-process: the report names argv, not the host process's sys.argv."""
    import argparse

    from tsadapt.markdown import TYPED_ARGV, command_of

    monkeypatch.setattr("sys.argv", ["pytest", "-x", "tests"])
    args = argparse.Namespace(**{TYPED_ARGV: ["-v", "fleet", "train", "--gpus", "2"]})
    assert command_of(args) == "tsadapt fleet train --gpus 2"
    assert command_of(argparse.Namespace()) == "tsadapt tests"
