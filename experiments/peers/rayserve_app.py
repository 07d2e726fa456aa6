"""The demo models on Ray Serve: one application (one deployment) per model, run as a process.

Each replica loads its model exactly as a TorchServe worker does, through the project's own
handler (``tsadapt.handlers.local.load_local``: the same seeded weights, the same JSON
bodies, validation, collation, forward and answers, one intra-op thread), so the two
systems run the same code per batch. Routes are TorchServe's (``POST /predictions/<model>``),
so the bench's Locust file needs no change.

Two modes (:func:`peer_settings`), each tuned as a Ray user would for 10 s surges; every
setting away from Ray Serve's defaults is a field of :class:`PeerSettings` and a row of the
report's settings table (:func:`setting_rows`, with the default and the reason):

* ``fixed`` (against TorchServe's ``static``): ``num_replicas`` = the registration's workers,
  ``@serve.batch`` at the registration's batch size and max batch delay;
* ``auto`` (against our controllers): Ray's autoscaler with replicas capped at the worker
  budget, reacting within about a second, ``target_ongoing_requests`` = the batch size, and
  ``@serve.batch`` capped at the batch our controllers may use on the scenario.

Both: ``max_queued_requests`` = TorchServe's ``job_queue_size`` (Ray rejects beyond it with
503, which the bench counts as failures, as TorchServe's 503s), ``max_ongoing_requests`` =
2 x the batch size (so a batch can fill and the next gather while one runs). Ray's own
defaults otherwise, its default object store included.

Ray on a small box: ``num_cpus`` = the host's cores, each replica asks for an equal share so
that every model's replicas fit, no dashboard, no usage stats, HTTP on 127.0.0.1 only; in
single-node mode Ray's own servers (GCS, raylet, agents, proxy, controller) listen on
127.0.0.1 too. One exception is Ray's, not ours: each replica of Ray 2.60 opens an
inter-deployment gRPC port on all interfaces (hard-coded in ``ray/serve/_private/replica.py``);
nothing is sent to it here (no deployment calls another).

``python -m tsadapt.experiments.peers.rayserve_app --port P --scenario S --mode M --status
FILE`` serves until SIGTERM/SIGINT, writes ``FILE`` (JSON: running replicas per model, once
a second) and shuts Serve and Ray down on the way out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from tsadapt import constants as C
from tsadapt.experiments.peers.settings import (
    SettingRow,
    adaptive_batch_caps,
    check_demo_models,
    fixed_workers,
    queue_size,
    replica_caps,
)
from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.policy.sim.scenario import Scenario, load_scenario

MODES = ("fixed", "auto")
#: max_ongoing_requests per replica, as a multiple of the model's batch size.
TUNED_ONGOING_PER_BATCH = 2
#: Autoscaler timing for 10 s surges (Ray's defaults: 30 s upscale delay, 600 s downscale
#: delay, 30 s look-back, metrics every 10 s).
UPSCALE_DELAY_S = 1.0
DOWNSCALE_DELAY_S = 10.0
LOOK_BACK_PERIOD_S = 2.0
METRICS_INTERVAL_S = 0.5
#: Seconds between two writes of the status file.
STATUS_PERIOD_S = 1.0
#: Environment for the Ray process: no usage-stats upload, no dashboard, loopback only.
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # Single-node mode: Ray's own addresses on loopback, not the host's network address.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
}
#: Ray Serve's documented defaults of the settings this module changes (Ray 2.40-2.60).
RAY_DEFAULTS = {
    "num_replicas": "1",
    "max_ongoing_requests": "5",
    "max_queued_requests": "-1 (unbounded)",
    "max_batch_size": "10",
    "batch_wait_timeout_s": "0.01",
    "autoscaling_config": "none (fixed replicas)",
    "min_replicas": "1",
    "max_replicas": "1",
    "target_ongoing_requests": "2",
    "upscale_delay_s": "30",
    "downscale_delay_s": "600",
    "look_back_period_s": "30",
    "metrics_interval_s": "10",
    "num_cpus": "1 per replica",
}


@dataclass(frozen=True)
class PeerSettings:
    """Ray Serve settings of one model's deployment."""

    model: str
    mode: str
    max_batch_size: int
    batch_wait_timeout_s: float
    num_replicas: int  # fixed: the replicas; auto: the initial replicas
    min_replicas: int
    max_replicas: int
    max_ongoing_requests: int
    max_queued_requests: int
    replica_num_cpus: float
    target_ongoing_requests: float = 2.0

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments of ``serve.deployment`` for this model."""
        opts: dict[str, Any] = {
            "name": self.model,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "ray_actor_options": {"num_cpus": self.replica_num_cpus},
        }
        if self.mode == "fixed":
            opts["num_replicas"] = self.num_replicas
        else:
            opts["autoscaling_config"] = self.autoscaling_config()
        return opts

    def autoscaling_config(self) -> dict[str, float]:
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "initial_replicas": self.num_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": UPSCALE_DELAY_S,
            "downscale_delay_s": DOWNSCALE_DELAY_S,
            "look_back_period_s": LOOK_BACK_PERIOD_S,
            "metrics_interval_s": METRICS_INTERVAL_S,
        }


def peer_settings(scenario: Scenario, mode: str = "auto", cores: int | None = None
                  ) -> list[PeerSettings]:  # fmt: skip
    """Per model of ``scenario``, the deployment's settings in ``mode``."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    check_demo_models(scenario)
    cores = cores or os.cpu_count() or 1
    fixed = fixed_workers(scenario)
    caps = replica_caps(scenario) if mode == "auto" else fixed
    batch_caps = adaptive_batch_caps(scenario) if mode == "auto" else {}
    total = sum(caps.values())
    out = []
    for m in scenario.models:
        reg = DEMO_MODELS[m.name]
        batch = batch_caps.get(m.name, reg.batch_size)
        lo = min(max(1, m.min_workers), caps[m.name])
        out.append(
            PeerSettings(
                model=m.name,
                mode=mode,
                max_batch_size=batch,
                batch_wait_timeout_s=reg.max_batch_delay_ms / 1000.0,
                num_replicas=min(max(lo, fixed[m.name]), caps[m.name]),
                min_replicas=lo,
                max_replicas=caps[m.name],
                max_ongoing_requests=TUNED_ONGOING_PER_BATCH * batch,
                max_queued_requests=queue_size(m.name),
                replica_num_cpus=math.floor(1e4 * cores / total) / 1e4,  # never over the cores
                target_ongoing_requests=float(batch),
            )
        )
    return out


