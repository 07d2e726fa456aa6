"""``tsadapt packrat profile``: validation, and one real small profile of the tabular model."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import pytest

from tsadapt.cli.packrat_commands import EXIT_BAD_INPUT, EXIT_OK, main
from tsadapt.packrat_cpu import profiler as prof
from tsadapt.packrat_cpu import profiler_config as pconf
from tsadapt.packrat_cpu.planner import plan
from tsadapt.packrat_cpu.profile_table import load_profile
from tsadapt.packrat_cpu.profiler_output import CSV_COLUMNS

USABLE = pconf.usable_cores()
REAL_THREADS = 2 if len(USABLE) >= 2 else 1
REAL_BATCHES = (1, 4)


def _profile_cli(*args: str) -> int:
    return main(["packrat", "profile", *args])


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("args", "flag", "text"),
    [
        (["--batches", "1,x"], "--batches", "'x' is not an integer"),
        (["--batches", ""], "--batches", "must not be empty"),
        (["--batches", "1,,2"], "--batches", "'' is not an integer"),
        (["--batches", "0,2"], "--batches", "positive integers only, got 0"),
        (["--batches", "-4"], "--batches", "positive integers only, got -4"),
        (["--max-threads", "0"], "--max-threads", "must be a positive integer, got 0"),
        (["--max-threads", "two"], "--max-threads", "'two' is not an integer"),
        (["--max-threads", str(len(USABLE) + 1)], "--max-threads", "exceeds the"),
        (["--threads", "0"], "--threads", "positive integers only, got 0"),
        (["--threads", "1,2"], "--threads", "2 exceeds max_threads=1"),
        (["--model", "resnet"], "--model", "known: image, text, tabular"),
        (["--reps", "0"], "--reps", "must be a positive integer, got 0"),
        (["--warmup", "-1"], "--warmup", "must be an integer >= 0, got -1"),
        (["--cores", "100000"], "--cores", "not usable by this process"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(
    args: list[str], flag: str, text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"--model": "tabular", "--max-threads": "1", "--out": str(tmp_path / "p.csv")}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    rc = _profile_cli(*[x for kv in base.items() for x in kv])
    err = capsys.readouterr().err
    assert rc == EXIT_BAD_INPUT
    assert err.startswith(f"tsadapt packrat: error: {flag}: "), err
    assert text in err
    assert "Traceback" not in err
    assert not (tmp_path / "p.csv").exists()


def test_out_that_is_a_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = _profile_cli("--model", "tabular", "--max-threads", "1", "--out", str(tmp_path))
    assert rc == EXIT_BAD_INPUT
    assert "tsadapt packrat: error: --out: " in capsys.readouterr().err


def test_missing_required_flag_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert _profile_cli("--max-threads", "1") == EXIT_BAD_INPUT
    assert "--model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_threads": 0}, "max_threads"),
        ({"max_threads": len(USABLE) + 1}, "max_threads"),
        ({"max_threads": True}, "max_threads"),
        ({"batches": ()}, "batches"),
        ({"batches": (1, 2.5)}, "batches"),
        ({"batches": "1,2"}, "batches"),
        ({"threads": (0,)}, "threads"),
        ({"reps": 0}, "reps"),
        ({"warmup": -1}, "warmup"),
        ({"model": "nope"}, "model"),
        ({"cores": (USABLE[0], USABLE[0])}, "cores"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict[str, object], field: str) -> None:
    settings: dict[str, object] = {"model": "tabular", "max_threads": 1, **kwargs}
    with pytest.raises(ValueError, match=rf"^{field}: ") as info:
        pconf.ProfilerConfig(**settings)  # type: ignore[arg-type]
    assert isinstance(info.value, pconf.ProfilerConfigError)
    assert info.value.field == field


def test_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pconf, "usable_cores", lambda: (3, 5, 7, 9))
    config = pconf.ProfilerConfig("text", 3)
    assert config.threads == (1, 2, 3)
    assert config.cores == (3, 5, 7)
    assert config.batches == pconf.DEFAULT_BATCHES
    assert (config.warmup, config.reps) == (10, 100)
    assert config.out == Path("runs/packrat/text.profile.csv")
    assert config.points[:2] == ((1, 1), (1, 2))
    assert len(config.points) == 3 * len(pconf.DEFAULT_BATCHES)
    explicit = pconf.ProfilerConfig("text", 3, threads=(3, 1, 3), batches=(8, 2), warmup=0)
    assert (explicit.threads, explicit.batches, explicit.warmup) == ((1, 3), (2, 8), 0)
    with pytest.raises(ValueError, match="max_threads: 5 exceeds the 4 core"):
        pconf.ProfilerConfig("text", 5)


def test_worker_failure_is_reported_without_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = "import sys; print('not json'); sys.stderr.write('boom in worker'); sys.exit(3)"
    monkeypatch.setattr(prof, "_worker_command", lambda config, t: [sys.executable, "-c", script])
    out = tmp_path / "p.csv"
    rc = _profile_cli("--model", "tabular", "--max-threads", "1", "--out", str(out))
    err = capsys.readouterr().err
    assert rc == prof.EXIT_FAILED
    assert "tsadapt packrat: error: profile failed: worker for threads=1 exited with code 3" in err
    assert "boom in worker" in err
    assert "Traceback" not in err
    assert not out.exists()


# --------------------------------------------------------------------------- real run


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One real profile: tabular, t = 1..REAL_THREADS, b in {1, 4}, warm-up 2, 5 reps."""
    out = tmp_path_factory.mktemp("packrat-profile") / "nested" / "tabular.profile.csv"
    readies: list[dict[str, object]] = []
    real_profile = prof.profile

    def spy(config, on_point=None, on_ready=None):  # type: ignore[no-untyped-def]
        def record(message: dict[str, object]) -> None:
            readies.append(message)
            if on_ready is not None:
                on_ready(message)

        return real_profile(config, on_point=on_point, on_ready=record)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prof, "profile", spy)
        rc = _profile_cli(
            "--model",
            "tabular",
            "--max-threads",
            str(REAL_THREADS),
            "--batches",
            ",".join(map(str, REAL_BATCHES)),
            "--warmup",
            "2",
            "--reps",
            "5",
            "--out",
            str(out),
        )
    return {"rc": rc, "out": out, "readies": readies}


