"""The controller sidecar against a real TorchServe: load steps, kill -9, server restart.

Load is an open-loop, thread-based sender to 127.0.0.1, bounded in time and count. Every test
puts the shared server's models back as it found them.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tsadapt.client import TorchServeClient
from tsadapt.experiments.loadgen import send_requests
from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.plugin.adapt_client import AdaptClient
from tsadapt.policy.controller_config import ControllerConfig, from_dict
from tsadapt.policy.factory import make_policy
from tsadapt.serve.server import RunningServer, ServerConfig, start, stop
from tsadapt.sidecar.decision_log import read_log
from tsadapt.sidecar.runner import Sidecar

pytestmark = pytest.mark.server

#: The text model with one intra-op thread per worker. The box's speed changes 2-4x between
#: days (and within a session), so no fixed request rate overloads batch 1 yet stays servable
#: by batching on every box: at 300 req/s the CI box needed ~25 s and batch 32 to recover
#: (CI run of fff2fca), while a fast day served 300 req/s at batch 1 under the SLO (CI run of
#: 8216019). The high rate is measured instead (``load_step``), hence 35 s of high phase.
MODEL = "text"
SLO_MS = 150.0
LOW_RPS = 20.0
#: Seconds of each phase: low, high, low again.
LOW_S, HIGH_S, AFTER_S = 12.0, 35.0, 25.0
PHASES_S = (LOW_S, HIGH_S, AFTER_S)
#: static only has to show that the step is real and that nothing changes: its queue is full
#: within a few seconds of the high phase, so a shorter run shows both (it was 72 s).
STATIC_PHASES_S = (5.0, 15.0, 5.0)
#: A deliberately poor starting point for the high phase: batch 1, no delay, one worker.
START = {"batch_size": 1, "max_batch_delay_ms": 0, "workers": 1}
#: The batched settings whose throughput bounds the high rate from above.
BATCHED = {"batch_size": 8, "max_batch_delay_ms": 5, "workers": 1}
#: Batching must raise this box's throughput at least this much for a load step between
#: the two to exist (1.6x to 2.3x measured 2026-11-29: 330 to 430 req/s at START, 690 to 750
#: at BATCHED). At 1.3x the high rate is still 14% over what START serves.
MIN_BATCHING_GAIN = 1.3
#: Requests per throughput round, and rounds (the median is kept: the box is noisy).
CAPACITY_REQUESTS, CAPACITY_ROUNDS = 600, 3
#: Threads of the open-loop sender, below TorchServe's job queue (100): no 503s.
SENDER_THREADS = 64
#: The largest batch the low load keeps: at 20 req/s and a delay of at most 10 ms a batch
#: mostly holds one request; aimd shrinks while its fill rate is under 0.3 (so stops at 3 or
#: below), queue sizes it to ceil(20 req/s x 37.5 ms) = 1. How far either grew under the high
#: load depends on the box's speed (3 here on a fast day, 32 on the CI box).
LOW_LOAD_MAX_BATCH = 3

CONFIG_FILE: dict[str, Any] = {
    "policy": "aimd",
    "tick_s": 1.0,
    "window_s": 3.0,
    # One worker: on a 2-core box a second worker only adds contention (and ~10 s of start-up).
    "worker_budget": 1,
    "cooldown_s": 2.0,
    "models": {
        MODEL: {
            "slo_ms": SLO_MS,
            "min_workers": 1,
            "max_workers": 1,
            "max_batch": 32,
            "max_delay_ms": 10,
        }
    },
}


def controller_config(policy: str) -> ControllerConfig:
    return from_dict({**CONFIG_FILE, "policy": policy})


@dataclass(frozen=True)
class Sent:
    at_s: float  # scheduled send time since the start of the load
    latency_ms: float  # from the scheduled send: time spent waiting for a sender thread counts
    status: int  # 0: no answer


def example_payloads() -> list[Any]:
    """64 different valid request bodies of the model, the same on every call."""
    return [DEMO_MODELS[MODEL].example(np.random.default_rng(i)) for i in range(64)]


def open_loop(
    client: TorchServeClient,
    phases: tuple[tuple[float, float], ...],
    model: str = MODEL,
    payloads: list[Any] | None = None,
) -> list[Sent]:
    """Send at the phases' rates on schedule, whatever the answers take; wait for all
    (``model`` and its request bodies default to MODEL's)."""
    payloads = payloads or example_payloads()
    schedule: list[float] = []
    t = 0.0
    for duration, rate in phases:
        n = int(duration * rate)
        schedule += [t + i / rate for i in range(n)]
        t += duration
    results: list[Sent] = []
    lock = threading.Lock()

    def one(i: int, at: float) -> None:
        try:
            status = client.predict(model, payloads[i % len(payloads)], timeout_s=30).status_code
        except requests.RequestException:
            status = 0
        with lock:
            results.append(Sent(at, (time.perf_counter() - t0 - at) * 1000, status))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=SENDER_THREADS) as pool:
        for i, at in enumerate(schedule):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i, at)
    assert len(results) == len(schedule)
    return sorted(results, key=lambda s: s.at_s)


