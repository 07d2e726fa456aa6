"""Faults that cut or corrupt what the controller depends on: the management API slowed and
silent, the plugin missing, a model unregistered mid-change, bad policy and config files, a
decision log that cannot grow (rows of ``reliability.md``)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from typing import Any

import yaml

from tsadapt.experiments.fault_harness import (
    CONTROLLER,
    MODEL,
    FaultEnv,
    FaultResult,
    Load,
    applied,
    ready_workers,
    settings,
    start_server,
    wait_for,
    write_controller_config,
)
from tsadapt.experiments.soak_probe import proc_stat
from tsadapt.experiments.tcp_proxy import DelayProxy
from tsadapt.policy.ppo_policy import SHIPPED_POLICY

#: The decision log's file-size limit in the disk-full run (bytes).
LOG_LIMIT_BYTES = 16 * 1024
#: Largest increase of the sidecar's thread count while the management API hangs.
MAX_EXTRA_THREADS = 2


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
        r.details["phases_start_s"] = round(time.perf_counter() - t0, 2)
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
    r.count(sent, load.times)
    recs = sc.records()
    slow_from, back_at = walls["delay"][0], walls["pass"][-1]
    lost = [x for x in recs if x.get("event") == "unreachable" and slow_from <= x["wall_time"]]
    during = applied(recs, slow_from, back_at)
    changed = [a for a in during if a.get("ok")]
    retried = [line for line in sc.lines if "failed (try" in line]  # the actuator's warnings
    again = [
        x for x in recs if x.get("wall_time", 0) >= back_at and x.get("event") != "unreachable"
    ]
    r.recovery_s = again[0]["wall_time"] - back_at if again else float("nan")
    r.recovery = "API back to the controller's next full tick"
    r.controller = (f"reported {len(lost)} unreachable ticks and {len(retried)} failed tries "
                    f"({lost[0]['error'][:80] if lost else 'none'}), applied {len(changed)} "
                    f"changes while cut off; threads {base.threads if base else '?'} before, "
                    f"{max(threads) if threads else '?'} at most")  # fmt: skip
    r.details |= {"threads_before": base.threads if base else None,
                 "threads_max": max(threads) if threads else None,
                 "proxy_connections": proxy.connections, "sidecar_exit": code}  # fmt: skip
    r.checks = {
        "the controller reported the server unreachable (or its calls failing)": bool(
            lost or retried
        ),
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
        inflight = wait_for(lambda: settings(client)[2] == 2 and len(ready_workers(client)) < 2, 30,
                         0.02)  # fmt: skip
        unreg = client.request("management", "DELETE", f"models/{MODEL}", timeout_s=60)
        if not unreg.ok:  # refused while scaling: retry until it is gone
            wait_for(lambda: client.request("management", "DELETE", f"models/{MODEL}").ok, 60, 0.5)
        register(client, MODEL)
        back = time.monotonic()
        back_wall = time.time()
        readopted = wait_for(lambda: any(
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
    r.details |= {"unregister_status": unreg.status_code, "inflight_seen": bool(inflight),
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
    r.controller = "; ".join(f"{k}: exit {v['exit']}, '{v['message'][:200]}'"
                             for k, v in outcomes.items())  # fmt: skip
    r.details |= outcomes
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
        full = wait_for(lambda: sc.decisions.stat().st_size >= LOG_LIMIT_BYTES - 2048, 30)
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
    r.details |= {"ticks": ticks, "logged_ticks": logged, "seconds_after_full": beyond_s,
                 "log_bytes": sc.decisions.stat().st_size, "sidecar_exit": code}  # fmt: skip
    r.checks = {
        "the log reached the limit": bool(full),
        "the controller kept ticking after it": ticks >= logged + int(beyond_s * 0.5),
        "the error was reported once": len(errors) == 1,
        "the controller ran until stopped and exited cleanly": alive and code == 0,
        "no request failed": r.failed == 0,
    }
    return r
