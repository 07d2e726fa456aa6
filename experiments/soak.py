"""``tsadapt lab soak``: a real TorchServe under a long, bursty, trace-driven load with the PPO
controller acting, watched for leaks.

One run: a fresh server on free loopback ports with the three demo models and a model that is
not ours (a plain ``BaseHandler`` MLP, :mod:`.foreign_model`); the controller sidecar
(``tsadapt control --policy ppo``) as a subprocess; the open-loop load of :mod:`.soak_load`;
every ``sample_s`` the RSS, open fds and threads of the JVM, each worker and the sidecar and
the decision log's size (:mod:`.soak_probe`). Then ``soak.md``, ``soak.json`` and
``soak.png`` (:mod:`.soak_report`). Everything is bounded: the schedule's length and count,
each request's timeout, and the process stops in ``finally``.
"""

from __future__ import annotations

import json
import math
import platform
import shlex
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tsadapt.experiments import foreign_model, soak_report
from tsadapt.experiments.bench import warm_up
from tsadapt.experiments.bench_schedule import Schedule
from tsadapt.experiments.fault_harness import SidecarProc
from tsadapt.experiments.hostcpu import CpuMonitor
from tsadapt.experiments.soak_load import LoadShape, Sent, build_schedule, send
from tsadapt.experiments.soak_probe import Prober, ProbeSample, find_frontend, worker_pids
from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.sidecar.decision_log import read_log

DEFAULT_OUT = Path("docs/results")
DEFAULT_RUNS = Path("runs/soak")
#: The demo models' SLOs (ms), as the bursty scenario states them for this box.
DEMO_SLO_MS = {"image": 200.0, "text": 150.0, "tabular": 50.0}
#: Share of the load per model.
WEIGHTS = {"tabular": 0.5, "text": 0.25, "image": 0.1, foreign_model.NAME: 0.15}
#: The controller's per-model limits in the soak (worker budget: all models together).
LIMITS = {
    "image": {"min_workers": 1, "max_workers": 2, "max_batch": 16, "max_delay_ms": 50},
    "text": {"min_workers": 1, "max_workers": 2, "max_batch": 32, "max_delay_ms": 30},
    "tabular": {"min_workers": 1, "max_workers": 2, "max_batch": 64, "max_delay_ms": 15},
    foreign_model.NAME: {"min_workers": 1, "max_workers": 2, "max_batch": 32, "max_delay_ms": 20},
}
WORKER_BUDGET = 6
#: Seconds the sidecar gets to write its first tick.
CONTROLLER_START_S = 90.0
#: Tries at starting the server (a key file read half-written fails with a JSON error).
START_ATTEMPTS = 3


@dataclass(frozen=True)
class SoakConfig:
    """One soak run."""

    duration_s: float = 3600.0
    sample_s: float = 10.0
    out_dir: Path = DEFAULT_OUT
    runs_dir: Path = DEFAULT_RUNS
    model_store: Path | None = None  # default: <runs_dir>/model-store
    policy_file: Path | None = None  # default: the shipped PPO policy
    seed: int = 7
    command: str = "tsadapt lab soak"
    length_note: str = ""  # e.g. why the run is shorter than the hour
    token_expiration_min: int | None = None  # TorchServe's key lifetime (default 60 min)


def controller_config() -> dict[str, Any]:
    """The PPO controller's config for the soak's four models."""
    slo = {**DEMO_SLO_MS, foreign_model.NAME: foreign_model.SLO_MS}
    return {
        "policy": "ppo",
        "tick_s": 1.0,
        "window_s": 5.0,
        "worker_budget": WORKER_BUDGET,
        "cooldown_s": 3.0,
        "models": {m: {"slo_ms": slo[m], **LIMITS[m]} for m in LIMITS},
    }


def _start_server(config: Any) -> Any:  # noqa: ANN401 - serve.server types
    from tsadapt.serve.server import start

    for attempt in range(START_ATTEMPTS):
        try:
            return start(config)
        except ValueError:
            if attempt + 1 == START_ATTEMPTS:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def bodies(models: list[str]) -> dict[str, list[Any]]:
    """Eight valid request bodies per model."""
    out: dict[str, list[Any]] = {}
    for name in models:
        if name in DEMO_MODELS:
            out[name] = [DEMO_MODELS[name].example(np.random.default_rng(i)) for i in range(8)]
        else:
            out[name] = [foreign_model.payload(i) for i in range(8)]
    return out


