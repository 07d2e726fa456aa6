"""The ``tsadapt bench`` subcommand (wired into ``tsadapt`` by ``register``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tsadapt.experiments.bench_schedule import MAX_REQUESTS


def positive_float(value: str) -> float:
    """argparse type: a number > 0."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {x}")
    return x


def _bench(args: argparse.Namespace) -> int:
    from tsadapt.experiments.bench import BenchConfig, run_bench

    cfg = BenchConfig(
        scenario=args.scenario,
        controllers=tuple(c.strip() for c in args.controllers.split(",") if c.strip()),
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
        help=f"comma-separated, from {','.join(CONTROLLERS)}; 'best' = best adaptive available",
    )
    p.add_argument("--duration", type=positive_float, help="seconds (default: the scenario's)")
    p.add_argument("--seed", type=int, help="arrival seed (default: the scenario's)")
    p.add_argument("--max-requests", type=int, default=MAX_REQUESTS, help="cap per run")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS, help="server dirs, records")
    p.add_argument("--controller-config", type=Path, default=DEFAULT_CONTROLLER_CONFIG)
    p.add_argument("--locustfile", type=Path, help="default: loadtests/<scenario>.py")
    p.set_defaults(func=_bench)
