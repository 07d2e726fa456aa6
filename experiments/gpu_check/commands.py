"""The ``tsadapt lab gpu-check`` subcommand (wired into ``tsadapt`` by ``register``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from tsadapt.markdown import command_of

#: Seconds the check gives itself by default: below the GPU machine's 10 minutes per command,
#: less the kit's unpacking and a margin.
DEFAULT_TIME_LIMIT_S = 540.0


def parse_parts(value: str) -> tuple[str, ...]:
    from tsadapt.experiments.gpu_check.runner import PARTS

    chosen = []
    for item in value.split(","):
        item = item.strip()
        name = PARTS[int(item) - 1] if item.isdigit() and 1 <= int(item) <= len(PARTS) else item
        if name not in PARTS:
            raise argparse.ArgumentTypeError(f"unknown part {item!r}; 1-4 or {', '.join(PARTS)}")
        chosen.append(name)
    return tuple(chosen)


def _gpu_check(args: argparse.Namespace) -> int:
    if args.build_kit is not None:
        from tsadapt.experiments.gpu_check.kit import TRAVEL_LIMIT_BYTES, build_kit
        from tsadapt.experiments.gpu_check.target import Target

        info = build_kit(args.build_kit, Target(args.python_version))
        mib = 2**20
        for name, size in info.files.items():
            print(f"  {name:<32} {size / mib:6.1f} MiB")
        print(
            f"kit {info.total_bytes / mib:.1f} MiB + working tree {info.repo_bytes / mib:.1f} "
            f"MiB = {info.travel_bytes / mib:.1f} MiB (limit {TRAVEL_LIMIT_BYTES / mib:.0f})"
        )
        print(f"run there: bash {args.build_kit}/run.sh OUT_DIR")
        return 0 if info.travel_bytes <= TRAVEL_LIMIT_BYTES else 1
    if args.render:
        from tsadapt.experiments.gpu_check.report import merge_runs

        out = args.out_dir or Path("docs/results")
        typed = command_of(args)
        report = merge_runs(args.render, out, typed)
        print(
            f"wrote {out / 'gpu.md'} and gpu.json: "
            + ", ".join(f"{k} {v.get('status')}" for k, v in report.parts.items())
        )
        return 0
    if args.compare:
        from tsadapt.experiments.gpu_check.sim_compare import REPORT_FILE, run_compare

        out = args.out_dir or args.compare.parent
        rows = run_compare(args.compare, out, command_of(args))
        agree = sum(r["agrees"] for r in rows)
        print(f"wrote {out / REPORT_FILE}: {agree} of {len(rows)} rows agree")
        return 0
    if args.rehearse:
        from tsadapt.experiments.gpu_check.rehearse import rehearse

        result = rehearse(Path.cwd(), keep=args.keep)
        print(result.summary())
        return 0 if not result.problems else 1
    if args.out_dir is None:
        raise ValueError("give OUT_DIR (or --build-kit DIR, or --rehearse)")
    from tsadapt.experiments.gpu_check.runner import BUDGETS, run_check

    typed = command_of(args, within="gpu-check")
    command = os.environ.get("TSADAPT_GPU_CHECK_COMMAND") or typed or "tsadapt lab gpu-check"
    report = run_check(
        args.out_dir, args.parts, BUDGETS[args.budget], args.time_limit, command, args.work
    )
    print(
        f"wrote {args.out_dir / 'gpu.md'}: "
        + ", ".join(f"{k} {v.get('status')}" for k, v in report.parts.items())
    )
    return 0


def register(subparsers: Any) -> None:
    """Add ``gpu-check`` to an ``argparse`` subparsers object (handler in ``func``)."""
    from tsadapt.experiments.gpu_check.runner import BUDGETS, PARTS

    p = subparsers.add_parser(
        "gpu-check",
        help="the one-shot GPU check: build its kit here, run it on a GPU machine, rehearse it",
        description="Run the GPU check into OUT_DIR (gpu.md, gpu.json, PNGs, extras.tar.gz); "
        "--build-kit DIR packs what a GPU machine without network needs; --rehearse runs the "
        "kit here on the CPU with tiny budgets.",
    )
    p.add_argument("out_dir", nargs="?", type=Path, metavar="OUT_DIR")
    p.add_argument(
        "--parts",
        type=parse_parts,
        default=PARTS,
        help="comma-separated, 1-4 or names (default: all, in order of value)",
    )
    p.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    p.add_argument(
        "--time-limit",
        type=float,
        default=DEFAULT_TIME_LIMIT_S,
        help="seconds for all parts together (default: %(default)s)",
    )
    work = Path(os.environ.get("TSADAPT_GPU_WORK", "/tmp/tsadapt-gpu")) / "runs"
    p.add_argument(
        "--work", type=Path, default=work, help="server dirs and scratch (default: %(default)s)"
    )
    p.add_argument("--build-kit", type=Path, metavar="DIR", help="build the kit into DIR")
    p.add_argument("--python-version", default="3.12", help="the kit's Python (with --build-kit)")
    p.add_argument("--rehearse", action="store_true", help="run the kit here, tiny budgets")
    p.add_argument("--keep", type=Path, help="with --rehearse: work in (and keep) this folder")
    p.add_argument(
        "--compare",
        type=Path,
        metavar="GPU_JSON",
        help="simulate the GPU bench of GPU_JSON with a GPU latency model fitted from its "
        "profiles and co-location; write gpu-fidelity.md and gpu-surge.yaml into OUT_DIR "
        "(default: GPU_JSON's folder)",
    )
    p.add_argument(
        "--render",
        type=Path,
        nargs="+",
        metavar="GPU_JSON",
        help="merge the gpu.json of the check's commands (files or folders, in order) into "
        "OUT_DIR's gpu.json and gpu.md (default OUT_DIR: docs/results), its paths generic",
    )
    p.set_defaults(func=_gpu_check)
