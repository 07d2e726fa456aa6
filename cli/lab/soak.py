"""Research commands on reliability: ``tsadapt lab soak``, a long run of a real TorchServe with
the PPO controller under a bursty, trace-driven load, watched for leaks
(:mod:`tsadapt.experiments.soak`); ``tsadapt lab reliability``, faults injected under load
(:mod:`tsadapt.experiments.reliability`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from tsadapt.cli.arg_types import positive_float


def _soak(args: argparse.Namespace) -> int:
    from tsadapt.experiments.soak import SoakConfig, render, run_soak

    if args.render is not None:
        report = render(args.render, args.out, args.note or None)
        print(f"wrote {args.out / 'soak.md'} from {args.render}")
        return 0
    typed = "soak" in sys.argv[1:3]
    command = "tsadapt " + shlex.join(sys.argv[1:]) if typed else "tsadapt lab soak"
    cfg = SoakConfig(
        duration_s=args.duration,
        sample_s=args.sample_s,
        out_dir=args.out,
        runs_dir=args.runs_dir,
        model_store=args.model_store,
        policy_file=args.policy_file,
        seed=args.seed,
        command=command,
        length_note=f" ({args.note})" if args.note else "",
        token_expiration_min=args.token_expiration_min,
    )
    report = run_soak(cfg)
    for name, met in report["verdicts"].items():
        print(f"{name}: {'met' if met else 'NOT met'}")
    print(f"wrote {args.out / 'soak.md'}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tsadapt.experiments.soak import DEFAULT_OUT, DEFAULT_RUNS

    p.add_argument("--duration", type=positive_float, default=3600.0,
                   help="seconds of load (default: %(default)s)")  # fmt: skip
    p.add_argument("--sample-s", type=positive_float, default=10.0,
                   help="seconds between process samples (default: %(default)s)")  # fmt: skip
    p.add_argument("--seed", type=int, default=7, help="arrival seed (default: %(default)s)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS, help="server dir, logs")
    p.add_argument("--model-store", type=Path, help="default: <runs-dir>/model-store")
    p.add_argument("--policy-file", type=Path, help="PPO policy (default: the shipped one)")
    p.add_argument("--render", type=Path, metavar="RUN_DIR",
                   help="only rewrite the report from a finished run's folder")  # fmt: skip
    p.add_argument("--token-expiration-min", type=int, default=None,
                   help="TorchServe's key lifetime in minutes (default: its own, 60); shorter "
                   "runs the key renewal during the soak")  # fmt: skip
    p.add_argument("--note", default="", help="said next to the run length in the report")
    p.set_defaults(func=_soak)


def _reliability(args: argparse.Namespace) -> int:
    from tsadapt.experiments.reliability import render, run_reliability

    if args.render:
        print(f"wrote {render(args.out)}")
        return 0
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip()) if args.faults else None
    command = "tsadapt " + shlex.join(sys.argv[1:]) if "reliability" in sys.argv[1:3] else ""
    kwargs = {"faults": faults} if faults else {}
    results = run_reliability(
        args.out, args.runs_dir, command or "tsadapt lab reliability", model_store=args.model_store,
        **kwargs,
    )  # fmt: skip
    print(f"wrote {args.out / 'reliability.md'}")
    return 0 if all(r.ok for r in results) else 1


def add_reliability_arguments(p: argparse.ArgumentParser) -> None:
    from tsadapt.experiments.fault_cases import FAULTS
    from tsadapt.experiments.reliability import DEFAULT_OUT, DEFAULT_RUNS

    p.add_argument("--render", action="store_true",
                   help="only rewrite reliability.md from reliability.json in --out")  # fmt: skip
    p.add_argument("--faults", default="",
                   help=f"comma-separated subset of {','.join(FAULTS)} (default: all)")  # fmt: skip
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS, help="server dirs, logs")
    p.add_argument("--model-store", type=Path, help="default: <runs-dir>/model-store")
    p.set_defaults(func=_reliability)


def register(subparsers: Any) -> None:
    """Add ``soak`` and ``reliability`` to ``tsadapt lab``'s subparsers."""
    p = subparsers.add_parser(
        "soak",
        help="research: a long real-server run with the PPO controller, watched for leaks",
        description="Serve the demo models and a plain BaseHandler model on a fresh TorchServe "
        "under a bursty trace-driven open-loop load with the PPO controller; sample memory, "
        "fds and threads of every process; write docs/results/soak.md, .json and .png.",
    )
    add_arguments(p)
    p = subparsers.add_parser(
        "reliability",
        help="research: faults injected into a real TorchServe under load with the controller",
        description="Kill a worker, the frontend, the sidecar; cut the management API; run "
        "without the plugin; unregister a model mid-change; feed bad policy and config files; "
        "fill the decision log; overload: write docs/results/reliability.md and .json.",
    )
    add_reliability_arguments(p)
