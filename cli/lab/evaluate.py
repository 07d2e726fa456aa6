"""``tsadapt lab evaluate``: every policy over scenarios x seeds, the budget-matched best-static,
and (``--random N``) N random held-out scenarios -> ``docs/results/simulation.md``."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tsadapt.cli.arg_types import positive_float, usage_error
from tsadapt.constants import RESULTS_DIR, SCENARIOS_DIR
from tsadapt.markdown import rel, typed_command
from tsadapt.policy.ppo_policy import SHIPPED_POLICY as DEFAULT_POLICY_FILE

CPU_SCALE_HELP = (
    "run on a machine this many times slower than the scenarios' profiles (1.4: every CPU "
    "cost x1.4; the controller's limits still come from the profiles)"
)

DEFAULT_SCENARIOS = tuple(
    str(SCENARIOS_DIR / f"{n}.yaml")
    for n in ("bursty", "diurnal", "step", "bursty-shared", "diurnal-shared")
)


def _named_rows(args: argparse.Namespace, scenarios: list, prog: Any, task: Any) -> tuple:
    """Rows of every policy (and budget-static) on the named scenarios; their starts."""
    from tsadapt.experiments.evaluate import (
        best_static,
        describe_start,
        run_policy,
        static_search_size,
    )
    from tsadapt.experiments.evaluate_heldout import budget_static_rows
    from tsadapt.experiments.evaluate_parallel import tune_best_statics
    from tsadapt.policy.defaults import TUNING_SEEDS
    from tsadapt.policy.sim.control import registration_configs

    seeds = list(range(args.seeds))
    rows: list[dict[str, Any]] = []
    adaptive = [p for p in args.policies if p != "best-static"]
    starts = []
    tuned = {}
    if "best-static" in args.policies and args.processes > 1:  # the searches, in parallel
        prog.update(task, description=f"tuning best-static ({args.processes} at a time)")
        done = lambda sc: prog.advance(task, static_search_size(sc))  # noqa: E731
        tuned = dict(enumerate(tune_best_statics(scenarios, args.processes, done)))
    for k, sc in enumerate(scenarios):
        initial = registration_configs(sc) if args.start == "registration" else None
        starts.append((sc.name, describe_start(initial)))
        statics, cache = tuned.get(k, (None, {}))
        if "best-static" in args.policies and statics is None:
            prog.update(task, description=f"{sc.name}: tuning best-static")
            statics = best_static(sc, on_step=lambda n: prog.advance(task, n), cache=cache)
        for seed in seeds:
            for pol in (["best-static"] if statics else []) + adaptive:
                prog.update(task, description=f"{sc.name} / {pol} / seed {seed}")
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
                prog.advance(task)
        ppo = [r for r in rows if r["scenario"] == sc.name and r["policy"] == "ppo"]
        if statics and ppo:
            prog.update(task, description=f"{sc.name}: tuning budget-static")
            rows += budget_static_rows(sc, ppo, statics, seeds, TUNING_SEEDS, cache)
    return rows, starts


def _heldout(args: argparse.Namespace, prog: Any, task: Any) -> tuple[list[str], list]:
    """The held-out section's lines and results (``--random N``)."""
    from tsadapt.experiments.evaluate_heldout import (
        HELDOUT_TUNING_SEEDS,
        HeldoutTask,
        heldout_markdown,
        ranking_lines,
        run_all,
    )
    from tsadapt.policy.learn.scenario_sets import check_heldout
    from tsadapt.policy.learn.selection import candidates_dir
    from tsadapt.policy.learn.train_config import load_train_config
    from tsadapt.policy.ppo_policy import read_metadata

    cfg = load_train_config(args.train_config)
    seeds = check_heldout(cfg, args.random)
    episode_s = cfg.env.episode_ticks * cfg.env.tick_s
    horizon = args.random_horizon or episode_s
    selection = read_metadata(args.policy_file).get("selection")
    candidates: tuple[tuple[int, Path], ...] = ()
    if selection:
        d = candidates_dir(args.policy_file)
        files = [(c["seed"], d / f"seed{c['seed']}.zip") for c in selection["candidates"]]
        candidates = tuple((s, f) for s, f in files if f.is_file())
    tasks = [
        HeldoutTask(
            cfg,
            s,
            k,
            horizon,
            Path(args.policy_file),
            candidates,
            with_static="best-static" in args.policies,
        )
        for k, s in enumerate(seeds)
    ]
    prog.update(task, description=f"{len(tasks)} random held-out scenarios")
    results = run_all(tasks, args.processes, lambda n: prog.advance(task, n))
    held = {s: sum(r["candidates"][s][0] for r in results) for s, _ in candidates}
    lines = heldout_markdown(results, seeds, horizon, episode_s, HELDOUT_TUNING_SEEDS, selection)
    return lines + ranking_lines(selection, held), results


