"""A user's own model end to end, on a TorchServe they start themselves: their traffic
becomes a trace (``tsadapt trace`` from the access log), their model is profiled, the
shipped policy is fine-tuned on that traffic (``tsadapt train --scenario``) and run
(``tsadapt control --policy-file``). Then a load step from idle past one worker's batch-1
capacity, under every adaptive policy.

The model is a plain ``BaseHandler`` MLP wide enough that batching pays (2048-wide layers:
one request's forward pass reads as many weights as a batch of 16), with its own
``config.properties`` (a short job queue, so an overload is shed with 503s at once) and the
plugin on ``plugins_path``. Load is open loop to 127.0.0.1, bounded in time and count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml
from user_server import UserServer, user_torchserve, write_user_files

from tsadapt.client import TorchServeClient
from tsadapt.plugin.adapt_client import AdaptClient
from tsadapt.policy.ppo_policy import SHIPPED_POLICY, file_sha256
from tsadapt.policy.types import P99_SHARE
from tsadapt.sidecar.decision_log import read_log

pytestmark = [pytest.mark.server, pytest.mark.slow]

MODEL, FEATURES, HIDDEN = "usermlp", 64, 2048
MODEL_PY = f"""import torch


class UserMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear({FEATURES}, {HIDDEN}), torch.nn.ReLU(),
            torch.nn.Linear({HIDDEN}, {HIDDEN}), torch.nn.ReLU(),
            torch.nn.Linear({HIDDEN}, 8),
        )

    def forward(self, x):
        return self.net(x)
"""
# The user's handler (plain BaseHandler) and registration (batch 1, no wait, one worker):
# experiments/foreign_model.py's, the model above is larger.
JOB_QUEUE = 32
SLO_MS = 200
#: The traffic the trace is cut from (s, req/s): drifting, with two bursts; 40 s.
TRAFFIC = ((10.0, 15.0), (5.0, 60.0), (10.0, 20.0), (5.0, 80.0), (10.0, 25.0))
SLICE_S = 10.0
#: Idle, then the step (seconds) for the step test.
IDLE_S, STEP_S = 6.0, 26.0
#: The goal for the end of shedding after the step (printed, see the step test); a setting
#: may not alternate between two values for more than MAX_FLIP_TICKS ticks in a row.
SHED_STOP_S, MAX_FLIP_TICKS = 5.0, 3
SHED_STOP_S_LIMIT = 2 * SHED_STOP_S
#: The step's shedding has ended once this many seconds in a row shed none (over 1 %).
CLEAN_RUN_BINS = 2
SENDERS = 96
#: The step's rate: this many times batch 1's capacity, lowered by RATE_BACKOFF until batch
#: PROBE_BATCH serves it without 503s after SHED_STOP_S (a PROBE_S replay), at most
#: RATE_TRIES tries, never below MIN_STEP_OVER_BATCH1 times batch 1's capacity. What makes
#: the step a step is measured too: at batch 1 it still sheds after SHED_STOP_S.
STEP_OVER_BATCH1, MIN_STEP_OVER_BATCH1 = 2.0, 1.15
RATE_BACKOFF, RATE_TRIES, PROBE_S = 0.85, 4, 10.0
#: 1 + the guards' default max_batch_step (8).
PROBE_BATCH = 9


def tsadapt(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tsadapt.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def user_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserServer]:
    home = tmp_path_factory.mktemp("owntraffic")
    config = write_user_files(
        home,
        (MODEL,),
        model_py=MODEL_PY,
        properties=f"job_queue_size={JOB_QUEUE}\ndefault_workers_per_model=1\n",
    )
    with user_torchserve(home, config, MODEL, env={"OMP_NUM_THREADS": "1"}) as server:
        yield server


def payload(i: int) -> dict[str, Any]:
    return {"x": [((i * 7 + j) % 13) / 13.0 for j in range(FEATURES)]}


@dataclass(frozen=True)
class Sent:
    at_s: float
    status: int


def open_loop(client: TorchServeClient, phases: tuple[tuple[float, float], ...]) -> list[Sent]:
    """Requests on the phases' schedule (rate 0: idle), whatever the answers take."""
    schedule, t = [], 0.0
    for duration, rate in phases:
        schedule += [t + i / rate for i in range(int(duration * rate))] if rate > 0 else []
        t += duration
    out: list[Sent] = []
    lock = threading.Lock()
    bodies = [payload(i) for i in range(64)]

    def one(i: int, at: float) -> None:
        try:
            status = client.predict(MODEL, bodies[i % 64], timeout_s=30).status_code
        except requests.RequestException:
            status = 0
        with lock:
            out.append(Sent(at, status))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        for i, at in enumerate(schedule):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i, at)
    return sorted(out, key=lambda s: s.at_s)


