"""What every fault run needs: a real TorchServe, the controller sidecar as a subprocess, an
open-loop load in the background whose requests are timed against the fault, and the row a
fault leaves in ``docs/results/reliability.md`` (:class:`FaultResult`)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tsadapt.experiments.bench_schedule import mix_schedule
from tsadapt.experiments.soak_load import SHED_STATUS, Sent, send
from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.policy.sim.workloads import Poisson
from tsadapt.sidecar.decision_log import read_log

#: The model under fault and its controller limits (PPO acts on it).
MODEL = "text"
SLO_MS = 150.0
CONTROLLER = {
    "policy": "ppo",
    "tick_s": 1.0,
    "window_s": 3.0,
    "worker_budget": 2,
    "cooldown_s": 2.0,
    "models": {
        MODEL: {"slo_ms": SLO_MS, "min_workers": 1, "max_workers": 2, "max_batch": 32,
                "max_delay_ms": 30},
    },
}  # fmt: skip
#: Seconds the sidecar gets to write its first tick.
SIDECAR_START_S = 90.0


@dataclass
class FaultResult:
    """One row of the reliability report."""

    fault: str
    sent: int = 0
    answered: int = 0
    shed: int = 0
    failed: int = 0
    failed_by_status: dict[str, int] = field(default_factory=dict)  # HTTP status -> count
    recovery_s: float = math.nan
    recovery: str = ""  # what the recovery time measures
    controller: str = ""  # what the controller did
    checks: dict[str, bool] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(self.checks.values())

    def count(self, sent: Sent, times: np.ndarray | None = None) -> None:
        """Add a load's outcomes to the row (``times``: their scheduled offsets, to list
        when the first failures were sent)."""
        bad = (sent.status != 200) & (sent.status != SHED_STATUS)
        if times is not None and bad.any():
            at = self.details.setdefault("failed_sent_at_s", [])
            at += [round(float(t), 2) for t in times[bad][:20]]
        self.sent += len(sent.status)
        self.answered += int((sent.status == 200).sum())
        self.shed += int((sent.status == SHED_STATUS).sum())
        self.failed += int(((sent.status != 200) & (sent.status != SHED_STATUS)).sum())
        for code in sent.status[(sent.status != 200) & (sent.status != SHED_STATUS)]:
            key = "no answer" if code == 0 else str(int(code))
            self.failed_by_status[key] = self.failed_by_status.get(key, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()}
        out["ok"] = self.ok
        if not math.isfinite(self.recovery_s):
            out["recovery_s"] = None
        return out


class Load(threading.Thread):
    """Poisson requests to ``model`` at ``rate`` for ``duration_s``, open loop, from ``t0``
    (perf_counter); :attr:`times` are the scheduled send offsets, :attr:`sent` the outcomes."""

    def __init__(self, client: Any, rate: float, duration_s: float, t0: float,  # noqa: ANN401
                 model: str = MODEL, seed: int = 0, threads: int = 96) -> None:  # fmt: skip
        super().__init__(daemon=True, name="fault-load")
        self.schedule = mix_schedule(Poisson(rate), {model: 1.0}, duration_s, seed)
        self.client, self.t0, self.threads = client, t0, threads
        self.bodies = {model: [DEMO_MODELS[model].example(np.random.default_rng(i))
                               for i in range(8)]}  # fmt: skip
        self.sent: Sent | None = None

    @property
    def times(self) -> np.ndarray:
        return self.schedule.times

    def run(self) -> None:
        self.sent = send(self.client, self.schedule, self.bodies, t0=self.t0, threads=self.threads)

    def result(self, timeout_s: float = 120.0) -> Sent:
        self.join(timeout_s)
        if self.sent is None:
            raise RuntimeError("the load did not finish in time")
        return self.sent


def last_bad_after(load: Load, sent: Sent, fault_s: float, slo_ms: float = SLO_MS) -> float:
    """Seconds from the fault to the last request scheduled after it that was not answered
    within the SLO (0 when none was)."""
    after = load.times >= fault_s
    bad = after & ~((sent.status == 200) & (sent.latency_ms <= slo_ms))
    if not bad.any():
        return 0.0
    return float(load.times[bad].max() - fault_s)


def attainment(load: Load, sent: Sent, start_s: float, end_s: float,
               slo_ms: float = SLO_MS) -> float:  # fmt: skip
    """Share of the requests scheduled in ``[start_s, end_s)`` answered within the SLO."""
    sel = (load.times >= start_s) & (load.times < end_s)
    good = (sent.status == 200) & (sent.latency_ms <= slo_ms)
    return float(good[sel].mean()) if sel.any() else math.nan


def back_to_baseline(load: Load, sent: Sent, baseline_end_s: float, from_s: float,
                     window_s: float = 3.0, step_s: float = 0.5) -> float | None:  # fmt: skip
    """Seconds from ``from_s`` to the start of the first ``window_s`` window whose SLO
    attainment is back to what it was before ``baseline_end_s`` (None: never)."""
    baseline = attainment(load, sent, 0.0, baseline_end_s)
    end = float(load.times.max()) if len(load.times) else from_s
    t = from_s
    while t + window_s <= end + 1e-9:
        if attainment(load, sent, t, t + window_s) >= baseline:
            return t - from_s
        t += step_s
    return None


class QueuePoller(threading.Thread):
    """The model's job queue depth every ``period_s`` (describe), from ``t0`` (perf_counter)."""

    def __init__(self, client: Any, t0: float, period_s: float = 0.25) -> None:  # noqa: ANN401
        super().__init__(daemon=True, name="queue-poller")
        self.client, self.t0, self.period_s = client, t0, period_s
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                d = self.client.describe(MODEL)
                depth = int(d.get("jobQueueStatus", {}).get("pendingRequests", 0))
                self.samples.append((time.perf_counter() - self.t0, depth))
            except Exception:  # noqa: BLE001 - a missed poll is not fatal
                pass
            self._halt.wait(self.period_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def drained_after(self, from_s: float) -> float | None:
        """Seconds from ``from_s`` until the queue is back to its deepest before ``from_s``
        (None: never, or never polled)."""
        before = [q for t, q in self.samples if t < from_s]
        limit = max(before, default=0)
        after = [(t, q) for t, q in self.samples if t >= from_s]
        peaked = False
        for t, q in after:
            peaked = peaked or q > limit
            if peaked and q <= limit:
                return t - from_s
        return 0.0 if after and not peaked else None


def write_controller_config(path: Path, **overrides: Any) -> Path:  # noqa: ANN401
    path.write_text(yaml.safe_dump({**CONTROLLER, **overrides}))
    return path


class SidecarProc:
    """``tsadapt control`` as a subprocess; its output is read by a thread (never a full
    pipe), so a run with a file-size limit still sees every line."""

    def __init__(
        self,
        args: Sequence[str],
        decisions: Path,
        preexec: Callable[[], None] | None = None,
        out: Path | None = None,
    ) -> None:
        """``out``: append the output to this file instead (long runs); :attr:`lines` stays
        empty then."""
        self.decisions = decisions
        cmd = [sys.executable, "-m", "tsadapt.cli", "control", *args,
               "--decision-log", str(decisions), "--metrics-port", "0"]  # fmt: skip
        sink = out.open("ab") if out is not None else subprocess.PIPE
        self.proc = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, text=out is None,
            preexec_fn=preexec, start_new_session=True,
        )  # fmt: skip
        if out is not None:
            sink.close()
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        if self.proc.stdout is None:
            return
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def records(self) -> list[dict[str, Any]]:
        return read_log(self.decisions) if self.decisions.is_file() else []

    def wait_ticks(self, n: int = 1, timeout_s: float = SIDECAR_START_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited {self.proc.returncode}: {self.output}")
            if sum("tick" in r for r in self.records()) >= n:
                return
            time.sleep(0.3)
        raise RuntimeError(f"controller wrote no tick within {timeout_s:.0f} s: {self.output}")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM; its exit code (None: it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                return None
        self._reader.join(5)
        return self.proc.returncode


def settings(client: Any, model: str = MODEL) -> tuple[int, int, int]:  # noqa: ANN401
    """(batch size, max delay ms, min workers) the server runs ``model`` with."""
    d = client.describe(model)
    return int(d["batchSize"]), int(d["maxBatchDelay"]), int(d["minWorkers"])


def ready_workers(client: Any, model: str = MODEL) -> list[int]:  # noqa: ANN401
    """Pids of ``model``'s READY workers."""
    return [int(w["pid"]) for w in client.describe(model).get("workers", [])
            if w.get("status") == "READY"]  # fmt: skip


def events(records: Sequence[dict[str, Any]], since_wall: float = 0.0) -> dict[str, int]:
    """How many records of each event the log holds from ``since_wall`` (epoch) on."""
    out: dict[str, int] = {}
    for r in records:
        if r.get("wall_time", since_wall) >= since_wall:
            out[r.get("event", "?")] = out.get(r.get("event", "?"), 0) + 1
    return out


def applied(records: Sequence[dict[str, Any]], since_wall: float = 0.0,
            until_wall: float = math.inf) -> list[dict[str, Any]]:  # fmt: skip
    """The apply results the log records between two epoch times."""
    return [a for r in records if since_wall <= r.get("wall_time", -1) < until_wall
            for a in r.get("applied", ())]  # fmt: skip


@dataclass
class FaultEnv:
    """A running server for the faults that share one, and where to put files."""

    server: Any  # RunningServer
    server_config: Any  # ServerConfig
    tmp: Path
    model_store: Path

    @property
    def workdir(self) -> Path:
        return Path(self.server.workdir)

    def client(self, timeout_s: float = 30.0) -> Any:  # noqa: ANN401
        from tsadapt.serve.server import RunningServer

        return RunningServer.load(self.workdir).client(timeout_s)

    def reset(self) -> None:
        """Put the model back to its registration defaults (one worker), so every fault
        starts from the same state whatever the controller left behind."""
        from tsadapt.plugin.adapt_client import AdaptClient

        client = self.client()
        model = DEMO_MODELS[MODEL]
        AdaptClient(client).set_batching(MODEL, model.batch_size, model.max_batch_delay_ms)
        client.scale_workers(MODEL, 1, synchronous=True)

    def sidecar(self, name: str, *extra: str, workdir: Path | None = None,
                preexec: Callable[[], None] | None = None) -> SidecarProc:  # fmt: skip
        cfg = write_controller_config(self.tmp / f"{name}.yaml")
        args = ["--config", str(cfg), "--workdir", str(workdir or self.workdir), *extra]
        return SidecarProc(args, self.tmp / f"{name}.jsonl", preexec)


def start_server(config: Any, attempts: int = 3) -> Any:  # noqa: ANN401
    """``serve.server.start``, retried: a key file read half-written fails with a JSON error."""
    from tsadapt.serve.server import start

    for attempt in range(attempts):
        try:
            return start(config)
        except ValueError:
            if attempt + 1 == attempts:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def wait_for(pred: Callable[[], Any], timeout_s: float, period_s: float = 0.2) -> Any:  # noqa: ANN401
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = pred()
        except Exception:  # noqa: BLE001 - the server may be between states
            value = None
        if value:
            return value
        time.sleep(period_s)
    return None


def control_summary(records: list[dict[str, Any]], since: float, until: float = 1e18) -> str:
    ev = events(records, since)
    done = applied(records, since, until)
    ok = sum(bool(a.get("ok")) for a in done)
    return (f"{ev.get('tick', 0)} ticks, {ev.get('reapply', 0)} re-applies, "
            f"{ev.get('unreachable', 0)} unreachable; {ok} changes applied, "
            f"{len(done) - ok} failed")  # fmt: skip


def last_settings(records: list[dict[str, Any]], before_wall: float) -> tuple[int, int, int]:
    last = [x for x in records if "settings" in x and x.get("wall_time", 0) < before_wall][-1]
    s = last["settings"][MODEL]
    return s["batch_size"], s["max_batch_delay_ms"], s["workers"]


def dumps(results: Sequence[FaultResult]) -> str:
    return json.dumps([r.as_dict() for r in results], indent=1)
