"""``tsadapt train --scenario FILE``: fine-tune a trained policy on the user's own traffic
(:mod:`tsadapt.policy.learn.finetune`), then compare it on held-out slices of that traffic
with the policy it started from, the rules and best-static
(:mod:`tsadapt.policy.learn.finetune_report`)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

#: ``--timesteps`` default for a fine-tune.
FINETUNE_TIMESTEPS = 20_000


def add_finetune_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fine-tune on your traffic (--scenario)")
    g.add_argument(
        "--scenario",
        type=Path,
        default=None,
        help="fine-tune FROM --base-policy on this scenario YAML (your models, SLOs and "
        "arrivals, e.g. a `tsadapt trace` file) instead of training from scratch",
    )
    g.add_argument(
        "--profile",
        type=Path,
        action="append",
        default=[],
        help="a `tsadapt profile` JSON (repeatable): that model's measured batch latency "
        "replaces the scenario's",
    )
    g.add_argument(
        "--base-policy",
        type=Path,
        default=None,
        help="the policy to start from (default: the shipped policy/trained/ppo.zip)",
    )
    g.add_argument("--slice-s", type=float, default=30.0, help="slice length (default 30 s)")
    g.add_argument(
        "--heldout-every",
        type=int,
        default=3,
        help="hold out every Nth slice for the comparison (default 3)",
    )
    g.add_argument(
        "--eval-seeds", type=int, default=3, help="seeds 0..N-1 of the comparison (default 3)"
    )
    g.add_argument(
        "--report",
        type=Path,
        default=None,
        help="the comparison's Markdown (default: --out with .md; a .json beside it)",
    )


def _shown(path: Path) -> Path:
    """``path`` relative to the working folder when inside it (as reports show it)."""
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    return resolved.relative_to(cwd) if resolved.is_relative_to(cwd) else path


def run_finetune(args: argparse.Namespace, command: str) -> int:
    from tsadapt.cli.control_init import load_profile
    from tsadapt.policy.controller_config import ConfigError
    from tsadapt.policy.learn.finetune import (
        finetune,
        is_shipped_policy,
        time_slices,
        with_profiles,
    )
    from tsadapt.policy.learn.finetune_report import (
        heldout_rows,
        no_worse,
        summary,
        write_report,
    )
    from tsadapt.policy.ppo_policy import SHIPPED_POLICY, PolicyFileError, file_sha256
    from tsadapt.policy.sim.scenario import load_scenario

    def err(msg: str) -> int:
        print(f"tsadapt train: error: {msg}", file=sys.stderr)
        return 2

    out, base = Path(args.out), _shown(Path(args.base_policy or SHIPPED_POLICY))
    if is_shipped_policy(out):
        return err(
            f"--out {out} is the shipped policy; the fine-tune never overwrites it. "
            "Give a file of your own, e.g. --out my-policy.zip"
        )
    timesteps = args.timesteps if args.timesteps is not None else FINETUNE_TIMESTEPS
    seed = args.seed if args.seed is not None else 0
    report = Path(args.report) if args.report else out.with_suffix(".md")
    try:
        scenario = load_scenario(args.scenario)
        scenario = with_profiles(
            scenario, [(*load_profile(p), f"--profile {p}") for p in args.profile]
        )
        with tempfile.TemporaryDirectory(prefix="tsadapt-slices-") as folder:
            slices = time_slices(scenario, args.slice_s, args.heldout_every, Path(folder))
        print(f"{scenario.name}: {slices.describe()}", flush=True)

        def progress(done: int, total: int, mean: float) -> None:
            print(f"{done}/{total} steps, mean episode reward {mean:.2f}", flush=True)

        meta = finetune(
            base,
            slices,
            out,
            timesteps,
            seed,
            command,
            extra_meta={
                "scenario": str(args.scenario),
                "profiles": [str(p) for p in args.profile],
            },
            on_progress=progress,
        )
        v = meta["finetune"]["validation"]["goodput_rps"]
        print(
            f"wrote {out}: {meta['total_timesteps']} steps from {base} in "
            f"{meta['train_seconds']:.0f} s wall; on the training slices the fine-tuned "
            f"weights reach {v['fine-tuned']:.2f} req/s, the base {v['base']:.2f}: kept the "
            f"{meta['finetune']['kept']} weights",
            flush=True,
        )
        seeds = list(range(args.eval_seeds))
        rows = heldout_rows(slices.heldout, out, base, seeds, on_run=lambda s: print(s, flush=True))
    except (PolicyFileError, ConfigError, ValueError, OSError) as exc:
        return err(str(exc))
    header = {
        "command": f"`{command}`",
        "scenario": f"`{args.scenario}`",
        "profiles": ", ".join(f"`{p}`" for p in args.profile) or "none (the scenario's)",
        "slices": slices.describe(),
        "held-out seeds": ", ".join(map(str, seeds)),
        "base policy": f"`{base}` (sha256 {file_sha256(base)[:12]})",
        "fine-tuned policy": f"`{out}` (sha256 {file_sha256(out)[:12]}), {timesteps} steps, "
        f"seed {seed}; {meta['finetune']['kept']} weights kept (goodput on the training "
        f"slices: fine-tuned {v['fine-tuned']:.2f}, base {v['base']:.2f} req/s)",
    }
    md, js = write_report(report, header, rows)
    s = summary(rows)
    for label, m in s.items():
        print(
            f"  {label:<18} goodput {m['goodput_rps']:7.2f} req/s  "
            f"SLO {100 * m['slo_attainment']:6.2f} %  {m['worker_seconds']:5.0f} worker-s"
        )
    verdict = "no worse than" if no_worse(s) else "WORSE than"
    print(f"fine-tuned policy is {verdict} its base on the held-out slices")
    print(f"wrote {md} and {js}")
    return 0


def wants_finetune(args: Any) -> bool:
    return getattr(args, "scenario", None) is not None
