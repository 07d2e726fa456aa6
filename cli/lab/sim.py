"""CLI subcommands of the policy package (wired into ``tsadapt`` by ``register``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, NamedTuple

from tsadapt.cli.arg_types import positive_float


def _sim_bench(args: argparse.Namespace) -> int:
    from tsadapt.experiments.sim_speed import run

    run(args.batch_sizes, args.requests)
    return 0


def _command_line() -> str:
    argv = sys.argv[1:]
    if "fidelity" in argv:
        argv = argv[argv.index("fidelity") :]
    return " ".join(["tsadapt", "lab", *(shlex.quote(a) for a in argv)])


def _progress(every_s: float = 15.0):  # noqa: ANN202
    """An ``on_tick`` that prints a line when the step changes or every ``every_s``."""
    last = {"t": -every_s, "what": ""}

    def tick(elapsed: float, what: str) -> None:
        if what != last["what"] or elapsed - last["t"] >= every_s:
            last.update(t=elapsed, what=what)
            print(f"  {elapsed:5.0f} s  {what}", flush=True)

    return tick


def _fidelity(args: argparse.Namespace) -> int:
    from tsadapt.experiments import fidelity as F

    command = _command_line()
    if args.fidelity_action == "calibrate":
        cals, cpu = F.calibrate(
            runs_dir=args.runs_dir,
            out=args.calibration_out,
            duration_s=args.duration,
            command=command,
            on_tick=_progress(),
            quiet=F.Quiet(args.quiet_cores, args.quiet_wait),
        )
        for c in cals:
            print(
                f"{c.model:<8} overhead p50 {c.overhead_p50_ms:.1f} ms, p99 "
                f"{c.overhead_p99_ms:.1f} ms (real p50 {c.real_p50_ms:.1f} ms, sim p50 "
                f"{c.sim_p50_ms:.1f} ms without it, {c.requests} requests)  "
                f"exec_cv={c.exec_cv:.3f}"
            )
        print(
            f"box CPU {cpu.box_cores:.2f} cores busy, ours "
            f"{cpu.ours_cores:.2f}, others {cpu.others_cores:.2f}; wrote {args.calibration_out}"
        )
        if cpu.others_cores > F.CALIBRATION_MAX_OTHERS:
            print(
                f"warning: other processes used {cpu.others_cores:.2f} cores during the last "
                f"run (> {F.CALIBRATION_MAX_OTHERS}): the calibration carries their noise"
            )
        return 0
    names = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    if not names:
        raise ValueError("--scenarios: empty")
    cfg = F.FidelityConfig(
        scenarios=names,
        duration_s=args.duration,
        seed=args.seed,
        out_dir=args.out,
        runs_dir=args.runs_dir,
        command=command,
        quiet=F.Quiet(args.quiet_cores, args.quiet_wait),
        repeat=args.repeat,
    )
    runs, md, js = F.run_fidelity(cfg)
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fidelity: real TorchServe vs simulator (static)")
    for h in F.TABLE_HEADER:
        table.add_column(h, justify="left" if h in ("scenario", "model") else "right")
    for row in F.table_rows(runs):
        table.add_row(*row)
    out = Console()
    if not out.is_terminal:
        out = Console(width=200)
    out.print(table)
    agreeing = [r.scenario for r in runs if r.agrees]
    print(
        f"{len(agreeing)} of {len(runs)} scenarios agree ({', '.join(agreeing) or 'none'}); "
        f"{F.SCENARIOS_NEEDED} needed: {'PASS' if len(agreeing) >= F.SCENARIOS_NEEDED else 'FAIL'}"
    )
    repeated = [r for r in runs if r.repeat_rows]
    if repeated:
        same = [r.scenario for r in repeated if r.repeat_agrees]
        print(
            f"repeat: {len(same)} of {len(repeated)} scenarios agree with a second real run "
            f"({', '.join(same) or 'none'})"
        )
    print(f"wrote {md} and {js}")
    return 0 if all(r.status == "ok" for r in runs) else 1


def register(subparsers: Any) -> None:
    """Add ``sim-bench`` and ``fidelity`` to an ``argparse`` subparsers object."""
    from tsadapt.experiments.sim_speed import add_arguments

    p = subparsers.add_parser(
        "sim-bench",
        help="simulated requests per second of the simulator (one core)",
        description="Time the discrete-event simulator at several batch sizes.",
    )
    add_arguments(p)
    p.set_defaults(func=_sim_bench)

    from tsadapt.experiments.fidelity import (
        CALIBRATION_FILE,
        DEFAULT_RUNS,
        DEFAULT_SCENARIOS,
        QUIET_CORES,
        QUIET_TIMEOUT_S,
        RESULTS_DIR,
    )

    p = subparsers.add_parser(
        "fidelity",
        help="simulator against the real TorchServe on the same workload (p99, SLO attainment)",
        description="For each scenario: a real run (fresh TorchServe, static configuration, "
        "Locust replaying the scenario's arrivals) and a simulated one (same arrivals, same "
        "configuration); writes docs/results/fidelity.md and fidelity.json. "
        "'tsadapt lab fidelity calibrate' instead runs the calibration scenario and writes "
        "docs/results/fidelity-calibration.json, which the scenarios read.",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help="comma-separated scenario names (loadtests/scenarios) or YAML paths "
        "(default: %(default)s)",
    )
    p.add_argument("--seed", type=int, help="arrival seed (default: each scenario's)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="report folder")
    p.add_argument(
        "--repeat", action="store_true",
        help="run each scenario's real side twice and report how far the two real runs "
        "agree under the same tolerances (doubles the real runs)",
    )  # fmt: skip
    _real_run_args(p, RunsDefaults(DEFAULT_RUNS, QUIET_CORES, QUIET_TIMEOUT_S))
    p.set_defaults(func=_fidelity)
    actions = p.add_subparsers(dest="fidelity_action", metavar="ACTION")
    actions.default = "compare"  # no action: compare
    c = actions.add_parser(
        "calibrate",
        help="measure the overhead the handler-only profile misses -> fidelity-calibration.json",
    )
    c.add_argument(
        "--calibration-out", type=Path, default=CALIBRATION_FILE,
        help="file to write (default: %(default)s)",
    )  # fmt: skip
    _real_run_args(c, RunsDefaults(DEFAULT_RUNS, QUIET_CORES, QUIET_TIMEOUT_S))
    c.set_defaults(func=_fidelity)


class RunsDefaults(NamedTuple):
    """Defaults of the options every real fidelity run takes."""

    runs_dir: Path
    quiet_cores: float
    quiet_wait: float


def _real_run_args(p: argparse.ArgumentParser, d: RunsDefaults) -> None:
    p.add_argument(
        "--duration", type=positive_float, help="seconds of load (default: each scenario's)"
    )
    p.add_argument("--runs-dir", type=Path, default=d.runs_dir, help="server dirs, records")
    p.add_argument(
        "--quiet-wait", type=float, default=d.quiet_wait,
        help="before each real run wait at most this many seconds for other processes to "
        "go quiet; 0 = do not wait (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--quiet-cores", type=float, default=d.quiet_cores,
        help="'quiet' = other processes use at most this many cores (default: %(default)s)",
    )  # fmt: skip
