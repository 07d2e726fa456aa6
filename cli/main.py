"""The ``tsadapt`` command.

The product's commands are at the top (``tsadapt --help``): the plugin, profiling a served
model, the controller, a server's status, the Packrat CPU planner, traces and training.
Research and benchmarks live under ``tsadapt lab``; a command that moved there says where.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from tsadapt.cli import moved
from tsadapt.serve.attach import add_attach_args

#: Modules whose ``register(subparsers)`` adds a top-level command, in ``--help`` order.
#: ``trace_commands`` (``tsadapt trace``) registers here once that module exists.
TOP_LEVEL = (
    "tsadapt.cli.plugin_commands",  # plugin build | path
    "tsadapt.cli.learn_commands",  # profile, train
    "tsadapt.cli.control_commands",  # control [init]
    "tsadapt.cli.packrat_commands",  # packrat plan | profile | apply | control
    "tsadapt.cli.trace_commands",  # trace (optional: registered when present)
)
OPTIONAL = frozenset({"tsadapt.cli.trace_commands"})


def _status(args: argparse.Namespace) -> int:
    from tsadapt.serve.attach import connect_checked
    from tsadapt.serve.server import models_status, status

    if args.ts_config or args.inference_url or args.management_url:
        client, metrics_url, _ = connect_checked(args, timeout_s=10)
        info = {
            "server": {
                "pid": "?",
                "inference_url": client.inference_url,
                "management_url": client.management_url,
                "metrics_url": metrics_url,
            },
            "models": models_status(client),
        }
    else:
        info = status(args.workdir)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    s = info["server"]
    print(
        f"TorchServe pid {s['pid']}: inference {s['inference_url']}, "
        f"management {s['management_url']}"
    )
    print(f"{'model':<10} {'batch':>5} {'delay ms':>8} {'workers':>12} {'queue':>6}  worker pids")
    for m in info["models"]:
        ready = sum(w["status"] == "READY" for w in m["workers"])
        workers = f"{ready}/{len(m['workers'])} ({m['min_workers']}-{m['max_workers']})"
        pids = ",".join(str(w["pid"]) for w in m["workers"])
        print(
            f"{m['model']:<10} {m['batch_size']:>5} {m['max_batch_delay_ms']:>8} "
            f"{workers:>12} {m['queue_depth']:>6}  {pids}"
        )
    return 0


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="a running TorchServe: models, workers, batch settings, queue depth",
        description="Attach to a TorchServe (--ts-config, or the URLs and key file) and "
        "print each model's batch size, delay, workers and queue depth.",
    )
    add_attach_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_status)


def build_parser(lab: bool = True) -> argparse.ArgumentParser:
    """The whole parser; ``lab=False`` leaves the lab's commands out (lighter: their
    modules import the benches' stacks), with ``tsadapt lab`` still listed."""
    parser = argparse.ArgumentParser(
        prog="tsadapt",
        description="Adaptive batching for TorchServe: the plugin, the controller beside your "
        "server, and the tools to profile and plan.",
        epilog="Research and benchmarks: tsadapt lab --help",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in TOP_LEVEL:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if name in OPTIONAL and exc.name == name:
                continue
            raise
        module.register(sub)
        if name == "tsadapt.cli.control_commands":
            _add_status(sub)
    from tsadapt.cli.lab import register as register_lab

    register_lab(sub, full=lab)
    return parser


def _command_word(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    where = moved.where(argv)
    if where:
        print(f"tsadapt: moved: {where}", file=sys.stderr)
        return moved.EXIT_MOVED
    args = build_parser(lab=_command_word(argv) == "lab").parse_args(argv)
    args.cli_argv = argv
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        if (exc.name or "tsadapt").startswith("tsadapt"):
            raise
        from tsadapt.cli.lab import EXIT_MISSING_EXTRA, missing_extra

        command = " ".join(
            w for w in ("tsadapt", args.command, getattr(args, "lab_command", None)) if w
        )
        print(f"tsadapt: error: {missing_extra(command, exc.name)}", file=sys.stderr)
        return EXIT_MISSING_EXTRA
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"tsadapt: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
