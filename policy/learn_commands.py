"""``tsadapt profile | simulate | train | evaluate``: the learned half of the controller.

Wired into the ``tsadapt`` CLI by :func:`register`; ``python -m tsadapt.policy.learn_commands``
runs the same commands without the CLI.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from tsadapt.attach import add_attach_args

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POLICY_FILE = REPO / "policy" / "trained" / "ppo.zip"
DEFAULT_SCENARIOS = tuple(
    str(REPO / "configs" / "scenarios" / f"{n}.yaml")
    for n in ("bursty", "diurnal", "step", "bursty-shared", "diurnal-shared")
)
RESULTS_DIR = REPO / "docs" / "results"


def _command_line(name: str, argv: list[str]) -> str:
    return " ".join(["tsadapt", name, *(shlex.quote(a) for a in argv)])


def _rel(p: Path) -> Path:
    p = p.resolve()
    return p.relative_to(REPO) if p.is_relative_to(REPO) else p


def _err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


# ----------------------------------------------------------------------------- simulate


def _simulate(args: argparse.Namespace) -> int:
    from .evaluate import run_policy
    from .ppo_policy import PolicyFileError
    from .scenario import load_scenario

    try:
        scenario = load_scenario(args.scenario)
        result = run_policy(
            scenario,
            args.policy,
            scenario.seed if args.seed is None else args.seed,
            args.policy_file,
        )
    except (PolicyFileError, ValueError, OSError) as exc:
        return _err(str(exc))
    if args.json:
        print(json.dumps(result, default=lambda x: None))
    else:
        r, nan = result, float("nan")
        print(
            f"{r['scenario']} / {r['policy']} / seed {r['seed']}: "
            f"goodput {r['goodput_rps']:.1f} rps, SLO {100 * r['slo_attainment']:.2f} %, "
            f"p50 {r['p50_ms'] or nan:.1f} ms, p99 {r['p99_ms'] or nan:.1f} ms, "
            f"{r['worker_seconds']:.0f} worker-s, {r['reconfigurations']} reconfigurations, "
            f"{r['requests']} requests, {r['rejected']} rejected"
        )
    return 0


# ----------------------------------------------------------------------------- train


def _train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .train_config import load_train_config

    try:
        cfg = load_train_config(args.config, seed=args.seed, total_timesteps=args.timesteps)
        if args.candidates is not None:
            cfg = replace(cfg, select=replace(cfg.select, candidates=args.candidates))
    except (ValueError, OSError) as exc:
        return _err(str(exc))
    cmd = _command_line("train", args.argv)
    try:
        run = _train_one if cfg.select.candidates == 1 else _train_selected
        meta = run(cfg, args.out, cmd)
    except ValueError as exc:
        return _err(str(exc))
    size = args.out.stat().st_size
    print(
        f"wrote {args.out} ({size / 1024:.0f} KiB): {meta['total_timesteps']} steps in "
        f"{meta['train_seconds']:.0f} s wall ({meta['train_cpu_seconds']:.0f} s CPU), "
        f"seed {meta['seed']}"
    )
    if "selection" in meta:
        sel = meta["selection"]
        print(
            f"seed {sel['chosen_seed']} chosen from {len(sel['candidates'])} candidates; "
            f"training and selection took {sel['wall_seconds']:.0f} s wall"
        )
    return 0


def _train_progress(label: str) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("mean episode reward {task.fields[r]}"),
        TimeElapsedColumn(),
    )


def _train_one(cfg: Any, out: Path, cmd: str) -> dict[str, Any]:
    """One PPO seed, progress bar per rollout."""
    from .ppo_policy import train

    with _train_progress("training PPO") as prog:
        task = prog.add_task("train", total=cfg.total_timesteps, r="-")

        def on(done: int, total: int, mean: float) -> None:
            prog.update(task, completed=min(done, total), r=f"{mean:.2f}")
            if not prog.console.is_terminal:  # logs: one line per rollout
                print(f"{done}/{total} steps, mean episode reward {mean:.2f}", flush=True)

        return train(cfg, out, command=cmd, on_progress=on)


def _train_selected(cfg: Any, out: Path, cmd: str) -> dict[str, Any]:
    """``select.candidates`` seeds, one bar each; a line per validated candidate."""
    from .selection import Validation, train_selected

    seeds = [cfg.seed + i for i in range(cfg.select.candidates)]
    with _train_progress("training PPO seed {task.description}") as prog:
        tasks = {
            s: prog.add_task(str(s), total=cfg.total_timesteps, r="-", start=False) for s in seeds
        }

        def on(seed: int, done: int, total: int, mean: float) -> None:
            prog.start_task(tasks[seed])  # the clock of a queued candidate starts with it
            prog.update(tasks[seed], completed=min(done, total), r=f"{mean:.2f}")
            if not prog.console.is_terminal:
                print(
                    f"seed {seed}: {done}/{total} steps, mean episode reward {mean:.2f}",
                    flush=True,
                )

        def validated(v: Validation) -> None:
            each = ", ".join(f"{n} {g:.1f}" for n, g in v.goodput_rps.items())
            line = (
                f"seed {v.seed}: validation goodput {v.score:.1f} req/s ({each}), "
                f"{v.total_worker_seconds:.0f} worker-s, "
                f"{v.total_reconfigurations:.0f} reconfigurations"
            )
            if prog.console.is_terminal:
                prog.console.print(line)
            else:  # logs: one unwrapped line
                print(line, flush=True)

        return train_selected(cfg, out, cmd, on_progress=on, on_validated=validated)


# ----------------------------------------------------------------------------- evaluate


def _evaluate(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from .evaluate import (
        best_static,
        describe_start,
        dump_rows,
        plot,
        run_policy,
        static_search_size,
        write_markdown,
    )
    from .ppo_policy import PolicyFileError, read_metadata
    from .scenario import load_scenario
    from .sim_control import registration_configs

    try:
        scenarios = [load_scenario(p) for p in args.scenarios]
        if "ppo" in args.policies:
            meta = read_metadata(args.policy_file)
    except (PolicyFileError, ValueError, OSError) as exc:
        return _err(str(exc))
    seeds = list(range(args.seeds))
    rows: list[dict[str, Any]] = []
    adaptive = [p for p in args.policies if p != "best-static"]
    total = len(scenarios) * len(seeds) * len(args.policies)
    if "best-static" in args.policies:
        total += sum(static_search_size(s) for s in scenarios)
    t0 = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as prog:
        task = prog.add_task("evaluate", total=total)
        starts = []
        for sc in scenarios:
            initial = registration_configs(sc) if args.start == "registration" else None
            starts.append((sc.name, describe_start(initial)))
            statics = None
            if "best-static" in args.policies:
                prog.update(task, description=f"{sc.name}: tuning best-static")
                statics = best_static(sc, on_step=lambda n: prog.advance(task, n))
            for seed in seeds:
                for pol in (["best-static"] if statics else []) + adaptive:
                    prog.update(task, description=f"{sc.name} / {pol} / seed {seed}")
                    try:
                        rows.append(
                            run_policy(
                                sc,
                                pol,
                                seed,
                                args.policy_file,
                                static_configs=statics,
                                initial=initial,
                            )
                        )
                    except PolicyFileError as exc:
                        return _err(str(exc))
                    prog.advance(task)
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_rows(rows, out_dir / "simulation.json")
    plots = plot(rows, out_dir)
    header: dict[str, Any] = {
        "command": f"`{_command_line('evaluate', args.argv)}`",
        "scenarios": ", ".join(f"`{_rel(Path(p))}`" for p in args.scenarios),
        "evaluation wall time": f"{time.perf_counter() - t0:.0f} s",
    }
    if "ppo" in args.policies:
        pf = Path(args.policy_file)
        header["policy file"] = f"`{_rel(pf)}`"
        header["policy training"] = (
            f"{meta.get('total_timesteps')} steps in {meta.get('train_seconds')} s wall, "
            f"{meta.get('train_cpu_seconds')} s CPU (one thread), on a "
            f"{meta.get('host', {}).get('cpus')}-CPU host shared with other jobs; "
            f"seed {meta.get('seed')}"
        )
        sel = meta.get("selection")
        if sel:
            scores = ", ".join(
                f"seed {c['seed']} {c['score_goodput_rps']:.1f}" for c in sel["candidates"]
            )
            header["policy selection"] = (
                f"seed {sel['chosen_seed']} kept of {len(sel['candidates'])} trained "
                f"({sel['processes']} at a time) by summed validation goodput over "
                f"{len(sel['scenario_files'])} scenarios x seeds {sel['validation_seeds']} "
                f"({scores} req/s); training and selection took {sel['wall_seconds']:.0f} s wall"
            )
        header["regenerate the policy"] = f"`{meta.get('command')}`"
    if len({text for _, text in starts}) == 1:
        start = starts[0][1]
    else:
        start = "; ".join(f"{name}: {text}" for name, text in starts)
    md = write_markdown(rows, out_dir / "simulation.md", header, plots, start)
    print(f"wrote {md}, {out_dir / 'simulation.json'} and {len(plots)} plots")
    return 0


# ----------------------------------------------------------------------------- profile


def _profile(args: argparse.Namespace) -> int:
    from .profiler import ProfileError, run_profile

    try:
        out = run_profile(args)
    except ProfileError as exc:
        return _err(str(exc))
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------- wiring


def _with_argv(func: Any, name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        if not hasattr(args, "argv"):
            args.argv = _argv_after(name)
        return func(args)

    return run


def _argv_after(name: str) -> list[str]:
    argv = sys.argv[1:]
    return argv[argv.index(name) + 1 :] if name in argv else argv


def register(subparsers: Any) -> None:
    """Add ``profile``, ``simulate``, ``train`` and ``evaluate`` (handler in ``func``)."""
    from .evaluate import POLICIES

    p = subparsers.add_parser(
        "simulate",
        help="run a scenario in the simulator under a policy",
        description="Simulate a scenario YAML (the same file the Locust "
        "scenarios replay) with a policy behind the guards.",
    )
    p.add_argument("--scenario", type=Path, required=True, help="scenario YAML")
    p.add_argument("--policy", choices=POLICIES, required=True)
    p.add_argument("--policy-file", type=Path, default=None, help="policy file for --policy ppo")
    p.add_argument("--seed", type=int, default=None, help="default: the scenario's seed")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_with_argv(_simulate, "simulate"))

    p = subparsers.add_parser(
        "train",
        help="train the PPO policy in the simulator",
        description="PPO (Stable-Baselines3) over randomised scenarios.",
    )
    p.add_argument("--config", type=Path, default=None, help="default: configs/train.yaml")
    p.add_argument("--out", type=Path, default=DEFAULT_POLICY_FILE)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--timesteps", type=int, default=None)
    p.add_argument(
        "--candidates",
        type=int,
        default=None,
        help="PPO seeds to train, keeping the best on validation (default: select.candidates "
        "of the config; 1 = just --seed)",
    )
    p.set_defaults(func=_with_argv(_train, "train"))

    p = subparsers.add_parser(
        "evaluate",
        help="every policy over scenarios x seeds -> docs",
        description="Writes docs/results/simulation.md, .json and plots.",
    )
    p.add_argument("--scenarios", nargs="+", default=list(DEFAULT_SCENARIOS))
    p.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    p.add_argument("--policy-file", type=Path, default=DEFAULT_POLICY_FILE)
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument(
        "--start",
        choices=("registration", "batch1"),
        default="registration",
        help="where adaptive runs start: the demo models' registration defaults (as the real "
        "server does; batch 1 for non-demo models) or batch 1",
    )
    p.set_defaults(func=_with_argv(_evaluate, "evaluate"))

    p = subparsers.add_parser(
        "profile",
        help="batch latency of a served model vs batch/workers",
        description="Measure a running TorchServe model's batch latency "
        "against batch size and workers sharing the device; fit "
        "latency(b) = alpha*b + beta.",
    )
    p.add_argument("--model", required=True)
    p.add_argument(
        "--payload", type=Path, default=None, help="request body file (default: demo example)"
    )
    add_attach_args(p)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5, help="timed batches per point")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--out", type=Path, default=None, help="default: docs/results/profiles/<model>.json"
    )
    p.set_defaults(func=_with_argv(_profile, "profile"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsadapt.policy.learn_commands")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
