"""``tsadapt lab scaleout evaluate`` (fleet simulation -> docs/results/scale-out.md) and
``tsadapt lab scaleout sidecar-rss`` (the sidecar's memory under load on a real server)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tsadapt.experiments.scaleout.config import DEFAULT_CONFIG


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("scaleout", help="scale-out beyond one pod (Kubernetes)")
    sub = p.add_subparsers(dest="action", required=True)
    e = sub.add_parser(
        "evaluate",
        help="simulate a fleet of pods under three autoscaling setups; writes "
        "docs/results/scale-out.md",
    )
    e.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    e.add_argument("--scales", type=str, default=None, help="e.g. 10,100 (default: config's)")
    e.add_argument("--out-dir", type=Path, default=Path("docs/results"))
    e.set_defaults(func=_evaluate)
    r = sub.add_parser(
        "sidecar-rss",
        help="resident memory of `tsadapt control --policy ppo` (numpy) and of the same "
        "sidecar with the torch policy, on a real TorchServe under load",
    )
    r.add_argument("--duration", type=float, default=60.0, help="seconds of load per sidecar")
    r.add_argument("--rate", type=float, default=40.0, help="requests/s (tabular model)")
    r.add_argument("--out-dir", type=Path, default=Path("docs/results"))
    r.set_defaults(func=_sidecar_rss)


def _evaluate(args: argparse.Namespace) -> int:
    import dataclasses

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tsadapt.experiments.scaleout.config import load_config
    from tsadapt.experiments.scaleout.fleet import run_fleet
    from tsadapt.experiments.scaleout.report import write_report

    cfg = load_config(args.config)
    if args.scales:
        cfg = dataclasses.replace(cfg, scales=tuple(int(s) for s in args.scales.split(",")))
    scenarios = cfg.scenarios()
    runs = [
        (sc, scale, seed, setup)
        for sc in scenarios
        for scale in cfg.scales
        for seed in cfg.seeds
        for setup in cfg.setups
    ]
    t0 = time.perf_counter()
    results = []
    with Progress(TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn()) as prog:
        overall = prog.add_task("all runs", total=len(runs))
        for sc, scale, seed, setup in runs:
            task = prog.add_task(f"{sc.name} x{scale} {setup.name}", total=int(sc.duration_s))
            r = run_fleet(
                sc, setup, scale, seed, cfg, on_tick=lambda t, k=task: prog.update(k, completed=t)
            )
            prog.remove_task(task)
            prog.advance(overall)
            prog.console.print(
                f"{sc.name} x{scale} {setup.name}: {r.pod_seconds:,.0f} pod-s, "
                f"{100 * r.slo_attainment:.2f} % within SLO, {r.scaling_events} scaling events"
            )
            results.append(r)
    command = "tsadapt lab scaleout evaluate" + "".join(f" {a}" for a in sys.argv[3:])
    path = write_report(results, cfg, args.out_dir, command, time.perf_counter() - t0)
    print(f"wrote {path}")
    return 0


def _sidecar_rss(args: argparse.Namespace) -> int:
    from tsadapt.experiments.scaleout.sidecar_rss import measure

    path = measure(args.duration, args.rate, args.out_dir)
    print(f"wrote {path}")
    return 0