def setting_rows(run: str, settings: list[PeerSettings]) -> list[SettingRow]:
    """The settings table's rows of one Ray run: every setting away from Ray's default."""

    def per_model(f: Any) -> str:  # noqa: ANN401
        return ", ".join(f"{s.model} {f(s)}" for s in settings)

    rows = [
        ("max_batch_size", per_model(lambda s: s.max_batch_size),
         "our registration's batch size" if settings[0].mode == "fixed" else
         "the batch cap our controllers get on this scenario (SLO-feasible batch)"),
        ("batch_wait_timeout_s", per_model(lambda s: s.batch_wait_timeout_s),
         "our registration's max batch delay"),
        ("max_ongoing_requests", per_model(lambda s: s.max_ongoing_requests),
         f"{TUNED_ONGOING_PER_BATCH} x the batch: at Ray's default of 5 a batch of 8 or 16 "
         "never fills; twice lets the next batch gather while one runs"),
        ("max_queued_requests", per_model(lambda s: s.max_queued_requests),
         "TorchServe's job_queue_size: a bounded queue, rejects count as failures as "
         "TorchServe's 503s do"),
        ("num_cpus", per_model(lambda s: s.replica_num_cpus),
         "the host's cores shared so every replica fits (Ray would refuse to place them)"),
    ]  # fmt: skip
    if settings[0].mode == "fixed":
        rows.append(("num_replicas", per_model(lambda s: s.num_replicas),
                     "TorchServe static's workers (the registration's)"))  # fmt: skip
    else:
        rows += [
            ("autoscaling_config", "on", "the adaptive variant"),
            ("min_replicas", per_model(lambda s: s.min_replicas), "the scenario's min_workers"),
            ("max_replicas", per_model(lambda s: s.max_replicas),
             "the scenario's max_workers scaled so the sum fits the worker budget"),
            ("target_ongoing_requests", per_model(lambda s: s.target_ongoing_requests),
             "the batch size: one full batch per replica before it asks for another"),
            ("upscale_delay_s", str(UPSCALE_DELAY_S), "surges last 10 s"),
            ("downscale_delay_s", str(DOWNSCALE_DELAY_S), "surges come every 30 s"),
            ("look_back_period_s", str(LOOK_BACK_PERIOD_S), "react to a surge within seconds"),
            ("metrics_interval_s", str(METRICS_INTERVAL_S), "replicas report load often enough "
             "for a 2 s look-back"),
        ]  # fmt: skip
    return [SettingRow(run, k, v, RAY_DEFAULTS[k], why) for k, v, why in rows]