def run_soak(cfg: SoakConfig, on_progress: Any = print) -> dict[str, Any]:  # noqa: ANN401
    """Run the soak; write the report; return it (the JSON's content)."""
    from tsadapt.serve.server import ServerConfig, stop

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    rundir = (cfg.runs_dir / stamp).resolve()
    rundir.mkdir(parents=True, exist_ok=True)
    store = (cfg.model_store or cfg.runs_dir / "model-store").resolve()
    store.mkdir(parents=True, exist_ok=True)
    foreign_model.build_archive(store)
    models = [*DEMO_SLO_MS, foreign_model.NAME]
    server_cfg = ServerConfig.with_free_ports(
        workdir=rundir / "server", model_store=store, token_expiration_min=cfg.token_expiration_min
    )
    decisions = rundir / "decisions.jsonl"
    ctl_path = rundir / "controller.yaml"
    ctl_path.write_text(yaml.safe_dump(controller_config()))
    shape = LoadShape(WEIGHTS, seed=cfg.seed)
    slo = {m: float(v["slo_ms"]) for m, v in controller_config()["models"].items()}
    schedule = build_schedule(shape, cfg.duration_s, rundir, slo)
    on_progress(f"soak: {len(schedule)} requests over {cfg.duration_s:.0f} s; run dir {rundir}")
    server = _start_server(server_cfg)
    sidecar = prober = None
    cpu = CpuMonitor(period_s=5.0)
    try:
        client = server.client(timeout_s=30)
        foreign_model.register(client)
        warm_up(server, list(DEMO_SLO_MS), 1)
        policy = ["--policy-file", str(cfg.policy_file)] if cfg.policy_file else []
        sidecar = SidecarProc(
            ["--config", str(ctl_path), "--policy", "ppo", "--workdir", str(server_cfg.workdir),
             *policy], decisions, out=rundir / "controller.log",
        )  # fmt: skip
        sidecar.wait_ticks(1, CONTROLLER_START_S)
        frontend = find_frontend(server.pid)
        sc_pid = sidecar.pid
        t0 = time.perf_counter()
        prober = Prober(
            lambda: frontend, lambda: sc_pid, lambda: worker_pids(client, models), decisions, t0,
            cfg.sample_s,
        )  # fmt: skip
        cpu.start()
        prober.start()
        sent = send(client, schedule, bodies(models), t0=t0)
        prober.stop()
        prober.samples.append(prober.sample())  # the state at the very end
        cpu_load = cpu.stop()
        sidecar_alive = sidecar.proc.poll() is None
        sidecar_exit = sidecar.stop()
    finally:
        if prober is not None and prober.is_alive():
            prober.stop()
        if sidecar is not None:
            sidecar.stop()
        stop(server_cfg.workdir)
    extra = {
        "run_dir": str(rundir),
        "sidecar_alive_at_end": sidecar_alive,
        "sidecar_exit_code": sidecar_exit,
        "cpu": cpu_load.as_dict(),
    }
    save_raw(rundir, cfg, schedule, sent, prober.samples, shape, models, extra)
    return render(rundir, cfg.out_dir)


def save_raw(rundir: Path, cfg: SoakConfig, schedule: Any, sent: Any, samples: list,  # noqa: ANN401
             shape: LoadShape, models: list[str], extra: dict[str, Any]) -> None:  # fmt: skip
    """Everything the report is computed from, in the run dir (``--render`` re-reads it)."""
    np.savez_compressed(
        rundir / "requests.npz", times=schedule.times, model_idx=schedule.model_idx,
        latency_ms=sent.latency_ms, status=sent.status, done=sent.done,
    )  # fmt: skip
    meta = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "models": models,
        "schedule_models": list(schedule.models),
        "slo_ms": dict(schedule.slo_ms),
        "seed": schedule.seed,
        "shape": {**asdict(shape), "weights": dict(shape.weights)},
        "samples": [s.as_dict() for s in samples],
        **extra,
    }
    (rundir / "raw.json").write_text(json.dumps(_finite(meta)) + "\n")