def reset(user_server: UserServer) -> None:
    AdaptClient(user_server.client).set_batching(MODEL, batch_size=1, max_batch_delay_ms=0)


def controller_yaml(tmp_path: Path, policy: str) -> Path:
    ctl = tmp_path / f"ctl-{policy}.yaml"
    ctl.write_text(
        yaml.safe_dump(
            {
                "policy": policy,
                "tick_s": 1.0,
                "window_s": 3.0,
                "worker_budget": 1,
                "cooldown_s": 2.0,
                "models": {
                    MODEL: {
                        "slo_ms": SLO_MS,
                        "min_workers": 1,
                        "max_workers": 1,
                        "max_batch": 32,
                        "max_delay_ms": 20,
                    },
                },
            }  # fmt: skip
        )
    )
    return ctl


# ----------------------------------------------------------------------------- pipeline


def test_trace_profile_finetune_control_on_the_users_traffic(
    user_server: UserServer, tmp_path: Path
) -> None:
    sent = open_loop(user_server.client, TRAFFIC)
    assert len(sent) == sum(int(d * r) for d, r in TRAFFIC)
    access_log = user_server.home / "logs" / "access_log.log"
    traces = tmp_path / "traces"
    done = tsadapt("trace", "--access-log", str(access_log), "--model", MODEL, "--out", str(traces))
    assert done.returncode == 0, done.stderr
    trace = traces / f"{MODEL}.csv"
    rows = [x for x in trace.read_text().splitlines() if x and not x.startswith("#")]
    assert rows[0] == "timestamp"
    times = np.array([float(x) for x in rows[1:]])
    assert times.size == len(sent)  # every request the log holds arrived, 503s included
    span = sum(d for d, _ in TRAFFIC)
    assert span - 3 < times[-1] < span + 5  # the schedule's length, give or take the box
    burst = np.count_nonzero((times >= 10.5) & (times < 14.5)) / 4.0  # the 60 req/s burst
    calm = np.count_nonzero((times >= 1) & (times < 9)) / 8.0  # 15 req/s
    assert burst > 2 * calm, (burst, calm)

    body = tmp_path / "request.json"
    body.write_text(json.dumps(payload(1)))
    profile = tmp_path / f"{MODEL}.json"
    done = tsadapt(
        "profile", *user_server.attach(), "--model", MODEL, "--payload", str(body),
        "--workers", "1", "--batch-sizes", "1", "2", "4", "8", "16", "--repeats", "2",
        "--warmup", "1", "--out", str(profile),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    scenario = tmp_path / "mine.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "name": "mine",
                "duration_s": 4 * SLICE_S,
                "seed": 1,
                "devices": [{"name": "cpu", "cores": 2}],
                "models": [
                    {
                        "name": MODEL,
                        "slo_ms": SLO_MS,
                        "profile": {"alpha_ms": 1, "beta_ms": 1},
                        "min_workers": 1,
                        "max_workers": 1,
                        "max_batch": 32,
                    },
                ],
                "workload": [{"model": MODEL, "kind": "trace", "path": "traces/usermlp.csv"}],
                "budget": {"workers": 1},
            }  # fmt: skip
        )
    )
    tuned = tmp_path / "my-policy.zip"
    shipped_sha = file_sha256(SHIPPED_POLICY)
    done = tsadapt(
        "train", "--scenario", str(scenario), "--profile", str(profile),
        "--timesteps", "256", "--slice-s", str(SLICE_S), "--heldout-every", "2",
        "--eval-seeds", "2", "--out", str(tuned),
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert file_sha256(SHIPPED_POLICY) == shipped_sha  # never touched
    report = json.loads(tuned.with_suffix(".json").read_text())
    s = report["summary"]
    print(json.dumps(s))
    assert set(s) == {"ppo (fine-tuned)", "ppo (base)", "aimd", "queue", "best-static"}
    assert s["ppo (fine-tuned)"]["runs"] == 2 * 2  # 2 held-out slices x 2 seeds
    assert s["ppo (fine-tuned)"]["goodput_rps"] >= s["ppo (base)"]["goodput_rps"]
    refused = tsadapt("train", "--scenario", str(scenario), "--out", str(SHIPPED_POLICY))
    assert refused.returncode == 2 and "never overwrites it" in refused.stderr

    log = tmp_path / "ppo.jsonl"
    done = tsadapt(
        "control", "--config", str(controller_yaml(tmp_path, "ppo")), "--policy", "ppo",
        "--policy-file", str(tuned), *user_server.attach(), "--decision-log", str(log),
        "--metrics-port", "0", "--max-ticks", "3", "--profile", str(profile),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    records = read_log(log)
    (loaded,) = [r for r in records if r.get("event") == "policy_file"]
    assert loaded == {**loaded, "file": str(tuned), "sha256": file_sha256(tuned)}
    ticks = [r for r in records if r.get("event") == "tick"]
    assert len(ticks) == 3 and all(a["ok"] for r in ticks for a in r["applied"])
    reset(user_server)


# ----------------------------------------------------------------------------- step


def capacity(client: TorchServeClient, batch: int, delay_ms: int, n: int = 400) -> float:
    """Requests/s one worker serves at these settings (closed loop, a job queue's worth in
    flight: the server, not the client's round trips, is the limit)."""
    AdaptClient(client).set_batching(MODEL, batch_size=batch, max_batch_delay_ms=delay_ms)
    bodies = [payload(i) for i in range(64)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=JOB_QUEUE) as pool:
        codes = list(
            pool.map(lambda i: client.predict(MODEL, bodies[i % 64]).status_code, range(n))
        )
    assert codes.count(200) == n
    return n / (time.perf_counter() - t0)


def longest_flip(ticks: list[dict[str, Any]], setting: str) -> int:
    """The most consecutive ticks over which ``setting`` alternated between two values."""
    values = [r["settings"][MODEL][setting] for r in ticks if MODEL in r.get("settings", {})]
    best = run = 0
    for i in range(2, len(values)):
        a, b, c = values[i - 2], values[i - 1], values[i]
        run = run + 1 if (a == c and a != b) else 0
        best = max(best, run + 1 if run else 0)
    return best


def longest_alternation(ticks: list[dict[str, Any]], setting: str) -> int:
    """The most changes in a row of ``setting`` that alternated between two values, however
    many ticks apart (1 -> 11 -> 1 -> 11: 3), the flip-flop a cooldown spaces out."""
    values = [r["settings"][MODEL][setting] for r in ticks if MODEL in r.get("settings", {})]
    moves = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
    best = max(0, min(len(moves) - 1, 1))
    run = best
    for i in range(2, len(moves)):
        run = run + 1 if moves[i] == moves[i - 2] else 1
        best = max(best, run)
    return best


def sheds_after(sent: list[Sent], t: float) -> int:
    return sum(1 for x in sent if x.status == 503 and x.at_s >= t)


def shedding_seconds(sent: list[Sent], start_s: float, bin_s: float = 1.0) -> dict[int, bool]:
    """Each ``bin_s`` bin from ``start_s`` on that had requests: whether over
    :data:`P99_SHARE` of them were shed (503), the controller's own measure of shedding
    (``ModelObservation.shedding``)."""
    bins: dict[int, list[int]] = {}
    for x in sent:
        if x.at_s >= start_s:
            b = bins.setdefault(int((x.at_s - start_s) // bin_s), [0, 0])
            b[0] += 1
            b[1] += x.status == 503
    return {i: shed > P99_SHARE * n for i, (n, shed) in sorted(bins.items())}


def step_shedding_end_s(sent: list[Sent], start_s: float, bin_s: float = 1.0) -> float:
    """Seconds after ``start_s`` to the end of the shedding a step at ``start_s`` caused: the
    end of its last shedding bin before the first CLEAN_RUN_BINS bins in a row without
    shedding; 0 when none (the policy batched before the job queue filled). A shedding
    bin after such a clean run is a new event, not the step's: the CI box (2 shared cores,
    a 32-deep queue filled in 60 ms at 550 req/s) can shed a few requests at a batch that
    serves the rate when a process stalls (CI: 18 in all, the last 11.5 s after the step,
    batch 15-18); ``shed_share_after`` bounds those."""
    last, clean = 0, 0
    for i, shedding in shedding_seconds(sent, start_s, bin_s).items():
        if shedding:
            last, clean = i + 1, 0
        else:
            clean += 1
            if clean >= CLEAN_RUN_BINS:
                break
    return last * bin_s


def shed_share_after(sent: list[Sent], t: float) -> float:
    """The share of the requests sent from ``t`` on that were shed."""
    late = [x.status == 503 for x in sent if x.at_s >= t]
    return sum(late) / max(len(late), 1)


def test_the_steps_shedding_ends_at_the_first_clean_run() -> None:
    def load(pattern: str) -> list[Sent]:  # one char a second: "s" sheds half, "." none
        return [
            Sent(at_s=i + k / 100, status=503 if c == "s" and k % 2 else 200)
            for i, c in enumerate(pattern)
            for k in range(100)
        ]

    assert step_shedding_end_s(load("......"), 0.0) == 0.0
    assert step_shedding_end_s(load("ss...."), 0.0) == 2.0
    assert step_shedding_end_s(load("s.s..s"), 0.0) == 3.0  # one clean second is not the end
    assert step_shedding_end_s(load("ssssss"), 0.0) == 6.0
    assert step_shedding_end_s(load("..ss.."), 2.0) == 2.0  # counted from the step
    assert shed_share_after(load("ss.s.."), 2.0) == pytest.approx(0.5 / 4)
    assert shed_share_after(load("ss"), 9.0) == 0.0


@pytest.fixture(scope="module")
def step_rate(user_server: UserServer) -> float:
    """Past batch 1's capacity, yet servable at the first batch the guards allow.

    The box's speed varies 2-4x between days and within minutes (other jobs share its two
    cores), so both are measured here: batch 1's capacity closed loop, then the candidate
    step replayed open loop at batch PROBE_BATCH (no controller), the largest batch one
    guarded move from batch 1 reaches (``max_batch_step``): if that still sheds after
    SHED_STOP_S, the rate is lowered and tried again, never below MIN_STEP_OVER_BATCH1 times
    batch 1's capacity. So the step tests how soon a policy moves, not how fast the box is.
    """
    one = capacity(user_server.client, 1, 0)
    rate = STEP_OVER_BATCH1 * one
    tried = []
    for _ in range(RATE_TRIES):
        AdaptClient(user_server.client).set_batching(
            MODEL, batch_size=PROBE_BATCH, max_batch_delay_ms=5
        )
        sent = open_loop(user_server.client, ((PROBE_S, rate),))
        late = sheds_after(sent, SHED_STOP_S)
        tried.append((round(rate, 1), late))
        if late == 0:
            break
        rate *= RATE_BACKOFF
    reset(user_server)  # and without a controller, batch 1 sheds the step past SHED_STOP_S
    static = sheds_after(open_loop(user_server.client, ((PROBE_S, rate),)), SHED_STOP_S)
    print(json.dumps({"batch1_rps": round(one, 1), "tried_rps_late503": tried,
                      "batch1_late503": static}))  # fmt: skip
    assert tried[-1][1] == 0, f"batching does not absorb any step on this box now: {tried}"
    assert rate >= MIN_STEP_OVER_BATCH1 * one, f"batching pays too little now: {tried}"
    assert static > 0, "at batch 1 the step is served: it tests nothing"
    return rate


#: Measured before the guard changes of 2026-12-07 (step 201 req/s = 2x batch 1's 101): queue
#: stopped shedding 1.0 s after the step; the shipped ppo at 12.9 s (batch 3, 5, 7, 10, 12, one
#: move per cooldown: the emergency's own delay cut restarted the cooldown); aimd at 7-16 s
#: (it read only the p99 of served requests, in time while the full queue shed).
#: Since (an emergency lets the policy's batch raise past the cooldown; aimd counts over 1 %
#: shed as a p99 past the SLO; the flip-flop guard), 4 runs each on this box, idle and with one
#: or two busy processes beside it (batch 1 at 225, 215, 175 and 115 req/s): ppo shed nothing,
#: queue stopped after 0.7-1.0 s, aimd after 0.9-2.7 s. ppo's delay, which went 1 -> 11 -> 1
#: -> 11 ms at every move for the whole step before the flip-flop guard, now moves twice.
#: CI, 2026-12-07 (step 549 req/s): ppo shed 18 of 14274 requests, the last 11.5 s after the
#: step, its batch already 15-18 (PROBE_BATCH serves the step), which the old measure (the
#: last shedding second of all) read as shedding until 12 s.
#: Asserted: the step's shedding (over 1 % of a second's requests answered 503, up to the
#: first CLEAN_RUN_BINS clean seconds, ``step_shedding_end_s``) ends within SHED_STOP_S_LIMIT
#: (twice the 5 s goal: a bound a shared box keeps, which the old 12.9 s breaks), at most
#: P99_SHARE of the requests after it are shed, and no setting flip-flops, tick by tick or
#: move by move; the 5 s goal itself is printed, with the seconds that shed and the last 503
#: of all (``last_shed_s``).
@pytest.mark.parametrize("policy", ["aimd", "queue", "ppo"])
def test_step_from_idle_stops_shedding_without_flip_flop(
    user_server: UserServer, tmp_path: Path, policy: str, step_rate: float
) -> None:
    reset(user_server)
    log = tmp_path / f"{policy}.jsonl"
    cmd = [
        sys.executable, "-m", "tsadapt.cli.main", "control",
        "--config", str(controller_yaml(tmp_path, policy)), *user_server.attach(),
        "--decision-log", str(log), "--metrics-port", "0",
    ]  # fmt: skip
    out_file = tmp_path / "control.out"
    with out_file.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            r.get("event") == "tick" for r in (read_log(log) if log.exists() else [])
        ):
            assert proc.poll() is None, out_file.read_text()
            time.sleep(0.2)
        sent = open_loop(user_server.client, ((IDLE_S, 0.0), (STEP_S, step_rate)))
        assert proc.poll() is None, out_file.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        reset(user_server)
    shed = [s.at_s - IDLE_S for s in sent if s.status == 503]
    ticks = [r for r in read_log(log) if r.get("event") == "tick"]
    settings = ("batch_size", "max_batch_delay_ms", "workers")
    flips = {k: longest_flip(ticks, k) for k in settings}
    alternations = {k: longest_alternation(ticks, k) for k in settings}
    print(
        json.dumps(
            {
                "policy": policy,
                "rate": round(step_rate, 1),
                "requests": len(sent),
                "shed": len(shed),
                "last_shed_s": max(shed, default=None),
                "goal_s": SHED_STOP_S,
                "flips": flips,
                "alternations": alternations,
                "settings": [r["settings"][MODEL] for r in ticks][-int(STEP_S) :],
            }
        )
    )
    # (none at all: the policy batched before the queue filled; step_rate showed batch 1 sheds)
    end = step_shedding_end_s(sent, IDLE_S)
    assert end <= SHED_STOP_S_LIMIT, f"the step's shedding went on until {end:.1f} s after it"
    late = shed_share_after(sent, IDLE_S + end)
    assert late <= P99_SHARE, f"{late:.2%} shed after the step's shedding ended"
    assert max(flips.values()) <= MAX_FLIP_TICKS, flips
    assert max(alternations.values()) <= MAX_FLIP_TICKS, alternations