def evaluate(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tsadapt.experiments.evaluate import dump_rows, plot, static_search_size, write_markdown
    from tsadapt.policy.ppo_policy import PolicyFileError, read_metadata
    from tsadapt.policy.sim.scenario import load_scenario

    if args.random < 0:
        return usage_error(f"--random: need a count >= 0, got {args.random}")
    if args.random and "ppo" not in args.policies:
        return usage_error("--random: needs ppo among --policies")
    if args.random_horizon is not None and not args.random_horizon > 0:
        return usage_error(f"--random-horizon: need seconds > 0, got {args.random_horizon}")
    if args.processes < 1:
        return usage_error(f"--processes: need >= 1, got {args.processes}")
    try:
        scenarios = [load_scenario(p) for p in args.scenarios]
        if args.cpu_scale is not None:
            scenarios = [s.on_slower_machine(args.cpu_scale) for s in scenarios]
        meta = read_metadata(args.policy_file) if "ppo" in args.policies else {}
        if args.random:
            from tsadapt.policy.learn.scenario_sets import check_heldout
            from tsadapt.policy.learn.train_config import load_train_config

            check_heldout(load_train_config(args.train_config), args.random)
    except (PolicyFileError, ValueError, OSError) as exc:
        return usage_error(str(exc))
    total = len(scenarios) * args.seeds * len(args.policies) + args.random
    if "best-static" in args.policies:
        total += sum(static_search_size(s) for s in scenarios)
    t0 = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn()) as prog:
        task = prog.add_task("evaluate", total=total)
        try:
            rows, starts = _named_rows(args, scenarios, prog, task)
        except PolicyFileError as exc:
            return usage_error(str(exc))
        t_named = time.perf_counter() - t0
        sections: list[str] = []
        if args.random:
            sections, results = _heldout(args, prog, task)
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_rows(rows, out_dir / "simulation.json")
    if args.random:
        (out_dir / "simulation-heldout.json").write_text(
            json.dumps(results, indent=1, default=lambda x: None)
        )
    plots = plot(rows, out_dir)
    header = _header(args, meta, time.perf_counter() - t0, t_named)
    if len({text for _, text in starts}) == 1:
        start = starts[0][1]
    else:
        start = "; ".join(f"{name}: {text}" for name, text in starts)
    md = write_markdown(rows, out_dir / "simulation.md", header, plots, start, sections)
    print(f"wrote {md}, {out_dir / 'simulation.json'} and {len(plots)} plots")
    return 0


def _header(args: argparse.Namespace, meta: dict, wall_s: float, named_s: float) -> dict:
    header: dict[str, Any] = {
        "command": f"`{typed_command(['lab', 'evaluate', *args.argv])}`",
        "scenarios": ", ".join(f"`{rel(Path(p))}`" for p in args.scenarios),
        "evaluation wall time": f"{wall_s:.0f} s"
        + (f" ({named_s:.0f} s the named scenarios)" if args.random else ""),
    }
    if "ppo" in args.policies:
        header["policy file"] = f"`{rel(Path(args.policy_file))}`"
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
    return header


def add_evaluate_parser(subparsers: Any, with_argv: Callable[[Any, str], Any]) -> None:
    """Add ``evaluate`` to an ``argparse`` subparsers object."""
    from tsadapt.experiments.evaluate import POLICIES

    p = subparsers.add_parser(
        "evaluate",
        help="every policy over scenarios x seeds (and random held-out scenarios) -> docs",
        description="Writes docs/results/simulation.md, .json and plots.",
    )
    p.add_argument("--scenarios", nargs="+", default=list(DEFAULT_SCENARIOS))
    p.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    p.add_argument("--policy-file", type=Path, default=DEFAULT_POLICY_FILE)
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    p.add_argument("--cpu-scale", type=positive_float, default=None, help=CPU_SCALE_HELP)
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument(
        "--start",
        choices=("registration", "batch1"),
        default="registration",
        help="where adaptive runs start: the demo models' registration defaults (as the real "
        "server does; batch 1 for non-demo models) or batch 1",
    )
    p.add_argument(
        "--random",
        type=int,
        default=0,
        help="also score every policy on N random held-out scenarios (default 0: none)",
    )
    p.add_argument(
        "--random-horizon",
        type=float,
        default=None,
        help="seconds of each held-out scenario (default: a training episode's)",
    )
    p.add_argument(
        "--train-config",
        type=Path,
        default=None,
        help="training config whose randomise ranges draw the held-out scenarios and whose "
        "seeds they must avoid (default: configs/train.yaml)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="held-out scenarios, and the named scenarios' best-static searches, run at once "
        "(default 1)",
    )
    p.set_defaults(func=with_argv(evaluate, "evaluate"))
