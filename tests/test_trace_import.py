"""``tsadapt trace``: access logs and timestamp CSVs into ``trace`` workload files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tsadapt.cli.main import main
from tsadapt.policy.sim.scenario import scenario_from_dict
from tsadapt.policy.sim.static_run import run_static
from tsadapt.policy.sim.trace_import import (
    TraceImportError,
    TraceTransform,
    read_access_log,
    read_timestamp_csv,
    transform,
    write_trace_files,
)
from tsadapt.policy.sim.workload_files import workload_from_dict
from tsadapt.policy.types import ModelSettings

#: Lines as TorchServe 0.12 writes them to logs/access_log.log (management, ping, predictions
#: with and without a version, a 503).
ACCESS_LOG = """\
2026-12-07T04:23:17,391 - /127.0.0.1:33314 "GET /ping HTTP/1.1" 200 14
2026-12-07T04:23:19,303 - /127.0.0.1:36450 "POST /models?url=image.mar&model_name=image&batch_size=8 HTTP/1.1" 200 1892
2026-12-07T04:23:22,812 - /127.0.0.1:46974 "GET /models/image HTTP/1.1" 200 4
2026-12-07T04:23:23,000 - /127.0.0.1:46975 "POST /predictions/image HTTP/1.1" 200 100
2026-12-07T04:23:23,250 - /127.0.0.1:46976 "POST /predictions/text/1.0 HTTP/1.1" 200 50
2026-12-07T04:23:24,500 - /127.0.0.1:46977 "POST /predictions/image?x=1 HTTP/1.1" 503 0

