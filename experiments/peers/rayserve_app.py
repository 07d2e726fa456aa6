"""The demo models on Ray Serve: one application (one deployment) per model, run as a process.

Each replica loads its model exactly as a TorchServe worker does, through the project's own
handler (``tsadapt.handlers.local.load_local``: the same seeded weights, the same JSON
bodies, validation, collation, forward and answers, one intra-op thread), so the two
systems run the same code per batch. Routes are TorchServe's (``POST /predictions/<model>``),
so the bench's Locust file needs no change.

Settings (:func:`peer_settings`), Ray Serve's documented defaults except ONE tuned setting:

* ``@serve.batch``: ``max_batch_size`` / ``batch_wait_timeout_s`` = our registration defaults
  (``DEMO_MODELS`` batch size and max batch delay);
* ``autoscaling_config``: ``min_replicas`` / ``max_replicas`` = the scenario's
  ``min_workers`` / ``max_workers`` (``initial_replicas`` = the registration's workers);
  everything else (target 2 ongoing requests per replica, 30 s look-back, 30 s upscale and
  600 s downscale delay) Ray's defaults;
* tuned: ``max_ongoing_requests`` = 2 x the batch size (Ray's default is 5). A replica is only
  sent that many requests at a time, so with the default a batch of 8 or 16 can never fill;
  Ray's batching guide says to raise it above the batch size. Twice lets the next batch
  gather while one runs, as TorchServe's frontend queue does for its workers.

Ray on a small box: ``num_cpus`` = the host's cores, each replica asks for an equal share so
that every model's ``max_replicas`` fit, a small object store, no dashboard, no usage
stats, HTTP on 127.0.0.1 only; in single-node mode Ray's own servers (GCS, raylet, agents,
proxy, controller) listen on 127.0.0.1 too. One exception is Ray's, not ours: each replica
of Ray 2.60 opens an inter-deployment gRPC port on all interfaces (hard-coded in
``ray/serve/_private/replica.py``); nothing is sent to it here (no deployment calls another).

``python -m tsadapt.experiments.peers.rayserve_app --port P
--scenario S --status FILE`` serves until SIGTERM/SIGINT, writes ``FILE`` (JSON: running
replicas per model, once a second) and shuts Serve and Ray down on the way out.
"""

from __future__ import annotations

import argparse
import json
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
from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.policy.sim.scenario import Scenario, load_scenario

#: The one setting tuned away from Ray Serve's defaults: max_ongoing_requests per replica,
#: as a multiple of the model's batch size.
TUNED_ONGOING_PER_BATCH = 2
#: Object store of the local Ray node (Ray's minimum is 75 MiB; the models need none).
OBJECT_STORE_BYTES = 100 * 1024 * 1024
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


@dataclass(frozen=True)
class PeerSettings:
    """Ray Serve settings of one model's deployment."""

    model: str
    max_batch_size: int
    batch_wait_timeout_s: float
    min_replicas: int
    max_replicas: int
    initial_replicas: int
    max_ongoing_requests: int
    replica_num_cpus: float

    def autoscaling_config(self) -> dict[str, int]:
        """Replica bounds only: the rest of Ray's autoscaling config stays at its defaults."""
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "initial_replicas": self.initial_replicas,
        }


def peer_settings(scenario: Scenario, cores: int | None = None) -> list[PeerSettings]:
    """Per model of ``scenario``: our registration defaults and the scenario's worker bounds."""
    cores = cores or os.cpu_count() or 1
    total = sum(m.max_workers for m in scenario.models)
    out = []
    for m in scenario.models:
        if m.name not in DEMO_MODELS:
            raise ValueError(f"models: {m.name!r} is not a demo model ({', '.join(DEMO_MODELS)})")
        reg = DEMO_MODELS[m.name]
        lo = max(1, m.min_workers)
        out.append(
            PeerSettings(
                model=m.name,
                max_batch_size=reg.batch_size,
                batch_wait_timeout_s=reg.max_batch_delay_ms / 1000.0,
                min_replicas=lo,
                max_replicas=m.max_workers,
                initial_replicas=min(max(lo, reg.min_workers), m.max_workers),
                max_ongoing_requests=TUNED_ONGOING_PER_BATCH * reg.batch_size,
                replica_num_cpus=round(cores / total, 4),
            )
        )
    return out


def build_app(s: PeerSettings) -> Any:  # noqa: ANN401 - a ray.serve Application
    """The Ray Serve application of one model (Ray is imported here, not at module load)."""
    import asyncio
    import json as _json

    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    @serve.deployment(
        name=s.model,
        max_ongoing_requests=s.max_ongoing_requests,
        autoscaling_config=s.autoscaling_config(),
        ray_actor_options={"num_cpus": s.replica_num_cpus},
    )
    class ModelReplica:
        def __init__(self, model: str) -> None:
            from tsadapt.handlers.local import load_local

            self.local = load_local(DEMO_MODELS[model], Path(tempfile.mkdtemp(prefix=model)))

        def _run(self, bodies: list[bytes]) -> list[tuple[int, bytes]]:
            answers = self.local.run([{"body": b} for b in bodies])
            return [(self.local.status(i), _json.dumps(a).encode()) for i, a in enumerate(answers)]

        @serve.batch(max_batch_size=s.max_batch_size, batch_wait_timeout_s=s.batch_wait_timeout_s)
        async def batch(self, bodies: list[bytes]) -> list[tuple[int, bytes]]:
            return await asyncio.to_thread(self._run, bodies)

        async def __call__(self, request: Request) -> Response:
            status, body = await self.batch(await request.body())
            return Response(body, status_code=status, media_type="application/json")

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


def serve_main(scenario_path: Path, port: int, status_path: Path) -> int:
    """Start Ray and the applications, report replicas until signalled, shut down."""
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    import ray
    from ray import serve

    scenario = load_scenario(scenario_path)
    settings = peer_settings(scenario)
    stop = {"now": False}

    def _stop(*_: Any) -> None:
        stop["now"] = True

    ray.init(
        num_cpus=os.cpu_count() or 1,
        num_gpus=0,
        include_dashboard=False,
        object_store_memory=OBJECT_STORE_BYTES,
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
    a = p.parse_args(argv)
    return serve_main(a.scenario, a.port, a.status)


if __name__ == "__main__":
    sys.exit(main())
