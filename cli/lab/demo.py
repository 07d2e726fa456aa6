"""``tsadapt lab demo | serve start|stop | archive | demo-models profile``: the demo models
on a TorchServe this command starts (fixtures for the benches, never the product's path)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from tsadapt import constants as C
from tsadapt.cli.arg_types import positive_int


def _add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workdir",
        type=Path,
        default=C.DEFAULT_WORKDIR,
        help="server dir: config, logs, key_file.json (default: %(default)s)",
    )


def _serve_start(args: argparse.Namespace) -> int:
    from tsadapt.serve.server import ServerConfig, start

    base = args.port_base
    ports = (
        {
            "inference_port": base,
            "management_port": base + 1,
            "metrics_port": base + 2,
            "grpc_inference_port": base + 3,
            "grpc_management_port": base + 4,
        }
        if base
        else {}
    )
    config = ServerConfig(
        workdir=args.workdir,
        model_store=args.model_store,
        auth=not args.no_auth,
        plugin=not args.no_plugin,
        models=tuple(args.models.split(",")) if args.models else ServerConfig.models,
        **ports,
    )
    logging.getLogger("tsadapt").info("server config: %s", config)
    server = start(config)
    print(f"TorchServe is running (pid {server.pid}), work dir {server.workdir}")
    print(f"  inference   {server.inference_url}")
    print(f"  management  {server.management_url}")
    print(f"  metrics     {server.metrics_url}")
    print(f"  tokens      {server.key_file or 'auth OFF (--no-auth)'}")
    print(f"  plugin      {server.plugins_path or 'not loaded (--no-plugin)'}")
    print(f"  logs        {Path(server.workdir) / 'logs'}")
    print(f"  models      {', '.join(server.models)}")
    return 0


def _serve_stop(args: argparse.Namespace) -> int:
    from tsadapt.serve.server import stop

    if stop(args.workdir):
        print(f"TorchServe in {args.workdir} stopped")
    else:
        print(f"no TorchServe was running from {args.workdir}")
    return 0


def _archive(args: argparse.Namespace) -> int:
    from tsadapt.serve.archive import archive_all

    for path in archive_all(args.model_store, args.models.split(",") if args.models else None):
        print(path)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from tsadapt.experiments.demo import run_demo

    return run_demo(
        args.workdir, args.requests, args.concurrency, args.bench_s, scenario=args.scenario
    )


def _models_profile(args: argparse.Namespace) -> int:
    from tsadapt.experiments import model_profiles

    names = args.models.split(",") if args.models else list(_demo_names())
    command = "tsadapt lab demo-models profile " + " ".join(sys.argv[4:])
    profiles = model_profiles.run(
        names, args.max_batch, args.repeats, args.warmup, args.out, command.strip()
    )
    for p in profiles:
        print(
            f"{p.model:<8} alpha={p.fit.alpha_ms:.3f} ms  beta={p.fit.beta_ms:.3f} ms  "
            f"R^2={p.fit.r2:.4f}"
        )
    print(f"wrote {args.out / 'model-profiles.md'}")
    return 0


def _demo_names() -> list[str]:
    from tsadapt.handlers.catalog import DEMO_MODELS

    return list(DEMO_MODELS)


def _models_arg(value: str) -> str:
    known = _demo_names()
    bad = [n for n in value.split(",") if n not in known]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown model(s) {bad}; known: {','.join(known)}")
    return value


def register(sub: Any) -> None:
    """Add ``archive``, ``serve``, ``demo`` and ``demo-models`` to the lab's sub-parsers."""
    p = sub.add_parser("archive", help="build the demo models' .mar files")
    p.add_argument("--model-store", type=Path, default=C.DEFAULT_WORKDIR / "model-store")
    p.add_argument("--models", type=_models_arg, help="comma-separated subset (default: all)")
    p.set_defaults(func=_archive)

    serve = sub.add_parser("serve", help="start or stop a TorchServe with the demo models")
    serve_sub = serve.add_subparsers(dest="lab_action", required=True)
    p = serve_sub.add_parser("start", help="start TorchServe, register the demo models")
    _add_server_args(p)
    p.add_argument("--model-store", type=Path, help="default: <workdir>/model-store")
    p.add_argument(
        "--port-base",
        type=positive_int,
        help="use ports N..N+4 (inference, management, metrics, 2x gRPC); "
        "default 8080-8082 and 7070-7071",
    )
    p.add_argument("--models", type=_models_arg, help="comma-separated subset (default: all)")
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="turn TorchServe's token authorization off (local experiments only)",
    )
    p.add_argument("--no-plugin", action="store_true", help="do not load the tsadapt plugin")
    p.set_defaults(func=_serve_start)
    p = serve_sub.add_parser("stop", help="stop TorchServe and every process it started")
    _add_server_args(p)
    p.set_defaults(func=_serve_stop)

    p = sub.add_parser("demo", help="start TorchServe, send real requests, print latency, stop")
    p.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    p.add_argument("--requests", type=positive_int, default=200, help="per model")
    p.add_argument("--concurrency", type=positive_int, default=8)
    p.add_argument(
        "--bench-s",
        type=float,
        default=60.0,
        help="seconds per controller of the short bench (0: skip it)",
    )
    p.add_argument(
        "--scenario",
        default=C.DEMO_SCENARIO,
        help="the short bench's scenario, a name or YAML path (default: %(default)s)",
    )
    p.set_defaults(func=_demo)

    models = sub.add_parser("demo-models", help="the demo models: profile their batch latency")
    models_sub = models.add_subparsers(dest="lab_action", required=True)
    p = models_sub.add_parser(
        "profile", help="batch latency b=1..N, fitted; writes docs/results/model-profiles.md"
    )
    p.add_argument("--models", type=_models_arg)
    p.add_argument("--max-batch", type=positive_int, default=32)
    p.add_argument("--repeats", type=positive_int, default=15)
    p.add_argument("--warmup", type=positive_int, default=3)
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    p.set_defaults(func=_models_profile)
