"""The ``tsadapt lab bench`` subcommand (wired into ``tsadapt`` by ``register``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tsadapt.cli.arg_types import positive_float, positive_int
from tsadapt.experiments.bench_schedule import MAX_REQUESTS
from tsadapt.markdown import command_of


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
        capacity_s=args.capacity_s,
        speed_probe_s=args.speed_probe_s,
        peers_report=args.peers_report,
        command=command_of(args, within="bench"),
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
        help="comma-separated other serving systems on the same arrivals: rayserve, bentoml "
        "(each in its own venv: `make install-peers`); also writes docs/results/peers.md",
    )
    p.add_argument(
        "--capacity-s",
        type=float,
        default=10.0,
        help="with --peers: seconds of closed-loop capacity measurement per model and system "
        "before the runs (0 = skip; default: 10)",
    )
    p.add_argument(
        "--speed-probe-s",
        type=float,
        default=5.0,
        help="seconds of closed-loop capacity per model on TorchServe at its registration "
        "defaults, before the first run and after the last, written to the report's 'Box "
        "speed' section (0 = skip; default: 5)",
    )
    p.add_argument("--peers-report", type=Path,
                   help="with --peers: path of peers.md (default: <out>/peers.md)")  # fmt: skip
    p.add_argument("--max-requests", type=int, default=MAX_REQUESTS, help="cap per run")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder")
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS, help="server dirs, records")
    p.add_argument("--controller-config", type=Path, default=DEFAULT_CONTROLLER_CONFIG)
    p.add_argument("--locustfile", type=Path, help="default: loadtests/<scenario>.py")
    p.set_defaults(func=_bench)

    from tsadapt.experiments.peers.frontend_tuning import VARIANTS

    t = subparsers.add_parser(
        "frontend-tuning",
        help="TorchServe settings that win time back (body decoding, Netty threads): "
        "closed-loop capacity, one setting at a time, side by side",
        description="Measure each model's closed-loop capacity on TorchServe at the "
        "registration defaults under each variant (one setting changed against TorchServe's "
        "defaults), repeats interleaved; write <out>/frontend-tuning.md and .json.",
    )
    t.add_argument("--variants", default=",".join(v.name for v in VARIANTS),
                   help="comma-separated (default: all; the baseline always runs)")  # fmt: skip
    t.add_argument("--models", default="image,text,tabular", help="demo models (comma-separated)")
    t.add_argument("--seconds", type=positive_float, default=10.0,
                   help="measured seconds per model (after the warm-up)")  # fmt: skip
    t.add_argument("--repeats", type=positive_int, default=3)
    t.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder")
    t.add_argument("--runs-dir", type=Path, default=Path("runs/frontend-tuning"))
    t.add_argument("--from-json", type=Path, metavar="FILE",
                   help="write the report again from an earlier run's frontend-tuning.json "
                   "(no server started)")  # fmt: skip
    t.set_defaults(func=_frontend_tuning)


def _frontend_tuning(args: argparse.Namespace) -> int:
    import os

    from tsadapt.experiments.peers.frontend_tuning import (
        rewrite_from_json,
        run_all,
        variants_named,
        write_report,
    )
    from tsadapt.handlers.catalog import DEMO_MODELS

    if args.from_json is not None:
        try:
            md = rewrite_from_json(args.from_json, args.out, command_of(args))
        except ValueError as exc:
            print(f"tsadapt lab frontend-tuning: error: --from-json: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {md} and {md.with_suffix('.json').name}")
        return 0

    models = _names(args.models)
    unknown = [m for m in models if m not in DEMO_MODELS]
    if unknown or not models:
        print(f"tsadapt lab frontend-tuning: error: --models: unknown {unknown or 'none given'};"
              f" known: {', '.join(DEMO_MODELS)}", file=sys.stderr)  # fmt: skip
        return 2
    try:
        variants = variants_named(_names(args.variants))
    except ValueError as exc:
        print(f"tsadapt lab frontend-tuning: error: --{exc}", file=sys.stderr)
        return 2
    before = os.getloadavg()[0]
    results = run_all(variants, models, args.seconds, args.repeats, args.runs_dir)
    md = write_report(args.out, command_of(args, within="frontend-tuning"), results, variants,
                      models, args.seconds, args.repeats, (before, os.getloadavg()[0]))  # fmt: skip
    print(f"wrote {md} and {md.with_suffix('.json').name}")
    return 0 if any(r.status == "ok" for r in results) else 1
