"""``tsadapt profile | train``: a served model's batch latency, and the PPO policy's training.

(``simulate`` and ``evaluate`` are lab commands: :mod:`tsadapt.cli.lab.simulate`.)

Wired into the ``tsadapt`` CLI by :func:`register`; ``python -m tsadapt.cli.learn_commands``
runs the same commands without the CLI.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from tsadapt.cli.arg_types import with_argv as _with_argv
from tsadapt.serve.attach import add_attach_args

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


# ----------------------------------------------------------------------------- train


def _train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tsadapt.policy.learn.train_config import load_train_config

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
    from tsadapt.policy.learn.ppo_train import train

    with _train_progress("training PPO") as prog:
        task = prog.add_task("train", total=cfg.total_timesteps, r="-")

        def on(done: int, total: int, mean: float) -> None:
            prog.update(task, completed=min(done, total), r=f"{mean:.2f}")
            if not prog.console.is_terminal:  # logs: one line per rollout
                print(f"{done}/{total} steps, mean episode reward {mean:.2f}", flush=True)

        return train(cfg, out, command=cmd, on_progress=on)


def _train_selected(cfg: Any, out: Path, cmd: str) -> dict[str, Any]:
    """``select.candidates`` seeds, one bar each; a line per validated candidate."""
    from tsadapt.policy.learn.selection import Validation, train_selected

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


# ----------------------------------------------------------------------------- profile


def _profile(args: argparse.Namespace) -> int:
    from tsadapt.serve.profiler import ProfileError, run_profile

    try:
        out = run_profile(args)
    except ProfileError as exc:
        return _err(str(exc))
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------- wiring


def register(subparsers: Any) -> None:
    """Add ``train`` and ``profile`` (handler in ``func``)."""
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
    parser = argparse.ArgumentParser(prog="python -m tsadapt.cli.learn_commands")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
