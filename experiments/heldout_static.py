"""PPO against the hindsight best-static on the first N random held-out scenarios alone.

``python -m tsadapt.experiments.heldout_static --n N --horizon 60 --processes P`` runs
exactly what ``tsadapt evaluate --random N`` runs on its held-out scenarios (the same
generator seeds, rules, PPO, best-static and budget-static: :func:`evaluate_heldout.run_heldout`)
without the named scenarios, whose best-static searches take most of that command's time,
and writes ``docs/results/simulation-beststatic.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tsadapt.constants import REPO_DIR
from tsadapt.experiments.evaluate_heldout import (
    HELDOUT_TUNING_SEEDS,
    HeldoutTask,
    heldout_markdown,
    run_all,
)
from tsadapt.policy.learn.scenario_sets import check_heldout
from tsadapt.policy.learn.train_config import load_train_config
from tsadapt.policy.ppo_policy import SHIPPED_POLICY

OUT_DIR = REPO_DIR / "docs" / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tsadapt.experiments.heldout_static")
    ap.add_argument("--n", type=int, required=True, help="held-out scenarios (the first N)")
    ap.add_argument("--horizon", type=float, default=60.0, help="seconds of each")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--policy-file", type=Path, default=SHIPPED_POLICY)
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    command = "python -m tsadapt.experiments.heldout_static " + " ".join(argv)
    cfg = load_train_config(None)
    try:
        seeds = check_heldout(cfg, args.n)
    except ValueError as exc:
        ap.error(str(exc))
    episode_s = cfg.env.episode_ticks * cfg.env.tick_s
    tasks = [
        HeldoutTask(cfg, s, k, args.horizon, Path(args.policy_file)) for k, s in enumerate(seeds)
    ]
    t0 = time.perf_counter()
    results = run_all(tasks, args.processes)
    wall = time.perf_counter() - t0
    lines = [
        f"# PPO against best-static on held-out scenarios: `{command}`",
        "",
        "Written by that command (do not edit by hand).",
        "",
        f"- policy file: `{Path(args.policy_file).resolve().relative_to(REPO_DIR)}`",
        f"- wall time: {wall:.0f} s, {args.processes} process(es), on a 2-CPU host shared "
        "with other jobs",
        "- the same held-out scenarios, runs and scoring as `tsadapt evaluate --random N` "
        "(its first N), without the named scenarios",
        "",
        *heldout_markdown(results, seeds, args.horizon, episode_s, HELDOUT_TUNING_SEEDS),
    ]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulation-beststatic.md").write_text("\n".join(lines) + "\n")
    (out / "simulation-beststatic.json").write_text(
        json.dumps(results, indent=1, default=lambda x: None)
    )
    print(f"wrote {out / 'simulation-beststatic.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
