"""CLI subcommands of the policy package (wired into ``tsadapt`` by ``register``)."""

from __future__ import annotations

import argparse
from typing import Any


def _sim_bench(args: argparse.Namespace) -> int:
    from .bench_sim import run

    run(args.batch_sizes, args.requests)
    return 0


def register(subparsers: Any) -> None:
    """Add ``sim-bench`` to an ``argparse`` subparsers object (handler in ``func``)."""
    from .bench_sim import add_arguments

    p = subparsers.add_parser(
        "sim-bench",
        help="simulated requests per second of the simulator (one core)",
        description="Time the discrete-event simulator at several batch sizes.",
    )
    add_arguments(p)
    p.set_defaults(func=_sim_bench)
