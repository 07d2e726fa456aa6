"""``tsadapt packrat apply|control``: Packrat on a live TorchServe.

* ``apply``: switch one model of a running server to a plan, live.
* ``control``: the online loop (queue-depth estimator -> re-plan -> apply) until stopped.

(The bench, planned vs fat on a fresh server, is ``tsadapt lab packrat bench``.)

Exit codes: 0 ok, 1 the server refused or failed, 2 bad input (flags, plan or profile).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
DEFAULT_SERVER_WORKDIR = Path("runs/server")


def _error(message: str) -> None:
    print(f"tsadapt packrat: error: {message}", file=sys.stderr)


def register(sub: Any) -> None:
    """Add ``apply`` and ``control`` to the ``packrat`` sub-parsers."""
    a = sub.add_parser(
        "apply",
        help="switch a live model to a plan (workers, threads + cores, batch) with no restart",
    )
    a.add_argument("--model", required=True, help="registered model name")
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--plan", metavar="PLAN.json", help="`packrat plan --uniform --json` output")
    src.add_argument("--config", metavar="WxTxB", help="workers x threads x batch, e.g. 2x1x4")
    _server_flags(a)
    a.add_argument("--max-batch-delay-ms", type=int, default=None, help="also set the delay")
    a.add_argument("--json", action="store_true", help="print the switch report as JSON")
    a.set_defaults(func=cmd_apply)

    c = sub.add_parser(
        "control", help="online: estimate the batch from the live queue, re-plan, apply"
    )
    c.add_argument("--model", required=True, help="registered model name")
    c.add_argument("--profile", required=True, metavar="FILE.csv", help="`packrat profile` CSV")
    _server_flags(c)
    c.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    c.add_argument("--sample-ms", type=float, default=20.0, help="queue-depth sample period")
    c.add_argument("--confirm", type=int, default=2, help="decisions a new batch must win")
    c.add_argument("--min-dwell-s", type=float, default=3.0, help="least time between switches")
    c.add_argument("--max-batch-delay-ms", type=int, default=None, help="delay to set on switch")
    c.set_defaults(func=cmd_control)


def _server_flags(p: argparse.ArgumentParser) -> None:
    from tsadapt.serve.attach import add_attach_args

    add_attach_args(p, workdir_default=DEFAULT_SERVER_WORKDIR)
    p.add_argument(
        "--placement-dir",
        default=None,
        help="the TSADAPT_PLACEMENT_DIR the server's workers were started with "
        "(default: <workdir>/placement for a `tsadapt lab serve start` server, "
        "else $TSADAPT_PLACEMENT_DIR)",
    )
    p.add_argument("--cores", default=None, help="cores to place workers on (default: usable)")


def _parse_config(text: str) -> Any:
    from tsadapt.packrat_cpu.apply import PlanFileError, ServingConfig

    parts = text.lower().split("x")
    if len(parts) != 3:
        raise PlanFileError(f"{text!r} is not WORKERSxTHREADSxBATCH (e.g. 2x1x4)")
    try:
        workers, threads, batch = (int(p) for p in parts)
    except ValueError:
        raise PlanFileError(f"{text!r} is not WORKERSxTHREADSxBATCH (e.g. 2x1x4)") from None
    return ServingConfig(workers, threads, batch)


def _cores(text: str | None) -> tuple[int, ...] | None:
    from tsadapt.packrat_cpu.profiler_config import ProfilerConfigError, parse_ints

    if text is None:
        return None
    try:
        return parse_ints(text, "cores")
    except ProfilerConfigError as exc:
        raise ValueError(f"--cores: {exc.detail}") from None


def _connect(args: argparse.Namespace) -> tuple[Any, Any, Path]:
    import os

    from tsadapt.handlers.placement import PLACEMENT_DIR_ENV, PLACEMENT_SUBDIR
    from tsadapt.plugin.adapt_client import AdaptClient
    from tsadapt.serve.attach import AttachError, connect_checked

    client, _, _ = connect_checked(args, timeout_s=120)
    placement = args.placement_dir
    if placement is None and args.ts_config is None:  # `tsadapt lab serve start` sets it so
        placement = Path(args.workdir) / PLACEMENT_SUBDIR
    placement = placement or os.environ.get(PLACEMENT_DIR_ENV)
    if placement is None:
        raise AttachError(
            f"--placement-dir: not given and ${PLACEMENT_DIR_ENV} is not set: give the folder "
            "the server's workers were started with in that variable"
        )
    return client, AdaptClient(client), Path(placement)


def cmd_apply(args: argparse.Namespace) -> int:
    """Handle ``packrat apply``."""
    from tsadapt.client import TorchServeError
    from tsadapt.handlers.placement import PlacementError
    from tsadapt.packrat_cpu.apply import PlanFileError, ServingConfig, apply_config
    from tsadapt.plugin.adapt_client import AdaptError
    from tsadapt.serve.attach import AttachError
    from tsadapt.serve.server import ServerError

    flag = "--plan" if args.plan else "--config"
    try:
        if args.plan:
            target = ServingConfig.from_plan_json(json.loads(Path(args.plan).read_text()))
        else:
            target = _parse_config(args.config)
        cores = _cores(args.cores)
    except FileNotFoundError:
        _error(f"--plan: no such file: {args.plan}")
        return EXIT_BAD_INPUT
    except json.JSONDecodeError as exc:
        _error(f"--plan: not JSON: {exc}")
        return EXIT_BAD_INPUT
    except (PlanFileError, ValueError) as exc:
        _error(f"{flag}: {exc}" if not str(exc).startswith("--") else str(exc))
        return EXIT_BAD_INPUT
    try:
        client, adapt, placement_dir = _connect(args)
        report = apply_config(
            client,
            adapt,
            placement_dir,
            args.model,
            target,
            cores=cores,
            max_batch_delay_ms=args.max_batch_delay_ms,
        )
    except PlacementError as exc:
        _error(f"{flag}: {exc}")
        return EXIT_BAD_INPUT
    except (ServerError, AttachError) as exc:
        _error(f"--workdir: {exc}" if isinstance(exc, ServerError) else str(exc))
        return EXIT_BAD_INPUT
    except (TorchServeError, AdaptError, OSError) as exc:
        _error(f"the server refused the switch: {exc}")
        return EXIT_FAILED
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        steps = ", ".join(f"{s.name} {s.seconds:.2f} s" for s in report.steps)
        print(
            f"{args.model}: {report.before_workers} workers, batch {report.before_batch} -> "
            f"{target}, cores {[list(c) for c in report.placement.core_sets]} "
            f"in {report.total_s:.2f} s ({steps})"
        )
    return EXIT_OK


def cmd_control(args: argparse.Namespace) -> int:
    """Handle ``packrat control``: run the online loop until SIGINT/SIGTERM or --duration."""
    import logging

    from tsadapt.handlers.placement import usable_cores
    from tsadapt.packrat_cpu.estimator import EstimatorConfig
    from tsadapt.packrat_cpu.online import OnlineConfig, OnlineReconfigurer
    from tsadapt.packrat_cpu.profile_table import load_profile
    from tsadapt.serve.attach import AttachError
    from tsadapt.serve.server import ServerError

    try:
        profile = load_profile(Path(args.profile))
    except (OSError, ValueError) as exc:
        _error(f"--profile: {exc}")
        return EXIT_BAD_INPUT
    try:
        cores = _cores(args.cores) or usable_cores()
        config = OnlineConfig(
            cores=len(cores),
            estimator=EstimatorConfig(confirm=args.confirm),
            sample_period_s=args.sample_ms / 1000.0,
            min_dwell_s=args.min_dwell_s,
            max_batch_delay_ms=args.max_batch_delay_ms,
        )
        client, adapt, placement_dir = _connect(args)
    except (ServerError, AttachError) as exc:
        _error(f"--workdir: {exc}" if isinstance(exc, ServerError) else str(exc))
        return EXIT_BAD_INPUT
    except ValueError as exc:
        _error(str(exc) if str(exc).startswith("--") else f"bad setting: {exc}")
        return EXIT_BAD_INPUT
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(json.dumps({"model": args.model, "profile": args.profile, "config": repr(config)}))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    loop = OnlineReconfigurer(client, adapt, placement_dir, args.model, profile, config)
    try:
        switches = loop.run(stop, args.duration)
    except Exception as exc:  # noqa: BLE001 - report, never a traceback
        _error(f"online loop stopped: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    for report in switches:
        print(json.dumps(report.to_json()))
    print(f"{loop.samples} samples, {len(switches)} switches")
    return EXIT_OK