def render(rundir: Path, out_dir: Path, note: str | None = None) -> dict[str, Any]:
    """Compute the report from a run dir's raw files; write it to ``out_dir``; return it
    (``note``: a new length note)."""
    meta = json.loads((Path(rundir) / "raw.json").read_text())
    if note is not None:
        meta["config"]["length_note"] = f" ({note})" if note else ""
        words = shlex.split(meta["config"]["command"])
        if "--note" in words:  # the command line states the note the report shows
            words[words.index("--note") + 1] = note
            meta["config"]["command"] = shlex.join(words)
    arrays = np.load(Path(rundir) / "requests.npz")
    cfg_fields = dict(meta["config"])
    cfg = SoakConfig(**{
        **cfg_fields,
        **{k: Path(cfg_fields[k]) for k in ("out_dir", "runs_dir") if cfg_fields.get(k)},
    })  # fmt: skip
    schedule = Schedule(
        arrays["times"], arrays["model_idx"], tuple(meta["schedule_models"]), cfg.duration_s,
        meta["seed"], (), meta["slo_ms"],
    )  # fmt: skip
    sent = Sent(len(schedule))
    sent.latency_ms, sent.status, sent.done = arrays["latency_ms"], arrays["status"], arrays["done"]
    samples = [ProbeSample.from_dict(d) for d in meta["samples"]]
    shape = LoadShape(**meta["shape"])
    report = build_report(cfg, schedule, sent, samples, Path(rundir) / "decisions.jsonl", shape,
                          meta["models"])  # fmt: skip
    cpu = meta["cpu"]
    report |= {k: meta[k] for k in ("run_dir", "sidecar_alive_at_end", "sidecar_exit_code", "cpu")}
    report["host"] += (
        f"; during the run other processes kept {cpu['others_busy_cores']:.2f} of "
        f"{cpu['cores']} cores busy on average"
    )
    write(report, out_dir)
    return report


def build_report(cfg: SoakConfig, schedule: Any, sent: Any, samples: list, decisions: Path,  # noqa: ANN401
                 shape: LoadShape, models: list[str]) -> dict[str, Any]:  # fmt: skip
    t_from = soak_report.judged_from(cfg.duration_s)
    records = read_log(decisions) if decisions.is_file() else []
    report: dict[str, Any] = {
        "command": cfg.command,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": cfg.duration_s,
        "length_note": cfg.length_note,
        "token_expiration_min": cfg.token_expiration_min,
        "sample_s": cfg.sample_s,
        "judged_from_s": t_from,
        "host": f"{platform.system()} {platform.machine()}, {_cores()} cores",
        "models": models,
        "foreign_model": foreign_model.NAME,
        "load": {**asdict(shape), "weights": dict(shape.weights)},
        "requests": len(schedule),
        "requests_not_done": int((~sent.done).sum()),
        "decision_log": decisions.name,
        "decision_log_bytes": decisions.stat().st_size if decisions.is_file() else 0,
        "controller": soak_report.controller_summary(records),
        "controller_config": controller_config(),
        "totals": soak_report.outcomes(schedule, sent),
        "windows": soak_report.attainment_windows(schedule, sent, cfg.duration_s),
        "processes": soak_report.process_trends(samples, t_from),
        "samples": [s.as_dict() for s in samples],
    }
    report["verdicts"] = soak_report.verdicts(report)
    return report


def _cores() -> int:
    import os

    return os.cpu_count() or 0


def _finite(x: Any) -> Any:  # noqa: ANN401 - JSON values
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def write(report: dict[str, Any], out_dir: Path) -> Path:
    """``soak.json``, ``soak.png`` and ``soak.md`` in ``out_dir``; the markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    here = str(Path.cwd().resolve()) + "/"
    report = {**report, "run_dir": str(report.get("run_dir", "")).replace(here, "")}
    (out_dir / "soak.json").write_text(json.dumps(_finite(report), indent=1) + "\n")
    png = soak_report.plot(report, out_dir / "soak.png")
    md = out_dir / "soak.md"
    soak_report.write_markdown(report, md, png)
    return md
