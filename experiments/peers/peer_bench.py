"""One ``tsadapt lab bench`` run of a peer (``--peers``): the peer's server in its own process
and venv (``envs``), the bench's Locust command with the same arrivals, the same records and
the same table (replica- or worker-process-seconds in the worker-seconds column; replica
count changes as reconfigurations)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from tsadapt import constants as C
from tsadapt.experiments.bench_controllers import end_process, log_tail
from tsadapt.experiments.bench_report import PEER_NOTES
from tsadapt.experiments.bench_run import RunResult
from tsadapt.experiments.bench_schedule import Schedule, read_records
from tsadapt.experiments.bench_timeline import Poller, Sample
from tsadapt.experiments.peers import VARIANTS
from tsadapt.experiments.peers.envs import peer_python
from tsadapt.experiments.peers.settings import SettingRow
from tsadapt.experiments.peers.timing import ENV_DIR
from tsadapt.policy.sim.scenario import Scenario

if TYPE_CHECKING:
    from tsadapt.experiments.bench_run import BenchConfig

#: Seconds BentoML gets to come up (every worker loads and warms up every model).
BENTO_START_TIMEOUT_S = 240.0

PEER_NOTES["rayserve"] = (
    "`rayserve-fixed` / `rayserve-auto` = the same three models on Ray Serve (one "
    "application per model, each replica running our handler code on the same JSON bodies): "
    "fixed replicas at TorchServe static's workers, or Ray's autoscaler tuned for 10 s "
    "surges; both with a bounded queue (TorchServe's job_queue_size; Ray's 503s count as "
    "failures). Worker-s = replica-seconds; reconfigs = replica-count changes. Ray's own "
    "processes (GCS, raylet, proxy, controller) share the same cores."
)
PEER_NOTES["bentoml"] = (
    "`bentoml-nobatch` / `bentoml-adaptive` = the same three models on BentoML 1.4 (one "
    "service, one API per model, each worker process loading every model through our "
    "handler code; the same JSON bodies, decoded by BentoML): batching off with as many "
    "workers as TorchServe static, or BentoML's adaptive batching (max_batch_size = our "
    "controllers' batch cap, max_latency_ms = the SLO) with as many workers as the worker "
    "budget. Worker-s = worker processes x run time (each serves every model; split evenly "
    "across the models' rows)."
)


@dataclass(frozen=True)
class PeerEndpoint:
    """What ``locust_command`` needs of a server: its URL and a work dir (no TorchServe
    record there, so Locust sends no token)."""

    inference_url: str
    workdir: Path


#: Every peer run name.
RUN_NAMES = tuple(name for variants in VARIANTS.values() for name, _ in variants)


def variant_names(peers: tuple[str, ...]) -> list[str]:
    """The bench's run names of ``peers`` (a peer: its variants; a variant: itself)."""
    out: list[str] = []
    for p in peers:
        for name in [n for n, _ in VARIANTS[p]] if p in VARIANTS else [p]:
            if name not in out:
                out.append(name)
    return out


def variant_of(run: str) -> tuple[str, str]:
    """(peer, mode) of a run name."""
    for peer, variants in VARIANTS.items():
        for name, mode in variants:
            if name == run:
                return peer, mode
    raise ValueError(f"peers: unknown peer run {run!r}")


def settings_rows(run: str, scenario: Scenario) -> list[SettingRow]:
    """The non-default settings of one peer run (from the settings objects)."""
    peer, mode = variant_of(run)
    if peer == "rayserve":
        from tsadapt.experiments.peers.rayserve_app import peer_settings, setting_rows

        return setting_rows(run, peer_settings(scenario, mode))
    from tsadapt.experiments.peers.bentoml_app import bento_settings
    from tsadapt.experiments.peers.bentoml_app import setting_rows as bento_rows

    return bento_rows(run, bento_settings(scenario, mode))


def wait_http_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Until ``url`` answers 200 (RuntimeError if the process exits or time runs out)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode} at start: {log_tail(log)}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"not up after {timeout_s:.0f} s: {log_tail(log)}")
        time.sleep(0.5)


def start_bentoml(python: Path, scenario_path: Path, mode: str, rundir: Path, port: int,
                  extra_env: dict[str, str]) -> subprocess.Popen:  # fmt: skip
    """``bentoml serve`` of the demo service; returns once it answers ``/readyz``."""
    from tsadapt.experiments.peers.bentoml_app import SERVICE, server_env

    cli = python.parent / "bentoml"
    cmd = [str(cli) if cli.is_file() else "bentoml", "serve", SERVICE, "--host", C.LOOPBACK,
           "--port", str(port)]  # fmt: skip
    log = rundir / "bentoml.log"
    env = {**server_env(str(scenario_path), mode), **extra_env}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        wait_http_ready(f"http://{C.LOOPBACK}:{port}/readyz", proc, log, BENTO_START_TIMEOUT_S)
    except RuntimeError:
        stop_group(proc)
        raise
    return proc