def test_real_profile_writes_every_point(real_run: dict[str, object]) -> None:
    assert real_run["rc"] == EXIT_OK
    path = real_run["out"]
    assert isinstance(path, Path)
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    assert tuple(header) == CSV_COLUMNS
    expected = [(t, b) for t in range(1, REAL_THREADS + 1) for b in REAL_BATCHES]
    assert [(int(r[0]), int(r[1])) for r in rows] == expected  # sorted by threads, batch
    for row in rows:
        mean, lo, hi, std = map(float, row[2:])
        assert 0 < lo <= mean <= hi
        assert std >= 0


def test_real_profile_pins_each_worker(real_run: dict[str, object]) -> None:
    readies = real_run["readies"]
    assert isinstance(readies, list)
    assert [m["threads"] for m in readies] == list(range(1, REAL_THREADS + 1))
    for message in readies:
        t = message["threads"]
        assert message["torch_threads"] == t
        assert message["cores"] == list(USABLE[:t])
        assert message["pinned_threads"] >= 1
        assert message["pid"] != os.getpid()


def test_real_profile_feeds_the_planner(real_run: dict[str, object]) -> None:
    table = load_profile(real_run["out"])  # type: ignore[arg-type]
    assert table.threads == tuple(range(1, REAL_THREADS + 1))
    assert table.batches == REAL_BATCHES
    result = plan(table, REAL_THREADS, 8)
    assert result.batch == 8
    assert result.threads_used <= REAL_THREADS
    assert (
        main(["packrat", "plan", "--profile", str(real_run["out"]), "--cores", "1", "--batch", "4"])
        == EXIT_OK
    )
