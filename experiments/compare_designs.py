"""Compare policy files (e.g. the two action designs) on the random *selection* scenarios.

``python -m tsadapt.experiments.compare_designs --n 40 --horizon 60 NAME=FILE ...`` runs the
rules and every policy file once on each of the first ``n`` selection scenarios
(:func:`scenario_sets.selection_scenario_seeds` of a config with ``random_scenarios = n``:
never a training environment's or a held-out seed) and prints, per file, on how many the
policy matches the best rule (:func:`evaluate_heldout.matches`), its mean goodput and the
mean paired difference to the best rule. It picks between designs without touching the
held-out scenarios ``tsadapt evaluate --random`` reports.
"""

from __future__ import annotations

import argparse
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.experiments.evaluate import RULES
from tsadapt.experiments.evaluate_heldout import best_rule, bootstrap_ci, matches
from tsadapt.policy.learn.scenario_sets import draw, selection_scenario_seeds
from tsadapt.policy.learn.train_config import load_train_config
from tsadapt.policy.sim.control import run_named


def _one(job: tuple[Any, int, float, dict[str, Path]]) -> dict[str, dict[str, float]]:
    config, seed, horizon, files = job
    (sc,) = draw(config, (seed,), horizon, "select")
    out = {p: run_named(sc, p, sc.seed).as_dict() for p in RULES}
    for name, f in files.items():
        out[name] = run_named(sc, "ppo", sc.seed, f).as_dict()
    return out


def compare_files(
    files: dict[str, Path],
    n: int,
    horizon: float,
    processes: int = 1,
    config_path: Path | None = None,
) -> list[str]:
    """The report's lines (see the module docstring)."""
    config = load_train_config(config_path)
    config = replace(config, select=replace(config.select, random_scenarios=n))
    jobs = [(config, s, horizon, files) for s in selection_scenario_seeds(config)]
    if processes > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(processes, mp_context=ctx) as pool:
            results = list(pool.map(_one, jobs))
    else:
        results = [_one(j) for j in jobs]
    lines = [
        f"{n} selection scenarios, {horizon:g} s each",
        "| policy | matches best rule | mean goodput | mean diff to best rule [95 % CI] |",
        "|---|---|---|---|",
    ]
    for name in files:
        ok, diffs, good = 0, [], []
        for res in results:
            rows = [{**res[p], "policy": p} for p in RULES]
            best = best_rule(rows)
            ppo = {**res[name], "policy": "ppo"}
            ok += matches(ppo, best)
            diffs.append(ppo["goodput_rps"] - best["goodput_rps"])
            good.append(ppo["goodput_rps"])
        lo, hi = bootstrap_ci(diffs)
        lines.append(
            f"| {name} | {ok}/{len(results)} ({100 * ok / len(results):.0f} %) | "
            f"{np.mean(good):.1f} | {np.mean(diffs):+.2f} [{lo:+.2f}, {hi:+.2f}] |"
        )
    for p in RULES:
        lines.append(f"| {p} | - | {np.mean([r[p]['goodput_rps'] for r in results]):.1f} | - |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tsadapt.experiments.compare_designs")
    ap.add_argument("files", nargs="+", help="NAME=POLICY_FILE")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--horizon", type=float, default=60.0)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--train-config", type=Path, default=None)
    args = ap.parse_args(argv)
    files = {}
    for item in args.files:
        name, _, path = item.partition("=")
        if not path:
            ap.error(f"files: expected NAME=POLICY_FILE, got {item!r}")
        files[name] = Path(path)
    lines = compare_files(files, args.n, args.horizon, args.processes, args.train_config)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