2026-12-07T04:23:25,900 - /127.0.0.1:46978 "POST /predictions/image HTTP/1.1" 200 900
"""  # noqa: E501


@pytest.fixture
def access_log(tmp_path: Path) -> Path:
    p = tmp_path / "logs" / "access_log.log"
    p.parent.mkdir()
    p.write_text(ACCESS_LOG)
    return p


def test_access_log_arrivals_are_log_time_minus_duration(access_log: Path) -> None:
    got = read_access_log(access_log)
    assert sorted(got) == ["image", "text"]
    t0 = got["image"][0]
    np.testing.assert_allclose(got["image"] - t0, [0.0, 1.6, 2.1], atol=1e-6)
    np.testing.assert_allclose(got["text"] - t0, [0.3], atol=1e-6)
    assert list(read_access_log(access_log, ["text"])) == ["text"]


def test_access_log_unknown_model_is_named(access_log: Path) -> None:
    with pytest.raises(TraceImportError, match=r"model\(s\) \['nope'\].*\['image', 'text'\]"):
        read_access_log(access_log, ["nope"])


@pytest.mark.parametrize(
    "bad",
    [
        "this is not a log line",
        '2026-12-07T04:23:23,000 - /127.0.0.1:1 "POST /predictions/image HTTP/1.1" 200',
        '2026-13-07T04:23:23,000 - /127.0.0.1:1 "POST /predictions/image HTTP/1.1" 200 5',
    ],
)
def test_malformed_access_line_names_file_and_line(tmp_path: Path, bad: str) -> None:
    lines = ACCESS_LOG.splitlines()
    lines.insert(4, bad)
    p = tmp_path / "access_log.log"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceImportError, match=r"access_log\.log:5: "):
        read_access_log(p)


def test_azure_csv_timestamps(tmp_path: Path) -> None:
    p = tmp_path / "azure.csv"
    p.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:16:46.6805901,10,1\n"
    )
    t = read_timestamp_csv(p)
    np.testing.assert_allclose(t - t[0], [0.0, 4.314579, 60.0000001], atol=1e-7)
    with pytest.raises(TraceImportError, match="no column 'nope'"):
        read_timestamp_csv(p, "nope")


def test_numeric_csv_any_column(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("id,t\na,3.5\nb,1.25\n")
    np.testing.assert_allclose(read_timestamp_csv(p, "T"), [1.25, 3.5])
    q = tmp_path / "plain.csv"
    q.write_text("2\n1\n")
    np.testing.assert_allclose(read_timestamp_csv(q), [1.0, 2.0])


def test_bad_csv_line_named(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("timestamp\n1\n2\nsoon\n")
    with pytest.raises(TraceImportError, match=r"t\.csv:4: timestamp 'soon'"):
        read_timestamp_csv(p)


def test_transform_slices_shifts_and_scales() -> None:
    x = np.arange(100, 200, 0.5)  # 2/s from t=100 to 199.5
    out = transform(x, TraceTransform(start_s=10, duration_s=20, time_scale=0.5))
    assert out[0] == 0.0 and out[-1] == pytest.approx(9.75)
    assert out.size == 40  # 20 source seconds at 2/s, played in 10 s
    aligned = transform(x, TraceTransform(start_s=10, duration_s=20), origin=90.0)
    np.testing.assert_allclose(aligned[:2], [0.0, 0.5])  # source 100 = origin 90 + 10


@pytest.mark.parametrize("rate_scale", [0.25, 1.0, 2.5])
def test_rate_scale_thins_or_multiplies(rate_scale: float) -> None:
    x = np.sort(np.random.default_rng(1).uniform(0, 1000, 20_000))
    out = transform(x, TraceTransform(rate_scale=rate_scale, seed=3))
    assert out.size == pytest.approx(20_000 * rate_scale, rel=0.03)
    assert np.all(np.diff(out) >= 0) and out[0] >= 0


@pytest.mark.parametrize(
    "kw", [{"start_s": -1}, {"duration_s": 0}, {"time_scale": 0}, {"rate_scale": -2}]
)
def test_transform_options_checked(kw: dict) -> None:
    with pytest.raises(TraceImportError):
        TraceTransform(**kw)


def test_written_file_is_a_simulator_trace(tmp_path: Path, access_log: Path) -> None:
    out = tmp_path / "traces"
    assert main(["trace", "--access-log", str(access_log), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["image.csv", "text.csv"]
    assert (out / "image.csv").stat().st_mode & 0o777 == 0o644
    text = (out / "image.csv").read_text()
    assert text.startswith("# Arrivals of model image") and "Command: tsadapt trace" in text
    w = workload_from_dict({"kind": "trace", "path": "traces/image.csv"}, base_dir=tmp_path)
    np.testing.assert_allclose(w.arrivals(10.0, np.random.default_rng(0)), [0.0, 1.6, 2.1])
    sc = scenario_from_dict(
        {
            "duration_s": 5,
            "seed": 1,
            "models": [
                {"name": m, "slo_ms": 100, "profile": {"alpha_ms": 1, "beta_ms": 1},
                 "min_workers": 1, "max_workers": 1, "max_batch": 4}
                for m in ("image", "text")
            ],
            "workload": [{"model": m, "kind": "trace", "path": f"traces/{m}.csv"}
                         for m in ("image", "text")],
            "budget": {"workers": 2},
        },
        base_dir=tmp_path,
    )  # fmt: skip
    res = run_static(sc, {m: ModelSettings(1, 0, 1) for m in ("image", "text")}, seed=0)
    assert res.per_model["image"].requests == 3 and res.per_model["text"].requests == 1


def test_bad_input_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = tmp_path / "good.csv"
    good.write_text("timestamp\n0\n1\n")
    out = tmp_path / "out.csv"
    out.write_text("previous\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp\n0\n1,\n2023-99-01 00:00:00\n")
    assert main(["trace", "--csv", str(bad), "--model", "m", "--out", str(out)]) == 2
    assert "bad.csv:4" in capsys.readouterr().err
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "good.csv", "out.csv"]


def test_one_csv_for_several_models_refused(
    tmp_path: Path, access_log: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["trace", "--access-log", str(access_log), "--out", str(tmp_path / "x.csv")]) == 2
    assert "one .csv file holds one model's arrivals" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_empty_slice_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "t.csv"
    src.write_text("timestamp\n0\n1\n")
    args = ["trace", "--csv", str(src), "--model", "m", "--start", "50", "--out"]
    assert main([*args, str(tmp_path / "o.csv")]) == 2
    assert "no arrivals in the slice" in capsys.readouterr().err


def test_write_trace_files_all_or_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "b"
    blocker.write_text("a file where a folder must be")
    with pytest.raises(OSError):
        write_trace_files({tmp_path / "a.csv": "x\n", blocker / "c.csv": "y\n"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


REPO = Path(__file__).resolve().parents[1]
AZURE = REPO / "loadtests" / "traces" / "azure-conv"


def test_azure_conv_files_match_their_readme_and_credit_the_source() -> None:
    """The README's table is the files' own figures; each file names licence and authors."""
    from tsadapt.policy.sim.scenario import load_scenario
    from tsadapt.policy.sim.trace_import import summary

    readme = (AZURE / "README.md").read_text()
    sc = load_scenario(REPO / "loadtests" / "scenarios" / "azure-conv.yaml")
    assert sc.duration_s == 120
    for m in ("image", "text", "tabular"):
        text = (AZURE / f"{m}.csv").read_text()
        assert "CC-BY 4.0" in text and "Splitwise" in text and "Command: tsadapt trace" in text
        t = sc.workload_for(m).arrivals(sc.duration_s, np.random.default_rng(0))
        row = next(r for r in readme.splitlines() if r.startswith(f"| {m}.csv"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        n, mean, peak = int(cells[2]), float(cells[3]), int(cells[4])
        assert t.size == n and round(t.size / sc.duration_s, 1) == mean
        assert int(np.bincount(t.astype(np.int64)).max()) == peak
        assert f"{n} arrivals" in summary(t)
