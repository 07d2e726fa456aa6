"""The faults, each injected into a real TorchServe under open-loop load with the controller
(the PPO policy) running; each returns its :class:`FaultResult` row with the checks it must
pass. The tests run them one by one; ``tsadapt reliability`` runs them all and writes
``docs/results/reliability.md``.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tsadapt.experiments.fault_harness import (
    CONTROLLER,
    MODEL,
    FaultResult,
    Load,
    SidecarProc,
    applied,
    events,
    last_bad_after,
    ready_workers,
    settings,
    write_controller_config,
)
from tsadapt.experiments.soak_probe import find_frontend, proc_stat
from tsadapt.experiments.tcp_proxy import DelayProxy
from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.policy.ppo_policy import SHIPPED_POLICY

#: The decision log's file-size limit in the disk-full run (bytes).
LOG_LIMIT_BYTES = 16 * 1024
#: Largest increase of the sidecar's thread count while the management API hangs.
MAX_EXTRA_THREADS = 2


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


def _wait(pred: Callable[[], Any], timeout_s: float, period_s: float = 0.2) -> Any:  # noqa: ANN401
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


def _control_summary(records: list[dict[str, Any]], since: float, until: float = 1e18) -> str:
    ev = events(records, since)
    done = applied(records, since, until)
    ok = sum(bool(a.get("ok")) for a in done)
    return (f"{ev.get('tick', 0)} ticks, {ev.get('reapply', 0)} re-applies, "
            f"{ev.get('unreachable', 0)} unreachable; {ok} changes applied, "
            f"{len(done) - ok} failed")  # fmt: skip


# --------------------------------------------------------------------------- the faults


def worker_kill(env: FaultEnv) -> FaultResult:
    """SIGKILL a backend worker while it serves batches."""
    r = FaultResult("backend worker killed (SIGKILL) under load")
    client = env.client()
    sc = env.sidecar("worker-kill")
    try:
        sc.wait_ticks(2)
        t0 = time.perf_counter()
        load = Load(client, 50.0, 14.0, t0)
        load.start()
        time.sleep(5.0)
        victims = ready_workers(client)
        fault_wall, fault_s = time.time(), time.perf_counter() - t0
        os.kill(victims[0], signal.SIGKILL)
        back = _wait(lambda: (p := ready_workers(client)) and victims[0] not in p, 90.0)
        back_s = time.perf_counter() - t0 - fault_s if back else None
        sent = load.result()
        alive = sc.proc.poll() is None
    finally:
        code = sc.stop()
    r.count(sent)
    r.recovery_s = last_bad_after(load, sent, fault_s)
    r.recovery = "kill to the last request not answered within the SLO"
    late = (load.times >= fault_s + (back_s or 0.0)) & (sent.status != 200)
    r.controller = "kept controlling: " + _control_summary(sc.records(), fault_wall)
    r.details = {"worker_back_s": back_s, "failed_after_worker_back": int(late.sum()),
                 "sidecar_exit": code}  # fmt: skip
    r.checks = {
        "TorchServe started a new worker": back is not None,
        "no request failed once the new worker was up": back is not None and not late.any(),
        "failures at most one batch": r.failed <= CONTROLLER["models"][MODEL]["max_batch"],
        "the controller kept running": alive and code == 0,
    }
    return r


def _last_settings(records: list[dict[str, Any]], before_wall: float) -> tuple[int, int, int]:
    last = [x for x in records if "settings" in x and x.get("wall_time", 0) < before_wall][-1]
    s = last["settings"][MODEL]
    return s["batch_size"], s["max_batch_delay_ms"], s["workers"]


def frontend_restart(env: FaultEnv) -> FaultResult:
    """SIGKILL the Java frontend, start TorchServe again on the same ports and register the
    model: the controller reconnects and re-applies the settings it had."""
    from dataclasses import replace

    from tsadapt.serve.server import ServerConfig, stop

    r = FaultResult("TorchServe frontend killed (SIGKILL) and restarted")
    cfg = ServerConfig.with_free_ports(
        workdir=env.tmp / "restart-ts", model_store=env.model_store, models=(MODEL,)
    )
    server = start_server(cfg)
    sc = None
    try:
        sc = env.sidecar("frontend-restart", workdir=cfg.workdir)
        sc.wait_ticks(2)
        client = server.client(10)
        t0 = time.perf_counter()
        load = Load(client, 20.0, 40.0, t0)
        load.start()
        time.sleep(8.0)
        kill_wall, fault_s = time.time(), time.perf_counter() - t0
        os.kill(find_frontend(server.pid), signal.SIGKILL)
        stop(cfg.workdir)  # reap the wrapper and the orphaned workers
        server = start_server(replace(cfg, models=()))
        client2 = server.client(30)
        target = _last_settings(sc.records(), kill_wall)
        register_wall = time.time()
        client2.checked("management", "POST", "models", params={
            "url": f"{MODEL}.mar", "model_name": MODEL, "initial_workers": 1,
            "batch_size": DEMO_MODELS[MODEL].batch_size,
            "max_batch_delay": DEMO_MODELS[MODEL].max_batch_delay_ms, "synchronous": "false",
        })  # fmt: skip
        _wait(lambda: MODEL in client2.list_models(), 60.0, 0.02)
        registered, registered_wall = time.monotonic(), time.time()
        defaults = (DEMO_MODELS[MODEL].batch_size, DEMO_MODELS[MODEL].max_batch_delay_ms, 1)
        restored = _wait(lambda: settings(client2) == target, 60.0, 0.02)
        restore_s = time.monotonic() - registered if restored else None
        sent = load.result()
        alive = sc.proc.poll() is None
    finally:
        code = sc.stop() if sc else None
        stop(cfg.workdir)
    r.count(sent)
    recs = sc.records()
    reapply = [x for x in recs if x.get("event") == "reapply" and x["wall_time"] >= kill_wall]
    r.recovery_s = restore_s if restore_s is not None else float("nan")
    r.recovery = "model registered again to the controller's settings live again"
    r.controller = (f"reconnected and re-applied {target} over the registration defaults "
                    f"{defaults}; " + _control_summary(recs, kill_wall))  # fmt: skip
    r.details = {
        "target": target, "defaults": defaults, "outage_failed": r.failed,
        "reapply_tick_start_after_registration_s":
            reapply[0]["wall_time"] - registered_wall if reapply else None,
        "registration_listed_after_s": registered_wall - register_wall,
        "last_bad_after_kill_s": last_bad_after(load, sent, fault_s), "sidecar_exit": code,
    }  # fmt: skip
    r.checks = {
        "the controller re-applied its settings": bool(reapply) and restore_s is not None,
        "settings differed from the defaults (the re-apply was needed)": target != defaults,
        "the controller kept running": alive and code == 0,
    }
    return r


def sidecar_restart(env: FaultEnv) -> FaultResult:
    """SIGKILL the sidecar; the server keeps its settings; a new sidecar adopts them."""
    r = FaultResult("controller sidecar killed (SIGKILL) and restarted")
    client = env.client()
    sc = env.sidecar("sidecar-kill")
    sc.wait_ticks(3)
    t0 = time.perf_counter()
    load = Load(client, 40.0, 16.0, t0)
    load.start()
    time.sleep(6.0)
    os.kill(sc.pid, signal.SIGKILL)
    sc.stop()
    at_kill = settings(client)
    time.sleep(3.0)
    held = settings(client)
    started = time.monotonic()
    sc2 = env.sidecar("sidecar-restarted")
    try:
        sc2.wait_ticks(1)
        resumed_s = time.monotonic() - started
        sent = load.result()
        alive = sc2.proc.poll() is None
    finally:
        code = sc2.stop()
    r.count(sent)
    r.recovery_s = resumed_s
    r.recovery = "new sidecar started to its first tick"
    adopted = next(x for x in sc2.records() if x.get("event") == "adopted")["settings"][MODEL]
    adopted_t = (adopted["batch_size"], adopted["max_batch_delay_ms"], adopted["workers"])
    r.controller = f"the new sidecar adopted {adopted_t} (live: {held}); " + _control_summary(
        sc2.records(), 0.0
    )
    r.checks = {
        "the server kept the last settings": held == at_kill,
        "the new sidecar adopted the live settings (no jump)": adopted_t == held,
        "no request failed": r.failed == 0,
        "the new sidecar kept running": alive and code == 0,
    }
    return r


def management_unreachable(env: FaultEnv) -> FaultResult:
    """The management API slowed (4 s per answer), then silent, then back, through a proxy."""
    from tsadapt.serve.server import RunningServer

    r = FaultResult("management API slowed (4 s), then unreachable, then back")
    mgmt_port = int(RunningServer.load(env.workdir).management_url.rsplit(":", 1)[1])
    proxy = DelayProxy(mgmt_port)
    sc = env.sidecar("mgmt-slow", "--management-url", proxy.url)
    threads: list[int] = []
    try:
        sc.wait_ticks(2)
        base = proc_stat(sc.pid)
        t0 = time.perf_counter()
        load = Load(env.client(), 30.0, 28.0, t0)
        load.start()
        phases = ((4.0, "pass"), (8.0, "delay"), (9.0, "blackhole"), (7.0, "pass"))
        walls = {}
        for length, mode in phases:
            proxy.set_mode(mode, 4.0)
            walls.setdefault(mode, []).append(time.time())
            end = time.monotonic() + length
            while time.monotonic() < end:
                if (st := proc_stat(sc.pid)) is not None:
                    threads.append(st.threads)
                time.sleep(0.5)
        sent = load.result()
        alive = sc.proc.poll() is None
    finally:
        code = sc.stop()
        proxy.close()
    r.count(sent)
    recs = sc.records()
    slow_from, back_at = walls["delay"][0], walls["pass"][-1]
    lost = [x for x in recs if x.get("event") == "unreachable" and slow_from <= x["wall_time"]]
    changed = [a for a in applied(recs, slow_from, back_at) if a.get("ok")]
    again = [
        x for x in recs if x.get("wall_time", 0) >= back_at and x.get("event") != "unreachable"
    ]
    r.recovery_s = again[0]["wall_time"] - back_at if again else float("nan")
    r.recovery = "API back to the controller's next full tick"
    r.controller = (f"reported {len(lost)} unreachable ticks "
                    f"({lost[0]['error'][:80] if lost else 'none'}), applied {len(changed)} "
                    f"changes while cut off; threads {base.threads if base else '?'} before, "
                    f"{max(threads) if threads else '?'} at most")  # fmt: skip
    r.details = {"threads_before": base.threads if base else None,
                 "threads_max": max(threads) if threads else None,
                 "proxy_connections": proxy.connections, "sidecar_exit": code}  # fmt: skip
    r.checks = {
        "the controller reported the server unreachable": bool(lost),
        "it held (no change applied while cut off)": not changed,
        "no pile-up of threads": bool(threads) and base is not None
        and max(threads) <= base.threads + MAX_EXTRA_THREADS,
        "it resumed once the API was back": bool(again),
        "no inference request failed": r.failed == 0,
        "the controller kept running": alive and code == 0,
    }  # fmt: skip
    return r


def plugin_missing(env: FaultEnv) -> FaultResult:
    """A TorchServe without the tsadapt plugin: the controller refuses to start."""
    from tsadapt.serve.server import ServerConfig, stop

    r = FaultResult("plugin missing from plugins_path")
    cfg = ServerConfig.with_free_ports(
        workdir=env.tmp / "noplugin-ts", model_store=env.model_store, models=(MODEL,),
        plugin=False,
    )  # fmt: skip
    server = start_server(cfg)
    try:
        client = server.client(10)
        before = settings(client)
        t0 = time.perf_counter()
        load = Load(client, 20.0, 8.0, t0)
        load.start()
        ctl = write_controller_config(env.tmp / "noplugin.yaml")
        log = env.tmp / "noplugin.jsonl"
        run = subprocess.run(
            [sys.executable, "-m", "tsadapt.cli", "control", "--config", str(ctl),
             "--workdir", str(cfg.workdir), "--decision-log", str(log), "--metrics-port", "0",
             "--max-ticks", "3"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        sent = load.result()
        after = settings(client)
    finally:
        stop(cfg.workdir)
    r.count(sent)
    message = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else ""
    r.recovery = "n/a (refused at start)"
    r.controller = f"exit {run.returncode}: {message}"
    r.checks = {
        "the controller refused to start": run.returncode != 0,
        "the message names plugins_path": "plugins_path" in message,
        "no traceback": "Traceback" not in run.stderr,
        "the server was not touched": before == after and not log.exists(),
        "no request failed": r.failed == 0,
    }
    return r


class _ScaleOnce:
    """A policy that asks for two workers once (so a slow scale-up is in flight)."""

    name = "scale-once"

    def decide(self, observation: Any, state: Any) -> Any:  # noqa: ANN401
        from tsadapt.policy.types import Action

        m = next((x for x in observation.models if x.name == MODEL), None)
        if state.tick == 0 and m is not None and m.settings.workers == 1:
            s = m.settings
            return (Action(MODEL, s.batch_size, s.max_batch_delay_ms, 2),), state.next()
        return (), state.next()


def unregister_in_flight(env: FaultEnv) -> FaultResult:
    """Unregister and re-register the model while the controller's scale-up to two workers
    is in flight; the controller must drop the model, then adopt it again."""
    from tsadapt.policy.controller_config import from_dict
    from tsadapt.serve.server import register
    from tsadapt.sidecar.decision_log import read_log
    from tsadapt.sidecar.runner import Sidecar

    r = FaultResult("model unregistered and re-registered during a scale-up")
    client = env.client()
    cfg = from_dict({**CONTROLLER, "policy": "static"})
    log = env.tmp / "unregister.jsonl"
    sidecar = Sidecar(cfg, _ScaleOnce(), lambda: (env.client(30), env.server.metrics_url), log)
    thread = threading.Thread(target=sidecar.run, daemon=True)
    t0 = time.perf_counter()
    load = Load(client, 20.0, 20.0, t0)
    load.start()
    time.sleep(2.0)
    fault_wall = time.time()
    thread.start()
    try:
        inflight = _wait(lambda: settings(client)[2] == 2 and len(ready_workers(client)) < 2, 30,
                         0.02)  # fmt: skip
        unreg = client.request("management", "DELETE", f"models/{MODEL}", timeout_s=60)
        if not unreg.ok:  # refused while scaling: retry until it is gone
            _wait(lambda: client.request("management", "DELETE", f"models/{MODEL}").ok, 60, 0.5)
        register(client, MODEL)
        back = time.monotonic()
        back_wall = time.time()
        readopted = _wait(lambda: any(
            x.get("event") in ("tick", "reapply") and x.get("wall_time", 0) >= back_wall
            and MODEL in x.get("settings", {}) for x in read_log(log)), 60)  # fmt: skip
        readopt_s = time.monotonic() - back if readopted else None
        time.sleep(3.0)
        sent = load.result()
    finally:
        sidecar.stop()
        thread.join(60)
    stopped_cleanly = not thread.is_alive() and read_log(log)[-1].get("event") == "stop"
    r.count(sent)
    recs = read_log(log)
    models = [x for x in recs if x.get("event") == "models"]
    outcome = [a for a in applied(recs, fault_wall) if a.get("changes", {}).get("workers") == 2]
    r.recovery_s = readopt_s if readopt_s is not None else float("nan")
    r.recovery = "re-registration to the controller's next tick with the model under control"
    results = [(a["ok"], (a.get("error") or "")[:60]) for a in outcome]
    changes = [(x["added"], x["removed"]) for x in models]
    r.controller = f"scale-up result (ok, error): {results}; model set changes: {changes}"
    live_workers = ready_workers(client)
    r.details = {"unregister_status": unreg.status_code, "inflight_seen": bool(inflight),
                 "workers_after": live_workers}  # fmt: skip
    ticks = [x for x in recs if x.get("event") in ("tick", "reapply") and "settings" in x]
    believed = ticks[-1]["settings"].get(MODEL) if ticks else None
    live = settings(client)
    r.details["controller_settings_at_end"] = believed
    r.details["live_settings_at_end"] = live
    r.checks = {
        "the scale-up was in flight at the unregister": bool(inflight),
        "the scale-up's outcome was recorded, not raised": bool(outcome),
        "the controller's settings match the server's at the end": believed is not None
        and (believed["batch_size"], believed["max_batch_delay_ms"], believed["workers"]) == live,
        "the controller thread ran until stopped": stopped_cleanly,
        "the model serves again": len(live_workers) >= 1,
    }  # fmt: skip
    return r


def bad_inputs(env: FaultEnv) -> FaultResult:
    """A corrupt and a truncated policy file, and a config with a bad field: each refused at
    start with a message that names it; the server untouched."""
    r = FaultResult("corrupt / truncated policy file, config with a bad field")
    client = env.client()
    before = settings(client)
    corrupt = env.tmp / "corrupt.zip"
    corrupt.write_bytes(b"PK\x03\x04" + os.urandom(4096))
    truncated = env.tmp / "truncated.zip"
    data = SHIPPED_POLICY.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    good = write_controller_config(env.tmp / "good.yaml")
    bad = env.tmp / "bad.yaml"
    bad_cfg = {**CONTROLLER, "models": {MODEL: {**CONTROLLER["models"][MODEL], "max_workers": 0}}}
    bad.write_text(yaml.safe_dump(bad_cfg))
    cases = {
        "corrupt policy": (["--config", str(good), "--policy-file", str(corrupt)], "corrupt.zip"),
        "truncated policy": (["--config", str(good), "--policy-file", str(truncated)],
                             "truncated.zip"),
        "bad config field": (["--config", str(bad)], "models.text.max_workers"),
    }  # fmt: skip
    t0 = time.perf_counter()
    load = Load(client, 20.0, 10.0, t0)
    load.start()
    outcomes = {}
    for name, (args, must_name) in cases.items():
        log = env.tmp / f"bad-{name.replace(' ', '-')}.jsonl"
        run = subprocess.run(
            [sys.executable, "-m", "tsadapt.cli", "control", *args, "--workdir",
             str(env.workdir), "--decision-log", str(log), "--metrics-port", "0",
             "--max-ticks", "2"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        last = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else ""
        outcomes[name] = {"exit": run.returncode, "message": last, "names_it": must_name in last,
                          "traceback": "Traceback" in run.stderr, "log": log.exists()}  # fmt: skip
    sent = load.result()
    after = settings(client)
    r.count(sent)
    r.recovery = "n/a (refused at start)"
    r.controller = "; ".join(f"{k}: exit {v['exit']}, '{v['message'][:90]}'"
                             for k, v in outcomes.items())  # fmt: skip
    r.details = outcomes
    r.checks = {
        "each refused at start": all(v["exit"] != 0 for v in outcomes.values()),
        "each message names the file or field": all(v["names_it"] for v in outcomes.values()),
        "no traceback": not any(v["traceback"] for v in outcomes.values()),
        "no decision log started": not any(v["log"] for v in outcomes.values()),
        "the server was not touched": before == after and r.failed == 0,
    }
    return r


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LOG_LIMIT_BYTES, LOG_LIMIT_BYTES))


def decision_log_full(env: FaultEnv) -> FaultResult:
    """The decision log cannot grow (RLIMIT_FSIZE in the sidecar): it keeps controlling and
    reports the error once."""
    r = FaultResult(f"decision log's disk full (file-size limit {LOG_LIMIT_BYTES // 1024} KiB)")
    client = env.client()
    sc = env.sidecar("disk-full", preexec=_limit_file_size)
    try:
        sc.wait_ticks(1)
        t0 = time.perf_counter()
        load = Load(client, 30.0, 22.0, t0)
        load.start()
        full = _wait(lambda: sc.decisions.stat().st_size >= LOG_LIMIT_BYTES - 2048, 30)
        full_at = time.monotonic()
        sent = load.result()
        beyond_s = time.monotonic() - full_at
        alive = sc.proc.poll() is None
    finally:
        code = sc.stop()
    r.count(sent)
    errors = [line for line in sc.lines if "decision log" in line and "ERROR" in line]
    stopped = [line for line in sc.lines if "controller stopped after" in line]
    ticks = int(stopped[-1].split("after ")[1].split()[0]) if stopped else 0
    logged = sum("tick" in x for x in sc.records())
    r.recovery = "n/a (the log stays full)"
    first = errors[0][-120:] if errors else "none"
    r.controller = (f"{ticks} ticks in all, {logged} of them logged before the limit; "
                    f"{len(errors)} error line(s): {first}")  # fmt: skip
    r.details = {"ticks": ticks, "logged_ticks": logged, "seconds_after_full": beyond_s,
                 "log_bytes": sc.decisions.stat().st_size, "sidecar_exit": code}  # fmt: skip
    r.checks = {
        "the log reached the limit": bool(full),
        "the controller kept ticking after it": ticks >= logged + int(beyond_s * 0.5),
        "the error was reported once": len(errors) == 1,
        "the controller ran until stopped and exited cleanly": alive and code == 0,
        "no request failed": r.failed == 0,
    }
    return r


def overload_burst(env: FaultEnv) -> FaultResult:
    """A 3-second burst far past capacity (more requests in flight than the job queue
    holds): fast 503s, no worker lost, recovery measured on a steady load beside it."""
    import numpy as np

    n, at, steady_s = 400, 5.0, 26.0
    rate, length = n / 0.2, 0.2  # as fast as the sender can: four times the job queue
    r = FaultResult(f"burst far past capacity ({n} requests at once, job queue 100)")
    sc = env.sidecar("burst")
    log = env.workdir / "logs" / "ts_log.log"
    deaths_before = log.read_text(errors="replace").count("died") if log.exists() else 0
    try:
        sc.wait_ticks(2)
        client = env.client()
        workers_before = len(ready_workers(client))
        t0 = time.perf_counter()
        steady = Load(client, 20.0, steady_s, t0, seed=1)
        burst = Load(env.client(), rate, length, t0 + at, seed=2, threads=n)
        steady.start()
        burst.start()
        b = burst.result()
        s = steady.result()
        alive = sc.proc.poll() is None
        workers_after = _wait(lambda: len(ready_workers(client)) >= workers_before, 30)
    finally:
        code = sc.stop()
    deaths = (log.read_text(errors="replace").count("died") if log.exists() else 0) - deaths_before
    r.count(b)
    r.count(s)
    shed_ms = b.service_ms[b.status == 503]
    r.recovery_s = last_bad_after(steady, s, at + length)
    r.recovery = "burst end to the last steady request not answered within the SLO"
    r.controller = "kept controlling: " + _control_summary(sc.records(), 0.0)
    r.details = {
        "burst_sent": len(b.status), "burst_shed": int((b.status == 503).sum()),
        "burst_last_answer_s": float(np.nanmax(b.latency_ms / 1000 + burst.times)
                                     - burst.times.min()),
        "shed_service_p50_ms": float(np.median(shed_ms)) if shed_ms.size else None,
        "shed_service_p99_ms": float(np.percentile(shed_ms, 99)) if shed_ms.size else None,
        "worker_deaths_logged": deaths, "sidecar_exit": code,
    }  # fmt: skip
    r.checks = {
        "the burst was past capacity (requests were shed)": r.shed > 0,
        "nothing failed but shedding": r.failed == 0,
        "no worker lost": deaths == 0 and bool(workers_after),
        "recovered before the steady load ended": r.recovery_s < steady_s - (at + length) - 1.0,
        "the controller kept running": alive and code == 0,
    }  # fmt: skip
    return r


#: Every fault, in the order the report lists them (name -> case).
FAULTS: dict[str, Callable[[FaultEnv], FaultResult]] = {
    "worker-kill": worker_kill,
    "frontend-restart": frontend_restart,
    "sidecar-restart": sidecar_restart,
    "management-unreachable": management_unreachable,
    "plugin-missing": plugin_missing,
    "unregister-in-flight": unregister_in_flight,
    "bad-inputs": bad_inputs,
    "decision-log-full": decision_log_full,
    "overload-burst": overload_burst,
}
