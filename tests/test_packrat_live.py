"""Packrat on a real TorchServe: live switches under load, the online loop, the CLI.

A dedicated server (text model only) so the worker, thread and batch changes here never
leak into the shared session server.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tsadapt.cli.main import main as tsadapt_main
from tsadapt.cli.packrat_commands import main as packrat_main
from tsadapt.constants import BATCH_ID_HEADER
from tsadapt.experiments.loadgen import open_loop, send_requests
from tsadapt.experiments.packrat_switch import run_switches
from tsadapt.handlers.catalog import demo_model
from tsadapt.handlers.placement import PLACEMENT_HEADER, PLACEMENT_SUBDIR
from tsadapt.packrat_cpu.apply import ServingConfig, apply_config
from tsadapt.packrat_cpu.online import OnlineConfig, OnlineReconfigurer
from tsadapt.packrat_cpu.profile_table import ProfileTable
from tsadapt.plugin.adapt_client import AdaptClient
from tsadapt.serve.server import RunningServer, ServerConfig, start, stop

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 usable cores"),
]

MODEL = "text"
CORES = tuple(sorted(os.sched_getaffinity(0))[:2])
FAT = ServingConfig(1, 2, 8)
THIN = ServingConfig(2, 1, 4)
#: The online-loop test's load, as a multiple of what batch 1 serves on this box right now
#: (measured in the test: a fixed 150 req/s built no queue on a fast day, CI run of f4e8205).
OVERLOAD = 1.5


@pytest.fixture(scope="module")
def text_server(tmp_path_factory: pytest.TempPathFactory, model_store: Path) -> Iterator:
    config = ServerConfig.with_free_ports(
        workdir=tmp_path_factory.mktemp("packrat-server"),
        model_store=model_store,
        models=(MODEL,),
        job_queue_size=1000,  # the online test overloads batch-1 workers until it re-plans
    )
    server = start(config)
    try:
        yield server
    finally:
        stop(config.workdir)


def _placements(server: RunningServer, n: int = 30) -> dict[str, str]:
    """worker pid -> placement header, from ``n`` sequential requests."""
    client = server.client()
    payload = demo_model(MODEL).example(np.random.default_rng(0))
    seen: dict[str, str] = {}
    for _ in range(n):
        resp = client.predict(MODEL, payload)
        assert resp.status_code == 200
        seen[resp.headers[BATCH_ID_HEADER].split("-")[0]] = resp.headers[PLACEMENT_HEADER]
    return seen


@pytest.mark.slow
def test_switches_under_load_lose_no_request_and_report_the_spike(
    text_server: RunningServer, record_property
) -> None:
    client = text_server.client(timeout_s=120)
    adapt = AdaptClient(client)
    placement_dir = Path(text_server.workdir) / PLACEMENT_SUBDIR
    run = run_switches(
        client, adapt, placement_dir, MODEL, [FAT, THIN, FAT, THIN], 40.0, 6.0, seed=3
    )
    spikes = [s.to_json() for s in run.spikes]
    record_property("packrat_switch_spikes", json.dumps(spikes))
    print(json.dumps(spikes, indent=1))
    assert run.sent > 500
    assert run.failed == 0, f"{run.failed} of {run.sent} requests failed during switches"
    assert [str(r.after) for r in run.reports] == [str(THIN), str(FAT), str(THIN)]
    assert all(s.disturbed_s >= 0 and s.spike_ratio > 0 for s in run.spikes)

    # Now 2 x <1 thread, batch 4>: two workers, each on its own single core.
    described = client.describe(MODEL)
    assert described["minWorkers"] == 2 and described["batchSize"] == 4
    placements = _placements(text_server)
    assert len(placements) == 2
    threads = {p.split("/")[2] for p in placements.values()}
    cores = sorted(p.split("/")[3] for p in placements.values())
    assert threads == {"1"}
    assert cores == [str(c) for c in CORES]


def test_apply_cli_switches_and_rejects_bad_plans(
    text_server: RunningServer, tmp_path: Path, capsys
) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"instances": [{"threads": 2, "batch": 8}]}))
    workdir = text_server.workdir
    assert packrat_main(["packrat", "apply", "--model", MODEL, "--plan", str(plan),
                         "--workdir", workdir, "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["after"] == FAT.to_json()
    assert set(_placements(text_server).values()) == {f"{report['placement']['generation']}/0/2/"
                                                     + ",".join(map(str, CORES))}  # fmt: skip

    bad = tmp_path / "hetero.json"
    hetero = {"instances": [{"threads": 1, "batch": 4}, {"threads": 1, "batch": 8}]}
    bad.write_text(json.dumps(hetero))
    cases = [
        (["--plan", str(bad)], "heterogeneous"),
        (["--plan", str(tmp_path / "missing.json")], "no such file"),
        (["--config", "9x1x4"], "--config"),
        (["--config", "2x1"], "--config"),
    ]
    for flags, message in cases:
        code = packrat_main(["packrat", "apply", "--model", MODEL, *flags, "--workdir", workdir])
        assert code == 2, flags
        assert message in capsys.readouterr().err
    code = packrat_main(["packrat", "apply", "--model", "nope", "--config", "1x1x1",
                         "--workdir", workdir])  # fmt: skip
    assert code == 1
    assert "nope" in capsys.readouterr().err
    assert client_ok(text_server)


def client_ok(server: RunningServer) -> bool:
    """The model still serves after the refused switches."""
    payload = demo_model(MODEL).example(np.random.default_rng(1))
    return server.client().predict(MODEL, payload).status_code == 200


@pytest.mark.slow
def test_online_loop_grows_the_batch_when_the_queue_builds(text_server: RunningServer) -> None:
    client = text_server.client(timeout_s=120)
    adapt = AdaptClient(client)
    placement_dir = Path(text_server.workdir) / PLACEMENT_SUBDIR
    apply_config(client, adapt, placement_dir, MODEL, ServingConfig(2, 1, 1))
    payload = demo_model(MODEL).example(np.random.default_rng(2))
    # closed loop, 64 in flight (the open-loop sender's bound): what batch 1 serves
    unbatched, _ = send_requests(client, MODEL, [payload] * 600, 64)
    assert unbatched.failed == 0
    rate = OVERLOAD * unbatched.throughput_rps
    print(json.dumps({"unbatched_rps": unbatched.throughput_rps, "offered_rps": rate}))
    latency = {(t, b): (2.0 + 2.0 * b) / t**0.5 for t in (1, 2) for b in (1, 2, 4, 8, 16, 32)}
    loop = OnlineReconfigurer(
        client,
        adapt,
        placement_dir,
        MODEL,
        ProfileTable.from_mapping(latency),
        OnlineConfig(cores=2, min_dwell_s=2.0),
    )
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    try:
        result = open_loop(client, MODEL, payload, rate, 12.0, np.random.default_rng(4))
    finally:
        stop.set()
        thread.join(timeout=60)
    print(json.dumps({"switches": [str(r.after) for r in loop.switches]}))  # pytest -s
    assert result.failed == 0
    assert loop.samples > 50
    assert any(r.after.batch * r.after.workers >= 4 for r in loop.switches), [
        str(r.after) for r in loop.switches
    ]


def test_control_cli_runs_for_a_bounded_time_and_rejects_a_bad_profile(
    text_server: RunningServer, tmp_path: Path, capsys
) -> None:
    profile = tmp_path / "p.csv"
    profile.write_text("threads,batch,latency_ms\n1,1,3\n1,2,5\n2,1,2\n2,2,4\n")
    workdir = text_server.workdir
    args = ["packrat", "control", "--model", MODEL, "--workdir", workdir, "--duration", "2"]
    assert packrat_main([*args, "--profile", str(profile)]) == 0
    out = capsys.readouterr().out
    assert "samples" in out and "switches" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("threads,batch\n1,1\n")
    assert packrat_main([*args, "--profile", str(bad)]) == 2
    assert "--profile" in capsys.readouterr().err
    assert packrat_main([*args, "--profile", str(profile), "--sample-ms", "0"]) == 2
    assert client_ok(text_server)


@pytest.mark.slow
def test_bench_command_writes_the_report(tmp_path: Path, capsys) -> None:
    profile = tmp_path / "tabular.csv"
    rows = [f"{t},{b},{0.5 + 0.05 * b / t}" for t in (1, 2) for b in (1, 2, 4)]
    profile.write_text("threads,batch,latency_ms\n" + "\n".join(rows) + "\n")
    out = tmp_path / "results"
    code = tsadapt_main(
        ["lab", "packrat", "bench", "--model", "tabular", "--profile", str(profile),
         "--batches", "2,4", "--rounds", "2", "--no-switch", "--out", str(out),
         "--workdir", str(tmp_path / "w")]
    )  # fmt: skip
    assert code == 0
    data = json.loads((out / "packrat.json").read_text())
    assert [r["batch"] for r in data["rows"]] == [2, 4]
    assert all(r["failed"] == 0 and r["speedup"] > 0 for r in data["rows"])
    assert "Mean measured speedup" in (out / "packrat.md").read_text()
    bad = [
        "lab",
        "packrat",
        "bench",
        "--model",
        "tabular",
        "--profile",
        str(profile),
        "--out",
        str(out),
    ]
    assert tsadapt_main([*bad, "--batches", "2,x"]) == 2
    assert tsadapt_main([*bad, "--batches", "64"]) == 2  # beyond the profile
    assert "--" in capsys.readouterr().err


def test_drain_rejects_bad_requests_and_drains_a_busy_worker(text_server: RunningServer) -> None:
    client = text_server.client(timeout_s=120)
    adapt = AdaptClient(client)
    client.scale_workers(MODEL, 2)
    base = f"adapt/models/{MODEL}/drain"
    for params, status in (
        ({"keep": 0}, 400),
        ({"keep": 2}, 400),
        ({"keep": 1, "timeout_ms": 10**6}, 400),
        ({"keep": 1, "nope": 1}, 400),
        ({}, 400),
    ):
        resp = client.request("management", "POST", base, params=params)
        assert resp.status_code == status, (params, resp.text)
        assert "message" in resp.json()
    assert client.request("management", "POST", "adapt/models/nope/drain?keep=1").status_code == 404
    assert client.request("management", "POST", f"adapt/models/{MODEL}").status_code == 405

    payload = demo_model(MODEL).example(np.random.default_rng(5))
    result: list = []
    load = threading.Thread(
        target=lambda: result.append(
            open_loop(client, MODEL, payload, 60.0, 4.0, np.random.default_rng(6))
        )
    )
    load.start()
    threading.Event().wait(1.5)
    drained = adapt.drain(MODEL, 1, 3000)
    client.scale_workers(MODEL, 1)
    load.join()
    assert [d["finished"] for d in drained["drained"]] == [True]
    assert result[0].failed == 0
    assert client.describe(MODEL)["minWorkers"] == 1 and client_ok(text_server)
