"""``tsadapt packrat ...`` subcommands.

``register(subparsers)`` adds ``packrat`` with ``plan``, ``profile``, ``apply`` and
``control`` (the benches are ``tsadapt lab packrat ...``); each leaf parser sets ``func``
(``args.func(args) -> int`` is the exit code). ``main(argv)`` is a standalone entry point
for tests and ``python -m tsadapt.cli.packrat_commands``.

Exit codes: 0 ok, 1 infeasible request (no plan exists), 2 bad input (arguments or profile).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from tsadapt.packrat_cpu.planner import Plan, PlanError, plan, plan_uniform
from tsadapt.packrat_cpu.profile_table import bundled_profiles, load_profile, resolve_profile

EXIT_OK = 0
EXIT_INFEASIBLE = 1
EXIT_BAD_INPUT = 2

_FLAG_FOR_FIELD = {"cores": "--cores", "batch": "--batch", "profile": "--profile"}


def register(subparsers: Any) -> None:
    """Add the ``packrat`` subcommand to an argparse ``add_subparsers()`` object."""
    packrat = subparsers.add_parser(
        "packrat", help="Packrat CPU planner: <instances, threads, batch> for a profiled model"
    )
    sub = packrat.add_subparsers(dest="packrat_command", metavar="{plan,profile,apply,control}")
    sub.required = True

    p = sub.add_parser("plan", help="optimal instance plan for a batch on a number of cores")
    p.add_argument(
        "--profile",
        required=True,
        metavar="FILE.csv",
        help="threads,batch,latency_ms CSV, or a bundled name: " + ", ".join(bundled_profiles()),
    )
    p.add_argument("--cores", type=int, required=True, metavar="T", help="CPU cores available")
    p.add_argument("--batch", type=int, required=True, metavar="B", help="batch size to serve")
    p.add_argument(
        "--uniform", action="store_true", help="identical instances only (one TorchServe model)"
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)

    pr = sub.add_parser(
        "profile",
        help="measure one instance's latency per (threads, batch) point -> profile CSV",
        description="Packrat-style profile: one pinned worker per thread count t runs the "
        "model's real handler on batches of valid requests (warm-up, then timed reps) and "
        "writes threads,batch,latency_ms,min_ms,max_ms,std_ms for `packrat plan --profile`.",
    )
    pr.add_argument("--model", required=True, metavar="NAME", help="demo model (e.g. text)")
    pr.add_argument(
        "--max-threads", required=True, metavar="T", help="profile t = 1..T threads (<= cores)"
    )
    pr.add_argument(
        "--batches", default="1,2,4,8,16,32", metavar="B,...", help="default: %(default)s"
    )
    pr.add_argument("--threads", metavar="T,...", help="only these thread counts (each <= T)")
    pr.add_argument(
        "--cores", metavar="C,...", help="CPU ids to pin to (default: the first T usable)"
    )
    pr.add_argument("--warmup", default="10", metavar="N", help="untimed batches per point")
    pr.add_argument("--reps", default="100", metavar="N", help="timed batches per point")
    pr.add_argument(
        "--out", metavar="PATH", help="CSV to write (default: runs/packrat/<model>.profile.csv)"
    )
    pr.set_defaults(func=cmd_profile)

    from tsadapt.cli import packrat_live_commands

    packrat_live_commands.register(sub)


def _error(message: str) -> None:
    print(f"tsadapt packrat: error: {message}", file=sys.stderr)


def cmd_plan(args: argparse.Namespace) -> int:
    """Handle ``packrat plan``."""
    path = resolve_profile(args.profile)
    try:
        profile = load_profile(path)
    except FileNotFoundError:
        _error(f"--profile: no such file: {args.profile}")
        return EXIT_BAD_INPUT
    except (OSError, UnicodeDecodeError) as exc:
        _error(f"--profile: cannot read {args.profile}: {exc}")
        return EXIT_BAD_INPUT
    except ValueError as exc:
        _error(f"--profile: {exc}")
        return EXIT_BAD_INPUT
    try:
        result = (plan_uniform if args.uniform else plan)(profile, args.cores, args.batch)
    except PlanError as exc:
        _error(f"{_FLAG_FOR_FIELD.get(exc.field, exc.field)}: {exc}")
        bad_value = exc.field in ("cores", "batch") and getattr(args, exc.field) < 1
        return EXIT_BAD_INPUT if bad_value else EXIT_INFEASIBLE
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(summary(result, str(path)))
    return EXIT_OK


def summary(result: Plan, source: str) -> str:
    """Readable multi-line description of a plan."""
    kind = "uniform" if result.uniform else "heterogeneous"
    lines = [f"Packrat {kind} plan for {source}: cores={result.cores} batch={result.batch}"]
    for n, t, b in result.groups:
        lines.append(f"  {n} x <{t} threads, batch {b}>")
    lines.append(
        f"  uses {result.threads_used}/{result.cores} cores, "
        f"predicted latency {result.latency_ms:.2f} ms"
    )
    if result.baseline is not None and result.speedup is not None:
        fat = result.baseline
        how = (
            f"batch {result.batch}"
            if len(fat.batches) == 1
            else ("sub-batches " + "+".join(map(str, fat.batches)) + " in turn")
        )
        lines.append(
            f"  fat instance ({fat.threads} threads, {how}): {fat.latency_ms:.2f} ms "
            f"-> speedup {result.speedup:.2f}x"
        )
    else:
        lines.append("  fat instance: cannot run this batch from profiled points")
    if result.uniform and result.uniform_gap_ms is not None:
        lines.append(
            f"  heterogeneous optimum {result.optimal_latency_ms:.2f} ms; uniform gap "
            f"+{result.uniform_gap_ms:.2f} ms ({result.uniform_gap_ratio:.3f}x)"
        )
    return "\n".join(lines)


def cmd_profile(args: argparse.Namespace) -> int:
    """Handle ``packrat profile``: measure every (threads, batch) point, write the CSV."""
    import os
    import time
    from pathlib import Path

    from tsadapt.packrat_cpu import profiler as prof
    from tsadapt.packrat_cpu.profiler_config import (
        ProfilerConfig,
        ProfilerConfigError,
        default_out,
        parse_int,
        parse_ints,
    )
    from tsadapt.packrat_cpu.profiler_output import prepare_out, print_summary, write_csv

    try:
        config = ProfilerConfig(
            model=args.model,
            max_threads=parse_int(args.max_threads, "max_threads"),
            batches=parse_ints(args.batches, "batches"),
            threads=None if args.threads is None else parse_ints(args.threads, "threads"),
            cores=None if args.cores is None else parse_ints(args.cores, "cores"),
            warmup=parse_int(args.warmup, "warmup"),
            reps=parse_int(args.reps, "reps"),
            out=Path(args.out) if args.out else None,
        )
        out = prepare_out(config.out or default_out(config.model))
    except ProfilerConfigError as exc:
        _error(f"--{exc.field.replace('_', '-')}: {exc.detail}")
        return EXIT_BAD_INPUT
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    try:
        results = prof.run_with_progress(config)
        write_csv(results, out)
    except prof.ProfilerError as exc:
        _error(f"profile failed: {exc}")
        return prof.EXIT_FAILED
    except OSError as exc:
        _error(f"--out: cannot write {out}: {exc}")
        return prof.EXIT_FAILED
    except KeyboardInterrupt:
        _error("interrupted; no profile written")
        return 130
    print_summary(results, config, out, time.perf_counter() - started, load_before)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (e.g. ``["packrat", "plan", ...]``) and run; return the exit code."""
    parser = argparse.ArgumentParser(prog="tsadapt")
    subparsers = parser.add_subparsers(dest="command", metavar="{packrat}")
    subparsers.required = True
    register(subparsers)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage and the message
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
