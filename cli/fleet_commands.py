"""``tsadapt lab fleet simulate|train|evaluate``: GPU slots at fleet scale
(docs/results/fleet.md)."""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tsadapt.cli.arg_types import positive_float, positive_int
from tsadapt.markdown import command_of


def _shapes(text: str) -> tuple[tuple[int, int], ...]:
    """``8x10,32x50`` -> ((8, 10), (32, 50)); argparse turns the error into a usage line."""
    try:
        out = tuple((int(g), int(m)) for g, m in (x.split("x") for x in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GPUSxMODELS[,...], got {text!r}") from None
    if not out or any(g < 1 or m < 1 for g, m in out):
        raise argparse.ArgumentTypeError(f"GPUs and models must be >= 1, got {text!r}")
    return out


PICKS_HELP = "PPO's slot actions per tick, at most (default: as many as it was trained with)"


def _policies(text: str) -> tuple[str, ...]:
    from tsadapt.fleet.evaluate import POLICIES

    out = tuple(x for x in text.split(",") if x)
    bad = [x for x in out if x not in POLICIES]
    if not out or bad:
        raise argparse.ArgumentTypeError(f"expected some of {','.join(POLICIES)}, got {text!r}")
    return out


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
    s.add_argument("--picks", type=positive_int, default=None, help=PICKS_HELP)
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--profiles",
        type=Path,
        default=None,
        help="gpu-check's gpu-profiles.json: measured latency tables instead of the published ones",
    )
    s.set_defaults(func=_simulate)
    t = sub.add_parser("train", help="train DNN-Adapt's PPO (one policy for every fleet size)")
    t.add_argument(
        "--shapes",
        type=_shapes,
        default=_shapes("8x10,32x50"),
        help="fleets to train on, GPUSxMODELS[,...] (both mixes each; default: %(default)s)",
    )
    t.add_argument("--horizon", type=positive_float, default=600.0)
    t.add_argument("--timesteps", type=positive_int, default=30_000)
    t.add_argument("--episode-ticks", type=positive_int, default=200)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--picks", type=positive_int, default=1, help="slot actions PPO picks per tick, at most"
    )
    t.add_argument("--init", type=Path, default=None, help="start from this policy's network")
    t.add_argument(
        "--learning-rate",
        type=positive_float,
        default=None,
        help="PPO's learning rate (default: fleet/ppo.py's PPO_SETTINGS; lower to fine-tune)",
    )
    t.add_argument("--out-dir", type=Path, default=TRAINED_DIR)
    t.add_argument(
        "--profiles",
        type=Path,
        default=None,
        help="gpu-check's gpu-profiles.json: measured latency tables instead of the published ones",
    )
    t.set_defaults(func=_train)
    e = sub.add_parser("evaluate", help="the scale sweep; writes docs/results/fleet.md + plots")
    e.add_argument(
        "--points", type=str, default=None, help="e.g. 8x10x600,32x50x600 (GPUs x models x s)"
    )
    e.add_argument("--seeds", type=positive_int, default=3, help="arrival seeds per point")
    e.add_argument("--jobs", type=positive_int, default=2, help="points run at once")
    e.add_argument("--trained", type=Path, default=TRAINED_DIR)
    e.add_argument("--picks", type=positive_int, default=None, help=PICKS_HELP)
    e.add_argument(
        "--policies",
        type=_policies,
        default=POLICIES,
        help=f"comma-separated, of {','.join(POLICIES)} (default: all)",
    )
    e.add_argument("--out-dir", type=Path, default=Path("docs/results"))
    e.add_argument(
        "--profiles",
        type=Path,
        default=None,
        help="gpu-check's gpu-profiles.json: measured latency tables instead of the published ones",
    )
    e.set_defaults(func=_evaluate)


def _simulate(args: argparse.Namespace) -> int:
    from tsadapt.fleet.catalog import build_catalogue
    from tsadapt.fleet.evaluate import make
    from tsadapt.fleet.run import run_fleet

    cat = build_catalogue(args.gpus, args.models, args.mix, args.horizon, profiles=args.profiles)
    with _progress() as prog:
        task = prog.add_task(f"{args.policy} {args.mix} {args.gpus}x{args.models}", total=None)
        prog.update(task, total=int(args.horizon))
        r = run_fleet(
            cat,
            make(args.policy, cat, args.trained, args.picks),
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

    cats = [
        build_catalogue(g, m, mix, args.horizon, profiles=args.profiles)
        for g, m in args.shapes
        for mix in MIXES
    ]
    out = policy_path(args.out_dir)
    command = command_of(args)
    with _progress() as prog:
        task = prog.add_task("PPO", total=args.timesteps)

        def show(done: int, total: int, mean: float) -> None:
            prog.update(task, completed=done, description=f"PPO, mean episode reward {mean:.1f}")

        meta = train(
            cats, args.timesteps, out, args.seed, args.episode_ticks, command, show,
            picks_per_tick=args.picks, init=args.init, learning_rate=args.learning_rate,
        )  # fmt: skip
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
    jobs = [(g, m, mix, h) for g, m, h in points for mix in MIXES]
    with _progress() as prog, ProcessPoolExecutor(max_workers=args.jobs) as pool:
        overall = prog.add_task(f"sweep points ({args.jobs} at a time)", total=len(jobs))
        futures = [
            pool.submit(
                evaluate_point,
                g,
                m,
                mix,
                h,
                args.seeds,
                args.trained,
                args.policies,
                profiles=args.profiles,
                picks=args.picks,
            )  # fmt: skip
            for g, m, mix, h in jobs
        ]
        command = command_of(args)
        done: dict[int, object] = {}
        for fut in as_completed(futures):
            i = futures.index(fut)
            g, m, mix, _ = jobs[i]
            p = done[i] = fut.result()
            prog.advance(overall)
            if p.infeasible:
                prog.console.print(f"{mix} {g}x{m}: not run ({p.infeasible})")
            for name, runs in p.runs.items():
                gpus = sum(r.mean_gpus for r in runs) / len(runs)
                att = sum(r.attainment for r in runs) / len(runs)
                wall = sum(r.wall_s for r in runs)
                prog.console.print(
                    f"{mix} {g}x{m} {name}: {gpus:.2f} GPUs, {100 * att:.2f} % within SLO "
                    f"({len(runs)} seeds, {wall:.0f} s)"
                )
            left = [f"{mx} {gg}x{mm}" for k, (gg, mm, mx, _) in enumerate(jobs) if k not in done]
            note = f"**Partial: not run (yet): {', '.join(left)}.**" if left else ""
            results = [done[k] for k in sorted(done)]
            path = write_report(results, args.out_dir, command, time.perf_counter() - t0, note)
    print(f"wrote {path}")
    return 0
