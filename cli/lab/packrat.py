"""``tsadapt lab packrat bench-planner | bench``: the Packrat planner's speed and the
planned-vs-fat bench on a real server (exit codes as ``tsadapt packrat``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from tsadapt.cli.packrat_commands import EXIT_BAD_INPUT


def _error(message: str) -> None:
    print(f"tsadapt lab packrat: error: {message}", file=sys.stderr)


def cmd_bench_planner(args: argparse.Namespace) -> int:
    """Handle ``lab packrat bench-planner``."""
    from tsadapt.experiments import packrat_planner_speed as bench_planner

    try:
        return bench_planner.run_args(args)
    except (OSError, ValueError) as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT


def cmd_bench(args: argparse.Namespace) -> int:
    """Handle ``lab packrat bench``."""
    from tsadapt.experiments import packrat_bench_run as bench_run

    try:
        return bench_run.run(args, " ".join(["tsadapt", *map(shlex.quote, sys.argv[1:])]))
    except bench_run.BenchInputError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT


def register(subparsers: Any) -> None:
    """Add ``packrat`` with ``bench-planner`` and ``bench`` to the lab's sub-parsers."""
    from tsadapt.experiments import packrat_planner_speed as bench_planner

    packrat = subparsers.add_parser(
        "packrat", help="Packrat benches: planner speed, planned vs fat"
    )
    sub = packrat.add_subparsers(dest="packrat_command", required=True)
    b = sub.add_parser("bench-planner", help="time the planner (synthetic and published profiles)")
    bench_planner.add_arguments(b)
    b.set_defaults(func=cmd_bench_planner)

    b = sub.add_parser(
        "bench", help="planned vs fat instance on a real server; writes docs/results/packrat.md"
    )
    b.add_argument("--model", required=True, help="demo model name")
    b.add_argument("--profile", metavar="FILE.csv", help="default: profile now (quick)")
    b.add_argument("--batches", default="2,4,8,16,32", help="batch sizes B to compare")
    b.add_argument("--rounds", type=int, default=30, help="bursts per configuration and B")
    b.add_argument("--switch-batch", type=int, default=8, help="B of the live-switch run")
    b.add_argument("--switch-rate", type=float, default=30.0, help="req/s of the switch run")
    b.add_argument("--switch-period", type=float, default=8.0, help="s between switches")
    b.add_argument("--no-switch", action="store_true", help="skip the live-switch run")
    b.add_argument("--out", default="docs/results", help="report folder")
    b.add_argument("--workdir", default="runs/packrat/bench", help="server work dir")
    b.set_defaults(func=cmd_bench)
