"""``tsadapt fleet simulate|train|evaluate``: GPU slots at fleet scale (docs/results/fleet.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tsadapt.cli.arg_types import positive_int


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    from tsadapt.fleet.catalog import MIXES
    from tsadapt.fleet.evaluate import POLICIES, TRAINED_DIR

    p = subparsers.add_parser("fleet", help="GPU slots at fleet scale: PPO, Nexus, baselines")
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("simulate", help="one policy on one fleet; prints its figures")
    s.add_argument("--gpus", type=positive_int, default=8)
    s.add_argument("--models", type=positive_int, default=10)
    s.add_argument("--mix", choices=MIXES, default="diurnal")
    s.add_argument("--policy", choices=POLICIES, default="nexus")
    s.add_argument("--horizon", type=float, default=600.0, help="seconds (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--trained", type=Path, default=TRAINED_DIR)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_simulate)
    t = sub.add_parser("train", help="train DNN-Adapt's PPO for one fleet shape (both mixes)")
    t.add_argument("--gpus", type=positive_int, default=8)
    t.add_argument("--models", type=positive_int, default=10)
    t.add_argument("--horizon", type=float, default=600.0)
    t.add_argument("--timesteps", type=positive_int, default=30_000)
    t.add_argument("--episode-ticks", type=positive_int, default=200)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out-dir", type=Path, default=TRAINED_DIR)
    t.set_defaults(func=_train)
    e = sub.add_parser("evaluate", help="the scale sweep; writes docs/results/fleet.md + plots")
    e.add_argument(
        "--points", type=str, default=None, help="e.g. 8x10x600,32x50x600 (GPUs x models x s)"
    )
    e.add_argument("--trained", type=Path, default=TRAINED_DIR)
    e.add_argument("--out-dir", type=Path, default=Path("docs/results"))
    e.set_defaults(func=_evaluate)


def _simulate(args: argparse.Namespace) -> int:
    from tsadapt.fleet.catalog import build_catalogue
    from tsadapt.fleet.evaluate import make
    from tsadapt.fleet.run import run_fleet

    cat = build_catalogue(args.gpus, args.models, args.mix, args.horizon)
    with _progress() as prog:
        task = prog.add_task(f"{args.policy} {args.mix} {args.gpus}x{args.models}", total=None)
        prog.update(task, total=int(args.horizon))
        r = run_fleet(
            cat,
            make(args.policy, cat, args.trained),
            args.seed,
            lambda t: prog.update(task, completed=int(t)),
        )
    if args.json:
        print(json.dumps(r.as_dict(), indent=1))
    else:
        print(
            f"{r.policy}: {r.mean_gpus:.2f} GPUs in use (time-avg), {100 * r.attainment:.2f} % "
            f"within SLO, goodput {r.goodput_rps:,.1f} req/s, {r.reconf_per_hour:,.0f} "
            f"reconfigurations/h, decision {r.decision_ms_mean:.2f} ms/tick, "
            f"{r.sim_rps:,.0f} simulated req/s"
        )
    return 0


def _train(args: argparse.Namespace) -> int:
    from tsadapt.fleet.catalog import MIXES, build_catalogue
    from tsadapt.fleet.ppo import policy_path, train

    cats = [build_catalogue(args.gpus, args.models, m, args.horizon) for m in MIXES]
    out = policy_path(args.out_dir, args.gpus, args.models)
    command = "tsadapt fleet train" + "".join(f" {a}" for a in sys.argv[3:])
    with _progress() as prog:
        task = prog.add_task(f"PPO {args.gpus} GPUs x {args.models} models", total=args.timesteps)

        def show(done: int, total: int, mean: float) -> None:
            prog.update(task, completed=done, description=f"PPO, mean episode reward {mean:.1f}")

        meta = train(cats, args.timesteps, out, args.seed, args.episode_ticks, command, show)
    print(f"wrote {out} ({meta['timesteps']} steps, {meta['train_seconds']} s)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from tsadapt.fleet.catalog import MIXES
    from tsadapt.fleet.evaluate import SWEEP, evaluate_point
    from tsadapt.fleet.report import write_report

    points = SWEEP
    if args.points:
        try:
            points = tuple(
                (int(g), int(m), float(h))
                for g, m, h in (x.split("x") for x in args.points.split(","))
            )
        except ValueError:
            raise ValueError(
                f"--points: expected GPUsxMODELSxSECONDS[,...], got {args.points!r}"
            ) from None
    t0 = time.perf_counter()
    results = []
    with _progress() as prog:
        overall = prog.add_task("sweep points", total=len(points) * len(MIXES))
        for g, m, h in points:
            for mix in MIXES:

                def on_run(name, cat, mix=mix, g=g, m=m):
                    task = prog.add_task(f"{mix} {g}x{m} {name}", total=int(cat.horizon_s))
                    return lambda t: prog.update(task, completed=int(t))

                p = evaluate_point(g, m, mix, h, trained=args.trained, on_run=on_run)
                for task in list(prog.tasks):
                    if task.id != overall:
                        prog.remove_task(task.id)
                prog.advance(overall)
                for name, r in p.runs.items():
                    prog.console.print(
                        f"{mix} {g}x{m} {name}: {r.mean_gpus:.2f} GPUs, "
                        f"{100 * r.attainment:.2f} % within SLO, {r.wall_s:.0f} s"
                    )
                results.append(p)
    command = "tsadapt fleet evaluate" + "".join(f" {a}" for a in sys.argv[3:])
    path = write_report(results, args.out_dir, command, time.perf_counter() - t0)
    print(f"wrote {path}")
    return 0