def p99(sent: list[Sent], start_s: float, end_s: float) -> float:
    window = [s.latency_ms for s in sent if start_s <= s.at_s < end_s and s.status == 200]
    return float(np.percentile(window, 99)) if window else math.nan


@pytest.fixture(scope="module")
def adapt(torchserve_session: Any) -> AdaptClient:
    return AdaptClient(torchserve_session.client)


@dataclass(frozen=True)
class LoadStep:
    """The low-high-low load, its high rate set from throughputs measured on this server."""

    unbatched_rps: float  # closed-loop throughput at START
    batched_rps: float  # ... and at BATCHED

    @property
    def high_rps(self) -> float:
        """The geometric middle: as far above what START serves as below what batching does."""
        return math.sqrt(self.unbatched_rps * self.batched_rps)

    def phases(
        self, seconds: tuple[float, float, float] = PHASES_S
    ) -> tuple[tuple[float, float], ...]:
        """(seconds, req/s) of the low, high and after phases."""
        low, high, after = seconds
        return ((low, LOW_RPS), (high, self.high_rps), (after, LOW_RPS))


def throughput(torchserve: Any, adapt: AdaptClient, settings: dict[str, int]) -> float:
    """Median closed-loop req/s of the model at ``settings``, SENDER_THREADS in flight."""
    put_settings(torchserve, adapt, settings)
    payloads = example_payloads()
    requests_ = payloads * (CAPACITY_REQUESTS // len(payloads))
    send_requests(torchserve.client, MODEL, payloads, SENDER_THREADS)  # warm up
    rounds = [
        send_requests(torchserve.client, MODEL, requests_, SENDER_THREADS)[0]
        for _ in range(CAPACITY_ROUNDS)
    ]
    assert all(r.failed == 0 for r in rounds), rounds
    return float(np.median([r.throughput_rps for r in rounds]))


@pytest.fixture(scope="module")
def load_step(torchserve_session: Any, adapt: AdaptClient) -> LoadStep:
    server = torchserve_session
    before = snapshot(adapt)[MODEL]
    try:
        step = LoadStep(throughput(server, adapt, START), throughput(server, adapt, BATCHED))
    finally:
        put(server, adapt, MODEL, *before)
    print(json.dumps({**asdict(step), "high_rps": step.high_rps}))
    assert step.batched_rps >= MIN_BATCHING_GAIN * step.unbatched_rps, (
        f"batching raises this server's throughput only {step.batched_rps:.0f} / "
        f"{step.unbatched_rps:.0f} req/s: no load step overloads batch 1 yet fits batching"
    )
    return step


def snapshot(adapt: AdaptClient) -> dict[str, tuple[int, int, int]]:
    return {s.name: (s.batch_size, s.max_batch_delay_ms, s.min_workers) for s in adapt.models()}


def put(torchserve: Any, adapt: AdaptClient, name: str, batch: int, delay: int, workers: int):
    adapt.set_batching(name, batch_size=batch, max_batch_delay_ms=delay)
    if adapt.model(name).min_workers != workers:
        torchserve.client.scale_workers(name, workers)


def put_settings(torchserve: Any, adapt: AdaptClient, settings: dict[str, int]) -> None:
    """``put`` of MODEL with settings keyed as START."""
    put(
        torchserve,
        adapt,
        MODEL,
        settings["batch_size"],
        settings["max_batch_delay_ms"],
        settings["workers"],
    )


@pytest.fixture
def restore_all(torchserve: Any, adapt: AdaptClient) -> Iterator[dict[str, tuple[int, int, int]]]:
    """Every model's batching and workers before the test; put back afterwards."""
    before = snapshot(adapt)
    yield before
    for name, (batch, delay, workers) in before.items():
        put(torchserve, adapt, name, batch, delay, workers)
    assert snapshot(adapt) == before


def run_sidecar(sidecar: Sidecar) -> threading.Thread:
    thread = threading.Thread(target=sidecar.run, name="sidecar", daemon=True)
    thread.start()
    return thread


def ticks(log: Path) -> list[dict[str, Any]]:
    return [r for r in read_log(log) if r.get("event") == "tick"]


def model_settings(record: dict[str, Any]) -> dict[str, int]:
    return record["settings"][MODEL]


def observed(record: dict[str, Any]) -> dict[str, Any]:
    return next(m for m in record["observation"]["models"] if m["name"] == MODEL)


def run_step(
    torchserve: Any,
    adapt: AdaptClient,
    policy: str,
    tmp_path: Path,
    step: LoadStep,
    seconds: tuple[float, float, float] = PHASES_S,
) -> tuple[list[Sent], list[dict[str, Any]], list[dict[str, Any]]]:
    put_settings(torchserve, adapt, START)
    config = controller_config(policy)
    log = tmp_path / f"{policy}.jsonl"
    sidecar = Sidecar(
        config,
        make_policy(policy, config),
        lambda: (torchserve.client, torchserve.metrics_url),
        log,
    )
    thread = run_sidecar(sidecar)
    try:
        sent = open_loop(torchserve.client, step.phases(seconds))
    finally:
        sidecar.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()
    return sent, ticks(log), read_log(log)


def summary(
    policy: str,
    sent: list[Sent],
    records: list[dict[str, Any]],
    seconds: tuple[float, float, float] = PHASES_S,
) -> dict[str, Any]:
    """The run's figures, printed for the record; client-side p99s are from the schedule."""
    low_s, high_s, after_s = seconds
    low, high = low_s, low_s + high_s
    settings = [model_settings(r) for r in records]
    out = {
        "policy": policy,
        "p99_low_ms": p99(sent, 0, low),
        "p99_high_first_half_ms": p99(sent, low, low + high_s / 2),
        "p99_high_second_half_ms": p99(sent, low + high_s / 2, high),
        "p99_after_ms": p99(sent, high + min(10.0, after_s / 2), high + after_s),
        "failed": sum(s.status != 200 for s in sent),
        "requests": len(sent),
        "max_batch": max(s["batch_size"] for s in settings),
        "max_workers": max(s["workers"] for s in settings),
        "final": settings[-1],
        "changes": sum(len(r["applied"]) for r in records),
        "overrides": sum(len(r["overrides"]) for r in records),
    }
    print(json.dumps(out))
    return out


def test_static_changes_nothing(
    torchserve: Any, adapt: AdaptClient, restore_all, tmp_path: Path, load_step: LoadStep
) -> None:
    seconds = STATIC_PHASES_S
    sent, records, log = run_step(torchserve, adapt, "static", tmp_path, load_step, seconds)
    s = summary("static", sent, records, seconds)
    assert len(records) >= 0.8 * sum(seconds) / CONFIG_FILE["tick_s"]
    assert all(r["actions"] == [] and r["applied"] == [] for r in records)
    assert all(model_settings(r) == START for r in records)
    assert s["final"] == START
    # the step is real: requests sent in the high phase wait longer than the SLO (from their
    # scheduled send: the server-side p99 stays bounded by the sender's threads in flight)
    assert s["p99_high_second_half_ms"] > SLO_MS, s
    assert log[0]["event"] == "start" and log[-1]["event"] == "stop"


@pytest.mark.parametrize("policy", ["aimd", "queue"])
def test_policy_follows_the_load_step(
    torchserve: Any,
    adapt: AdaptClient,
    restore_all,
    tmp_path: Path,
    load_step: LoadStep,
    policy: str,
) -> None:
    sent, records, _ = run_step(torchserve, adapt, policy, tmp_path, load_step)
    s = summary(policy, sent, records)
    assert s["failed"] == 0
    start_s = records[0]["time_s"]
    low_end, high_end = LOW_S, LOW_S + HIGH_S

    def phase(r: dict[str, Any]) -> str:
        t = r["time_s"] - start_s
        return "low" if t < low_end else "high" if t < high_end + 2 else "after"

    high = [r for r in records if phase(r) == "high"]
    for r in records:  # the timeline, printed for the record (pytest -s)
        o = observed(r)
        print(
            f"t={r['time_s'] - start_s:5.1f} {phase(r):5} settings={model_settings(r)} "
            f"queue={o['queue_depth']} p99={o['p99_ms']} rate={o['arrival_rate_rps']}"
        )
    after = [r for r in records if phase(r) == "after"]
    capacity = [(model_settings(r)["batch_size"], model_settings(r)["workers"]) for r in high]
    peak_batch = max(b for b, _ in capacity)
    peak_workers = max(w for _, w in capacity)
    # raised batch size and/or workers under the high load ...
    assert peak_batch > START["batch_size"] or peak_workers > START["workers"]
    # ... which brought the server-side p99 back under the SLO before the load dropped
    last_high = [observed(r)["p99_ms"] for r in high[-6:]]
    assert any(v is not None and v <= SLO_MS for v in last_high), last_high
    # ... and went back to what the low load needs once it dropped
    final = model_settings(after[-1])
    assert final["batch_size"] <= LOW_LOAD_MAX_BATCH and final["workers"] == START["workers"], (
        final,
        capacity,
    )
    # the decision log shows every change of the settings as applied, and each one succeeded
    # (how many changes depends on the box: on a fast one aimd's first probe, batch 1 -> 3 at
    # the low load, already serves 300 req/s; CI run of ec2b143)
    changed = [
        r
        for before, r in zip([{"settings": {MODEL: START}}, *records], records, strict=False)
        if model_settings(r) != model_settings(before)
    ]
    assert changed and all(r["applied"] for r in changed)
    assert all(a["ok"] for r in records for a in r["applied"])


def test_kill_9_of_the_sidecar_loses_no_request(
    torchserve: Any, adapt: AdaptClient, restore_all, tmp_path: Path
) -> None:
    put(torchserve, adapt, MODEL, 1, 0, 1)
    config = tmp_path / "controller.yaml"
    config.write_text(json.dumps(CONFIG_FILE))  # JSON is YAML
    log = tmp_path / "kill.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "tsadapt.cli.main",
        "control",
        "--config",
        str(config),
        "--workdir",
        str(torchserve.workdir),
        "--decision-log",
        str(log),
        "--metrics-port",
        "0",
    ]
    sidecar = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    result: list[list[Sent]] = []
    loader = threading.Thread(
        target=lambda: result.append(open_loop(torchserve.client, ((20.0, 80.0),)))
    )
    try:
        loader.start()
        time.sleep(8)
        os.kill(sidecar.pid, signal.SIGKILL)
        sidecar.wait(timeout=10)
        loader.join(timeout=60)
    finally:
        if sidecar.poll() is None:
            sidecar.kill()
    sent = result[0]
    assert len(sent) == 1600
    assert [s for s in sent if s.status != 200] == []
    before = snapshot(adapt)[MODEL]
    # a restarted sidecar adopts the live settings the killed one left behind
    restarted = subprocess.run(
        [*cmd, "--max-ticks", "2", "--policy", "static"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    adopted = [r for r in read_log(log) if r.get("event") == "adopted"]
    assert len(adopted) == 2
    assert tuple(adopted[-1]["settings"][MODEL].values()) == before
    assert snapshot(adapt)[MODEL] == before


def test_sigterm_stops_the_sidecar_cleanly(torchserve: Any, tmp_path: Path) -> None:
    log = tmp_path / "term.jsonl"
    config = Path(__file__).resolve().parents[1] / "configs" / "controller.yaml"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tsadapt.cli.main",
            "control",
            "--config",
            str(config),
            "--scenario",
            "bursty",
            "--policy",
            "static",
            "--workdir",
            str(torchserve.workdir),
            "--decision-log",
            str(log),
            "--metrics-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(ticks(log) if log.exists() else []) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "controller stopped" in out
    assert read_log(log)[-1]["event"] == "stop"


def test_exporter_serves_the_sidecars_metrics(torchserve: Any, tmp_path: Path) -> None:
    config = controller_config("static")
    sidecar = Sidecar(
        config,
        make_policy("static", config),
        lambda: (torchserve.client, torchserve.metrics_url),
        tmp_path / "m.jsonl",
    )
    try:
        sidecar.start()
        sidecar.tick()
        text = requests.get(sidecar.exporter.url, timeout=5).text
    finally:
        sidecar.close()
    assert "tsadapt_controller_server_up 1" in text
    assert f'tsadapt_controller_batch_size{{model="{MODEL}"}}' in text
    assert f'tsadapt_controller_workers{{model="{MODEL}"}}' in text


def start_server(config: ServerConfig) -> RunningServer:
    """``start``, retried once: KeyFile may read key_file.json while TorchServe is still
    writing it (JSONDecodeError inside tsadapt.serve.server._wait_healthy)."""
    try:
        return start(config)
    except ValueError:
        return start(config)


def test_recovers_after_a_server_restart(model_store: Path, tmp_path: Path) -> None:
    server_config = ServerConfig.with_free_ports(
        workdir=tmp_path / "ts", model_store=model_store, models=(MODEL,)
    )
    server = start_server(server_config)
    try:
        adapt = AdaptClient(server.client(timeout_s=30))
        adapt.set_batching(MODEL, batch_size=4, max_batch_delay_ms=7)  # not the defaults
        config = controller_config("static")

        def connect() -> tuple[TorchServeClient, str]:
            running = RunningServer.load(server_config.workdir)
            return running.client(timeout_s=10), running.metrics_url

        log = tmp_path / "restart.jsonl"
        sidecar = Sidecar(config, make_policy("static", config), connect, log)
        thread = run_sidecar(sidecar)
        try:
            time.sleep(3)
            stop(server_config.workdir)
            time.sleep(2)
            server = start_server(server_config)
            back = time.monotonic()
            client = server.client(timeout_s=10)
            restored = None
            while time.monotonic() - back < 20:
                info = client.describe(MODEL)
                if (info["batchSize"], info["maxBatchDelay"]) == (4, 7):
                    restored = time.monotonic() - back
                    break
                time.sleep(0.2)
        finally:
            sidecar.stop()
            thread.join(timeout=30)
        print(json.dumps({"recovery_s": restored}))
        assert restored is not None and restored < 10
        events = [r["event"] for r in read_log(log)]
        assert "unreachable" in events and "reapply" in events
    finally:
        stop(server_config.workdir)
