"""``tsadapt control``: run the adaptive controller sidecar beside a running TorchServe."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from tsadapt import constants as C

DEFAULT_CONFIG = Path("configs/controller.yaml")
DEFAULT_METRICS_PORT = 9091

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "control",
        help="run the adaptive batching/worker controller beside a running TorchServe",
        description="Observe every tick, decide with a policy, guard, apply, and log decisions.",
    )
    p.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="controller YAML (default: %(default)s)"
    )
    p.add_argument(
        "--policy", default=None, help="static | aimd | queue | ppo (default: the config's)"
    )
    p.add_argument(
        "--policy-file",
        type=Path,
        default=None,
        help="trained PPO policy for --policy ppo (default: the shipped policy/trained/ppo.zip)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=C.DEFAULT_WORKDIR,
        help="work dir of the server to control (default: %(default)s)",
    )
    p.add_argument(
        "--decision-log",
        type=Path,
        default=None,
        help="JSON-lines decision log (default: <workdir>/controller/decisions.jsonl)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help="sidecar /metrics port (0: any free; default %(default)s)",
    )
    p.add_argument(
        "--metrics-host",
        default=C.LOOPBACK,
        help="address the sidecar /metrics binds to (default %(default)s; 0.0.0.0 in a "
        "Kubernetes pod, so Prometheus can scrape it)",
    )
    p.add_argument("--tick-s", type=float, default=None, help="override the config's tick_s")
    p.add_argument("--max-ticks", type=int, default=None, help="stop after this many ticks")
    p.set_defaults(func=run_control)


def run_control(args: argparse.Namespace) -> int:
    from tsadapt.plugin.sidecar import Sidecar
    from tsadapt.policy.controller_config import load
    from tsadapt.policy.rules import make_policy
    from tsadapt.server import RunningServer

    config = load(args.config, policy=args.policy, tick_s=args.tick_s)
    workdir = Path(args.workdir)

    def connect():
        server = RunningServer.load(workdir)  # re-read: a restarted server may have new ports
        return server.client(timeout_s=30.0), server.metrics_url

    log_path = args.decision_log or workdir / "controller" / "decisions.jsonl"
    if config.policy == "ppo":
        from tsadapt.policy.ppo_policy import SHIPPED_POLICY
        from tsadapt.policy.ppo_runtime import load_runtime_policy

        policy = load_runtime_policy(args.policy_file or SHIPPED_POLICY, config)
    else:
        policy = make_policy(config.policy, config)
    sidecar = Sidecar(
        config,
        policy,
        connect,
        log_path,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )
    previous = signal.signal(signal.SIGTERM, lambda *_: sidecar.stop())
    print(
        f"controller: policy {config.policy}, tick {config.tick_s} s, "
        f"decision log {log_path}, metrics {sidecar.exporter.url}",
        flush=True,
    )
    try:
        ticks = sidecar.run(max_ticks=args.max_ticks)
    except KeyboardInterrupt:
        sidecar.stop()
        ticks = sidecar.tick_count
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"controller stopped after {ticks} tick(s)", flush=True)
    return 0
