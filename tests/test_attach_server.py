"""torchserve-adapt on a user's own TorchServe: their model, their plain ``BaseHandler``, their
``config.properties`` (token auth on) and ``torchserve --start``; the controller attaches with
``--ts-config``/``--key-file``.

One server for the module, started the way a user starts it and stopped with
``torchserve --stop``. Load is open-loop to 127.0.0.1, bounded in count and time.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_sidecar_server import open_loop, p99
from user_server import UserServer, user_torchserve, write_user_files

from tsadapt.experiments.foreign_model import FEATURES
from tsadapt.serve.attach import find_key_file
from tsadapt.serve.server import free_port
from tsadapt.sidecar.decision_log import read_log

pytestmark = [pytest.mark.server, pytest.mark.slow]

MODEL, SECOND = "mymlp", "othermlp"
# A user's model and handler (plain BaseHandler, no tsadapt import, no batch metrics) and
# its registration defaults (batch 1, no wait, one worker): the one the soak serves too.
SLO_MS = 100
CONTROLLER = {
    "policy": "queue",
    "tick_s": 1.0,
    "window_s": 3.0,
    "worker_budget": 2,
    "cooldown_s": 2.0,
    "models": {
        MODEL: {"slo_ms": SLO_MS, "min_workers": 1, "max_workers": 1, "max_delay_ms": 20},
    },
    "default": {"slo_ms": SLO_MS, "min_workers": 1, "max_workers": 1, "max_delay_ms": 20},
}
#: Low -> high -> low (s, req/s). The queue policy sizes the batch to what arrives in a
#: quarter of the SLO: 1 at the low rate, ceil(200 x 0.025) = 5 at the high one.
PHASES = ((8.0, 20.0), (14.0, 200.0), (14.0, 20.0))


def tsadapt(
    *args: str, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tsadapt.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def user_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserServer]:
    home = tmp_path_factory.mktemp("user")
    config = write_user_files(home, (MODEL, SECOND))
    with user_torchserve(home, config, MODEL) as server:
        yield server


def payload(i: int) -> dict[str, Any]:
    return {"x": [((i * 7 + j) % 13) / 13.0 for j in range(FEATURES)]}


def batch_settings(record: dict[str, Any]) -> dict[str, int]:
    return record["settings"][MODEL]


def test_controller_follows_a_load_step_and_the_model_set(
    user_server: UserServer, tmp_path: Path
) -> None:
    ctl = tmp_path / "ctl.yaml"
    ctl.write_text(yaml.safe_dump(CONTROLLER))
    log = tmp_path / "decisions.jsonl"
    cmd = [
        sys.executable, "-m", "tsadapt.cli.main", "control", "--config", str(ctl),
        *user_server.attach(), "--decision-log", str(log), "--metrics-port", "0",
        "--max-ticks", "120",
    ]  # fmt: skip
    out_file = tmp_path / "control.out"
    with out_file.open("w") as out:  # a file, not a pipe nobody reads while it runs
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _ticks(log):
            assert proc.poll() is None, out_file.read_text()
            time.sleep(0.2)
        payloads = [payload(i) for i in range(64)]
        sent = open_loop(user_server.client, PHASES, model=MODEL, payloads=payloads)
        records = _ticks(log)
        # a second model registered through the management API is adopted via default:
        user_server.client.checked(
            "management", "POST", "models",
            params={"url": f"{SECOND}.mar", "initial_workers": 1, "synchronous": "true"},
        )  # fmt: skip
        added = _wait_for(log, lambda r: r.get("event") == "models" and SECOND in r["added"])
        for i in range(20):
            assert user_server.client.predict(SECOND, payload(i)).status_code == 200
        user_server.client.checked("management", "DELETE", f"models/{SECOND}")
        removed = _wait_for(log, lambda r: r.get("event") == "models" and SECOND in r["removed"])
        ticks_after = len(_ticks(log))
        _wait_for(log, lambda r: len(_ticks(log)) >= ticks_after + 2)
        assert proc.poll() is None, "the controller died"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    out = out_file.read_text()
    assert proc.returncode == 0, out
    assert f"models.{MODEL}" not in out  # configured and registered: no warning
    assert added and removed
    assert [s for s in sent if s.status != 200] == []
    start = records[0]["time_s"]
    low_end, high_end = PHASES[0][0], PHASES[0][0] + PHASES[1][0]
    phase_of = {"low": [], "high": [], "after": []}
    for r in records:
        t = r["time_s"] - start
        phase_of["low" if t < low_end else "high" if t < high_end + 2 else "after"].append(r)
    peak = max(batch_settings(r)["batch_size"] for r in phase_of["high"])
    final = batch_settings(phase_of["after"][-1])
    print(
        json.dumps(
            {
                "requests": len(sent),
                "peak_batch": peak,
                "final": final,
                "p99_high_ms": p99(sent, low_end, high_end),
            }
        )
    )
    assert max(batch_settings(r)["batch_size"] for r in phase_of["low"]) <= 2
    assert peak >= 3, [batch_settings(r) for r in phase_of["high"]]
    assert final["batch_size"] <= 2, final
    # the plain handler reports no batch metrics: the mean batch size comes from the
    # frontend's own batch count (requests per batch), so it rose with the batch size
    observed = [m for r in phase_of["high"] for m in r["observation"]["models"]]
    means = [m["mean_batch_size"] for m in observed if m["name"] == MODEL]
    assert all(v is not None for v in means) and max(means) > 1.5, means
    # the adopted model was controlled (its own settings in the log), then dropped
    logged = read_log(log)
    assert any(SECOND in r.get("settings", {}) for r in logged if r.get("event") == "tick")
    assert SECOND not in logged[-1]["settings"]


def _ticks(log: Path) -> list[dict[str, Any]]:
    return [r for r in read_log(log) if r.get("event") == "tick"] if log.exists() else []


def _wait_for(log: Path, match: Any, timeout_s: float = 30.0) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for r in read_log(log):
            if match(r):
                return r
        time.sleep(0.3)
    return None


def test_profile_init_and_ppo_on_the_users_server(user_server: UserServer, tmp_path: Path) -> None:
    body = tmp_path / "request.json"
    body.write_text(json.dumps(payload(1)))
    profile = tmp_path / f"{MODEL}.json"
    done = tsadapt(
        "profile", *user_server.attach(), "--model", MODEL, "--payload", str(body),
        "--workers", "1", "--batch-sizes", "1", "2", "4", "8", "--repeats", "2",
        "--warmup", "1", "--out", str(profile),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(profile.read_text())
    # a tiny MLP's batch time is flat (alpha ~ 0, either sign): check the fit exists
    assert all(math.isfinite(v) for v in doc["fit"]["1"].values()), doc["fit"]
    # a plain handler reports no handler time: the client's time per batch is used
    assert all(math.isnan(p["handler_ms"]) and p["client_ms"] > 0 for p in doc["points"])
    assert sorted({p["batch"] for p in doc["points"]}) == [1, 2, 4, 8]
    assert (doc["format"], doc["version"]) == ("tsadapt-profiles", 1)
    assert [(r["workers"], r["batch_sizes"]) for r in doc["profiles"]] == [(1, [1, 2, 4, 8])]
    # the profiler put the model back as it found it
    assert user_server.client.describe(MODEL)["batchSize"] == 1

    unasked = tsadapt("control", "init", *user_server.attach(), "--profile", str(profile))
    assert unasked.returncode == 2 and not unasked.stdout  # no SLO invented
    assert f"no SLO for {MODEL}" in unasked.stderr and "--slo-from-profile" in unasked.stderr
    init = tsadapt(
        "control", "init", *user_server.attach(), "--profile", str(profile), "--slo-from-profile"
    )
    assert init.returncode == 0, init.stderr
    config = yaml.safe_load(init.stdout)
    entry = config["models"][MODEL]
    # the rule sets the SLO at twice the batch-8 latency, so batching up to 8 fits it
    assert entry["slo_ms"] >= 10 and 8 <= entry["max_batch"] <= 32
    assert "slo_ms from --slo-from-profile: 2 x" in init.stdout
    assert "default" not in config and "# Tune:" in init.stdout
    ctl = tmp_path / "ctl.yaml"
    ctl.write_text(init.stdout)

    log = tmp_path / "ppo.jsonl"
    ppo = tsadapt(
        "control", "--config", str(ctl), "--policy", "ppo", *user_server.attach(),
        "--decision-log", str(log), "--metrics-port", "0", "--max-ticks", "4",
        "--profile", str(profile),
    )  # fmt: skip
    assert ppo.returncode == 0, ppo.stdout + ppo.stderr
    ticks = _ticks(log)
    assert len(ticks) == 4 and all(MODEL in r["settings"] for r in ticks)
    assert all(a["ok"] for r in ticks for a in r["applied"])


def test_key_file_is_found_in_the_servers_working_directory(user_server: UserServer) -> None:
    assert find_key_file(user_server.config) == user_server.key_file
    status = tsadapt("status", "--ts-config", str(user_server.config), "--json")
    assert status.returncode == 0, status.stderr
    assert [m["model"] for m in json.loads(status.stdout)["models"]] == [MODEL]


def test_every_error_names_the_problem(user_server: UserServer, tmp_path: Path) -> None:
    ctl = tmp_path / "ctl.yaml"
    ctl.write_text(yaml.safe_dump(CONTROLLER))
    common = ("--config", str(ctl), "--metrics-port", "0", "--max-ticks", "2")
    nobody = f"http://127.0.0.1:{free_port()}"
    down = tsadapt("control", *common, *user_server.attach(), "--management-url", nobody)
    assert down.returncode == 1 and f"no TorchServe answers at {nobody}" in down.stderr
    wrong = tmp_path / "key_file.json"
    wrong.write_text(json.dumps({"management": {"key": "nope"}, "inference": {"key": "nope"}}))
    refused = tsadapt("control", *common, "--ts-config", str(user_server.config), "--key-file",
                      str(wrong))  # fmt: skip
    assert refused.returncode == 1 and f"refused the key in {wrong}" in refused.stderr
    # a configured model the server does not have: a warning naming it; the rest runs
    ghost = tmp_path / "ghost.yaml"
    ghost.write_text(yaml.safe_dump({**CONTROLLER, "models": {"ghost": {"slo_ms": 50,
                                     "max_delay_ms": 10}}}))  # fmt: skip
    log = tmp_path / "ghost.jsonl"
    watched = tsadapt("control", "--config", str(ghost), *user_server.attach(), "--metrics-port",
                      "0", "--max-ticks", "2", "--decision-log", str(log))  # fmt: skip
    assert watched.returncode == 0, watched.stderr
    assert "models.ghost: not registered on the server (registered: mymlp)" in watched.stderr
    # a payload the model cannot serve
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"y": 1}))
    refused_payload = tsadapt("profile", *user_server.attach(), "--model", MODEL, "--payload",
                              str(bad), "--workers", "1")  # fmt: skip
    assert refused_payload.returncode != 0
    assert "answered HTTP" in refused_payload.stderr and str(bad) in refused_payload.stderr
    unknown = tsadapt("profile", *user_server.attach(), "--model", "nosuch")
    assert "--model: 'nosuch' is not registered" in unknown.stderr
