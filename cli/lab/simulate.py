"""``tsadapt lab simulate | evaluate``: policies in the simulator (one scenario, or the
whole table behind docs/results/simulation.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tsadapt.cli.arg_types import positive_float, usage_error, with_argv
from tsadapt.cli.lab.evaluate import CPU_SCALE_HELP


def _simulate(args: argparse.Namespace) -> int:
    from tsadapt.experiments.evaluate import run_policy
    from tsadapt.policy.ppo_policy import PolicyFileError
    from tsadapt.policy.sim.scenario import load_scenario

    try:
        scenario = load_scenario(args.scenario)
        if args.cpu_scale is not None:
            scenario = scenario.on_slower_machine(args.cpu_scale)
        result = run_policy(
            scenario,
            args.policy,
            scenario.seed if args.seed is None else args.seed,
            args.policy_file,
        )
    except (PolicyFileError, ValueError, OSError) as exc:
        return usage_error(str(exc))
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


def register(subparsers: Any) -> None:
    """Add ``simulate`` and ``evaluate`` to the lab's sub-parsers."""
    from tsadapt.experiments.evaluate import POLICIES

    p = subparsers.add_parser(
        "simulate",
        help="run a scenario in the simulator under a policy",
        description="Simulate a scenario YAML (the same file the Locust "
        "scenarios replay) with a policy behind the guards.",
    )
    p.add_argument("--scenario", type=Path, required=True, help="scenario YAML")
    p.add_argument("--policy", choices=POLICIES, required=True)
    p.add_argument(
        "--policy-file",
        type=Path,
        default=None,
        help="policy file for --policy ppo (default: the shipped policy)",
    )
    p.add_argument("--seed", type=int, default=None, help="default: the scenario's seed")
    p.add_argument("--cpu-scale", type=positive_float, default=None, help=CPU_SCALE_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=with_argv(_simulate, "simulate"))

    from tsadapt.cli.lab.evaluate import add_evaluate_parser

    add_evaluate_parser(subparsers, with_argv)