def save_text(url: str, path: Path) -> bool:
    """GET ``url`` into ``path`` (a server's metrics before it stops); False if it fails."""
    try:
        resp = requests.get(url, timeout=10)
        resp.raise_for_status()
    except requests.RequestException:
        return False
    path.write_text(resp.text)
    return True


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then kill the process group (the server's workers)."""
    end_process(proc, timeout_s=30.0)
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass


def bento_reader(scenario: Scenario, mode: str) -> Callable[[], list[Sample]]:
    """Constant samples: BentoML's worker processes do not change during a run."""
    from tsadapt.experiments.peers.bentoml_app import bento_settings

    s = bento_settings(scenario, mode)

    def read() -> list[Sample]:
        return [
            Sample(time.time(), a.model, a.max_batch_size if a.batchable else 1,
                   a.max_latency_ms if a.batchable else 0, s.workers, s.workers, 0)
            for a in s.apis.values()
        ]  # fmt: skip

    return read


def shared_workers(res: RunResult, n_models: int) -> RunResult:
    """Worker-seconds of processes that serve every model: each model's row gets an even
    share, the overall row the whole (not the sum over models of the whole)."""
    if res.status != "ok" or res.overall is None:
        return res
    per = {
        m: dataclasses.replace(r, worker_seconds=r.worker_seconds / n_models)
        for m, r in res.per_model.items()
    }
    overall = dataclasses.replace(res.overall, worker_seconds=sum(
        r.worker_seconds for r in per.values()))  # fmt: skip
    return dataclasses.replace(res, per_model=per, overall=overall)


@dataclass
class RunningPeer:
    """A peer server that is up: its process, URL, poll function and how to stop it."""

    peer: str
    mode: str
    proc: subprocess.Popen
    url: str
    reader: Callable[[], list[Sample]]
    log: Path
    status: Path | None = None

    def gone(self) -> str | None:
        if self.proc.poll() is None:
            return None
        return f"{self.peer} exited ({self.proc.returncode}): {log_tail(self.log)}"

    def stop(self) -> None:
        from tsadapt.experiments.peers import rayserve_bench as ray

        if self.peer == "rayserve":
            ray.stop_app(self.proc, self.status)
        else:
            save_text(f"{self.url}/metrics", self.log.parent / "bentoml-metrics.txt")
            stop_group(self.proc)


def start_variant(run: str, python: Path, scenario_path: Path, scenario: Scenario,
                  rundir: Path) -> RunningPeer:  # fmt: skip
    """Start ``run``'s server (RuntimeError with the reason if it does not come up)."""
    from tsadapt.experiments.peers import rayserve_bench as ray
    from tsadapt.serve.server import free_port

    peer, mode = variant_of(run)
    timing = rundir / "timing"
    timing.mkdir(parents=True, exist_ok=True)
    env = {ENV_DIR: str(timing.resolve())}
    port = free_port()
    url = f"http://{C.LOOPBACK}:{port}"
    if peer == "rayserve":
        proc, status = ray.start_app(scenario_path, rundir, port, mode, python, env)
        reader = ray.status_reader(status, scenario, mode)
        return RunningPeer(peer, mode, proc, url, reader, rundir / "rayserve.log", status)
    proc = start_bentoml(python, scenario_path, mode, rundir, port, env)
    return RunningPeer(peer, mode, proc, url, bento_reader(scenario, mode), rundir / "bentoml.log")


def run_peer_variant(
    cfg: BenchConfig, scenario_path: Path, scenario: Scenario, schedule: Schedule,
    run: str, rundir: Path, on_tick: Callable[[float, str], None],
) -> RunResult:  # fmt: skip
    """Run one peer variant once; never leaves a process behind."""
    from tsadapt.experiments.bench_run import drive_locust, locust_command, summarize_run

    peer, mode = variant_of(run)
    python, where = peer_python(peer)
    if python is None:
        return RunResult(run, "skipped", where)
    rundir.mkdir(parents=True, exist_ok=True)
    (rundir / "peer-env.txt").write_text(f"{peer} ({mode}) ran with {python}: {where}\n")
    on_tick(0.0, f"starting {peer}")
    try:
        server = start_variant(run, python, scenario_path, scenario, rundir)
    except RuntimeError as exc:
        return RunResult(run, "failed", f"{peer}: {exc}", rundir=rundir)
    poller = None
    try:
        poller = Poller(server.reader)
        poller.start()
        cmd = locust_command(
            cfg, scenario_path, scenario, PeerEndpoint(server.url, rundir),
            rundir / "requests.csv", schedule.duration_s, schedule.seed,
        )  # fmt: skip
        failed = drive_locust(cmd, rundir, schedule.duration_s, on_tick, server.gone)
        if failed:
            return RunResult(run, "failed", failed, rundir=rundir)
    finally:
        if poller is not None:
            poller.stop()
        on_tick(schedule.duration_s, f"stopping {peer}")
        server.stop()
    records = read_records(rundir / "requests.csv")
    res = summarize_run(run, schedule, records, poller.samples, rundir)
    return shared_workers(res, len(scenario.models)) if peer == "bentoml" else res
