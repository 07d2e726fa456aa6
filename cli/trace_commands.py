"""``tsadapt trace``: a user's own arrivals as a scenario's ``trace`` workload files.

From TorchServe's access log (``--access-log logs/access_log.log``: one file per model) or
from a CSV of timestamps (``--csv FILE --model NAME``); sliced, stretched and thinned as the
options say (:mod:`tsadapt.policy.sim.trace_import`). Prints the scenario ``workload:``
entries that replay the files.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from tsadapt.cli.arg_types import nonneg_float, positive_float


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "trace",
        help="import arrivals (TorchServe access log or a CSV of timestamps) as a scenario trace",
        description="Write the arrivals of a TorchServe access log (per model) or of a CSV of "
        "timestamps as `trace` workload files (one `timestamp` column, seconds from 0) that "
        "`tsadapt lab simulate`, `tsadapt train --scenario` and the Locust replay read. "
        "--start/--duration slice the source (its seconds from its first arrival); "
        "--time-scale then stretches time (0.1: ten source seconds in one), --rate-scale "
        "thins (<1) or multiplies (>1) the arrivals. Nothing is written if any line is bad.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--access-log", type=Path, help="TorchServe's logs/access_log.log")
    src.add_argument("--csv", type=Path, help="CSV of timestamps (seconds or date-times)")
    p.add_argument(
        "--column",
        default=None,
        help="--csv: the timestamp column's header name (default: the first column)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="model name(s), comma-separated: --access-log keeps these (default: every model "
        "in the log); --csv names the one model the file's arrivals are for (required)",
    )
    p.add_argument("--start", type=nonneg_float, default=0.0, help="source seconds to skip")
    p.add_argument("--duration", type=positive_float, default=None, help="source seconds kept")
    p.add_argument("--time-scale", type=positive_float, default=1.0)
    p.add_argument("--rate-scale", type=positive_float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="for --rate-scale (default: 0)")
    p.add_argument(
        "--note",
        action="append",
        default=[],
        help="a line for the file's # header, e.g. the data's licence (repeatable)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="a .csv file (one model) or a folder that gets <model>.csv per model",
    )
    p.set_defaults(func=run_trace)


def _outputs(out: Path, models: list[str]) -> dict[str, Path]:
    if out.suffix.lower() == ".csv":
        if len(models) != 1:
            raise ValueError(
                f"--out {out}: one .csv file holds one model's arrivals, got {len(models)} "
                f"models ({', '.join(models)}); give a folder or --model NAME"
            )
        return {models[0]: out}
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: not a folder (a single model's file must end in .csv)")
    return {m: out / f"{m}.csv" for m in models}


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces the import (every option spelled out, notes aside)."""
    src = ["--access-log", str(args.access_log)] if args.access_log else ["--csv", str(args.csv)]
    parts = ["tsadapt", "trace", *src]
    if args.column:
        parts += ["--column", args.column]
    if args.model:
        parts += ["--model", args.model]
    parts += ["--start", f"{args.start:g}"]
    if args.duration is not None:
        parts += ["--duration", f"{args.duration:g}"]
    parts += ["--time-scale", f"{args.time_scale:g}", "--rate-scale", f"{args.rate_scale:g}"]
    if args.rate_scale != 1.0:
        parts += ["--seed", str(args.seed)]
    parts += ["--out", str(args.out)]
    return " ".join(shlex.quote(x) for x in parts)


def run_trace(args: argparse.Namespace) -> int:
    from tsadapt.policy.sim.trace_import import (
        TraceImportError,
        TraceTransform,
        read_access_log,
        read_timestamp_csv,
        summary,
        trace_text,
        transform,
        write_trace_files,
    )

    models = [m for m in (args.model or "").split(",") if m]
    try:
        t = TraceTransform(args.start, args.duration, args.time_scale, args.rate_scale, args.seed)
        if args.access_log is not None:
            if args.column is not None:
                raise TraceImportError("--column applies to --csv only")
            per_model = read_access_log(args.access_log, models or None)
            source = f"TorchServe access log {args.access_log}"
        else:
            if len(models) != 1:
                raise TraceImportError("--csv needs --model NAME (the one model it is for)")
            per_model = {models[0]: read_timestamp_csv(args.csv, args.column)}
            source = f"CSV {args.csv}"
        origin = min(float(v[0]) for v in per_model.values())  # models stay aligned
        outs = _outputs(args.out, list(per_model))
        command = command_line(args)
        texts, lines = {}, []
        for model, times in per_model.items():
            arrivals = transform(times, t, origin)
            if arrivals.size == 0:
                raise TraceImportError(
                    f"model {model}: no arrivals in the slice (--start {args.start}, "
                    f"--duration {args.duration}); the source spans "
                    f"{float(times[-1] - origin):.1f} s"
                )
            header = [
                f"Arrivals of model {model}, seconds from 0 (tsadapt trace).",
                f"Source: {source}.",
                f"Command: {command}",
                *args.note,
            ]
            texts[outs[model]] = trace_text(arrivals, header)
            lines.append((model, outs[model], summary(arrivals)))
        write_trace_files(texts)
    except (TraceImportError, ValueError, OSError) as exc:
        print(f"tsadapt trace: error: {exc}", file=sys.stderr)
        return 2
    for _model, path, text in lines:
        print(f"wrote {path}: {text}")
    print("scenario workload entries (paths relative to the scenario file's folder):")
    for model, path, _ in lines:
        print(f"  - {{model: {model}, kind: trace, path: {path}}}")
    return 0