def build_app(s: PeerSettings) -> Any:  # noqa: ANN401 - a ray.serve Application
    """The Ray Serve application of one model (Ray is imported here, not at module load)."""
    import asyncio
    import json as _json

    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    @serve.deployment(**s.deployment_options())
    class ModelReplica:
        def __init__(self, model: str) -> None:
            from tsadapt.experiments.peers.timing import TimeAccount
            from tsadapt.handlers.local import load_local

            self.local = load_local(DEMO_MODELS[model], Path(tempfile.mkdtemp(prefix=model)))
            self.account = TimeAccount(model)

        def _run(self, bodies: list[bytes]) -> list[tuple[int, bytes]]:
            started = time.perf_counter()
            answers = self.local.run([{"body": b} for b in bodies])
            out = [(self.local.status(i), _json.dumps(a).encode()) for i, a in enumerate(answers)]
            self.account.batch(len(bodies), (time.perf_counter() - started) * 1000.0)
            return out

        @serve.batch(max_batch_size=s.max_batch_size, batch_wait_timeout_s=s.batch_wait_timeout_s)
        async def batch(self, items: list[tuple[bytes, float]]) -> list[tuple[int, bytes, float]]:
            started = time.perf_counter()
            answers = await asyncio.to_thread(self._run, [body for body, _ in items])
            return [(code, body, started) for code, body in answers]

        async def __call__(self, request: Request) -> Response:
            arrived = time.perf_counter()
            body = await request.body()
            status, answer, batch_started = await self.batch((body, arrived))
            done = time.perf_counter()
            self.account.request(1000 * (batch_started - arrived), 1000 * (done - arrived))
            return Response(answer, status_code=status, media_type="application/json")

    return ModelReplica.bind(s.model)


def replica_counts(apps: list[str]) -> dict[str, int]:
    """Running replicas per application (one deployment each), from ``serve.status()``."""
    from ray import serve

    status = serve.status()
    out = {}
    for name in apps:
        app = status.applications.get(name)
        dep = app.deployments.get(name) if app is not None else None
        states = dep.replica_states if dep is not None else {}
        out[name] = int(sum(n for st, n in states.items() if str(st).endswith("RUNNING")))
    return out


def write_status(path: Path, payload: dict[str, Any]) -> None:
    """Replace ``path`` atomically with ``payload`` as JSON."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def serve_main(scenario_path: Path, port: int, status_path: Path, mode: str) -> int:
    """Start Ray and the applications, report replicas until signalled, shut down."""
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    import ray
    from ray import serve

    scenario = load_scenario(scenario_path)
    settings = peer_settings(scenario, mode)
    stop = {"now": False}

    def _stop(*_: Any) -> None:
        stop["now"] = True

    ray.init(
        num_cpus=os.cpu_count() or 1,
        num_gpus=0,
        include_dashboard=False,
        _node_ip_address=C.LOOPBACK,
        log_to_driver=False,
    )
    # After ray.init, which installs its own handlers: ours end the loop for a clean shutdown.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        serve.start(http_options={"host": C.LOOPBACK, "port": port})
        for s in settings:
            serve.run(build_app(s), name=s.model, route_prefix=f"/predictions/{s.model}")
        apps = [s.model for s in settings]
        # Ray's processes (GCS, raylet, its workers and actors), for the bench to check that
        # none outlives the shutdown.
        pids = [[c.pid, c.create_time()] for c in psutil.Process().children(recursive=True)]
        write_status(status_path, {"ready": True, "t_epoch": time.time(), "pids": pids,
                                   "settings": [asdict(s) for s in settings],
                                   "replicas": replica_counts(apps)})  # fmt: skip
        print(f"ready: http://{C.LOOPBACK}:{port}", flush=True)
        while not stop["now"]:
            time.sleep(STATUS_PERIOD_S)
            try:
                counts = replica_counts(apps)
            except Exception as exc:  # noqa: BLE001 - a missed poll is not fatal
                print(f"status: {exc}", file=sys.stderr, flush=True)
                continue
            write_status(status_path, {"ready": True, "t_epoch": time.time(), "pids": pids,
                                       "replicas": counts})  # fmt: skip
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the demo models on Ray Serve (bench peer)")
    p.add_argument("--scenario", type=Path, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--status", type=Path, required=True, help="JSON status file to write")
    p.add_argument("--mode", choices=MODES, default="auto")
    a = p.parse_args(argv)
    return serve_main(a.scenario, a.port, a.status, a.mode)


if __name__ == "__main__":
    sys.exit(main())
