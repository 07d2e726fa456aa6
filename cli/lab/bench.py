"""The ``tsadapt lab bench`` subcommand (wired into ``tsadapt`` by ``register``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tsadapt.cli.arg_types import positive_float, positive_int
from tsadapt.experiments.bench_schedule import MAX_REQUESTS


def _names(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def _bench(args: argparse.Namespace) -> int:
    from tsadapt.experiments.bench import BenchConfig, run_bench
    from tsadapt.experiments.bench_controllers import expand_peers

    controllers, peers = _names(args.controllers), _names(args.peers)
    try:
        expand_peers(peers)
    except ValueError as exc:
        print(f"tsadapt lab bench: error: --{exc}", file=sys.stderr)
        return 2
    if not controllers and not peers:
        print("tsadapt lab bench: error: --controllers: nothing to run", file=sys.stderr)
        return 2
    cfg = BenchConfig(
        scenario=args.scenario,
        controllers=controllers,
        seeds=args.seeds,
        peers=peers,
        duration_s=args.duration,
        seed=args.seed,
        max_requests=args.max_requests,
        out_dir=args.out,
        runs_dir=args.runs_dir,
        controller_config=args.controller_config,
        locustfile=args.locustfile,
        command="tsadapt " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "",
    )
    results, _ = run_bench(cfg)
    return 0 if any(r.status == "ok" for r in results) else 1


def register(subparsers: Any) -> None:
    """Add ``bench`` to an ``argparse`` subparsers object (handler in ``func``)."""
    from tsadapt.experiments.bench import (
        DEFAULT_CONTROLLER_CONFIG,
        DEFAULT_OUT,
        DEFAULT_RUNS,
    )
    from tsadapt.experiments.bench_controllers import CONTROLLERS

    p = subparsers.add_parser(
        "bench",
        help="controllers side by side on real TorchServe servers (Locust, same arrivals)",
        description="Run each controller in turn on a fresh TorchServe with the same scenario "
        "and seed; write docs/results/bench-<scenario>.md and a PNG per run.",
    )
    p.add_argument("--scenario", required=True, help="scenario name (loadtests/scenarios, "
                   "configs/scenarios) or YAML path")  # fmt: skip
    p.add_argument(
        "--controllers",
        default="static",
        help=f"comma-separated, from {','.join(CONTROLLERS)}; 'best' = best adaptive available; "
        "'' = none (peers only)",
    )
    p.add_argument("--duration", type=positive_float, help="seconds (default: the scenario's)")
    p.add_argument("--seed", type=int, help="arrival seed (default: the scenario's)")
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=1,
        help="arrival draws: seed, seed+1, ...; every controller and peer runs on each, and "
        "the report gives mean ± sd and paired differences across them (default: 1)",
    )
    p.add_argument(
        "--peers",
        default="",
        help="comma-separated other serving systems on the same arrivals: rayserve "
        "(needs `pip install .[peers]`)",
    )
    p.add_argument("--max-requests", type=int, default=MAX_REQUESTS, help="cap per run")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS, help="server dirs, records")
    p.add_argument("--controller-config", type=Path, default=DEFAULT_CONTROLLER_CONFIG)
    p.add_argument("--locustfile", type=Path, help="default: loadtests/<scenario>.py")
    p.set_defaults(func=_bench)
