"""``tsadapt lab plugin bench-overhead | check-telemetry``: the plugin's measurements."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsadapt.markdown import command_of


def _publish(report_text: str, out: Path | None) -> int:
    """Print a generated report and write it to ``out`` (under docs/results/ by default)."""
    print(report_text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report_text)
        print(f"wrote {out}")
    return 0


def _cmd_bench_overhead(args: argparse.Namespace) -> int:
    from tsadapt.experiments.plugin_overhead import OverheadConfig, report, run

    config = OverheadConfig(args.model, args.rate, args.round_s, args.rounds, args.seed)
    text = report(config, run(config), command_of(args))
    return _publish(text, args.out)


def _cmd_check_telemetry(args: argparse.Namespace) -> int:
    from tsadapt.experiments.telemetry_check import report, run

    agreement = run(args.duration, args.seed)
    text = report(agreement, command_of(args))
    return _publish(text, args.out)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``plugin`` with ``bench-overhead`` and ``check-telemetry`` to the lab."""
    plugin = subparsers.add_parser("plugin", help="the plugin's overhead and telemetry checks")
    actions = plugin.add_subparsers(dest="plugin_command", metavar="ACTION", required=True)
    bench = actions.add_parser(
        "bench-overhead", help="p50/p99 of stock TorchServe vs TorchServe + plugin, one run"
    )
    bench.add_argument("--model", default="tabular", choices=["image", "text", "tabular"])
    bench.add_argument("--rate", type=float, default=80.0, help="requests/s (open loop)")
    bench.add_argument("--round-s", type=float, default=15.0, help="seconds per round")
    bench.add_argument("--rounds", type=int, default=4)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--out", type=Path, default=Path("docs/results/plugin-overhead.md"))
    bench.set_defaults(func=_cmd_bench_overhead)
    check = actions.add_parser(
        "check-telemetry", help="plugin p50/p99/SLO attainment vs Locust's client-side figures"
    )
    check.add_argument("--duration", type=float, default=50.0, help="seconds of load")
    check.add_argument("--seed", type=int, default=3)
    check.add_argument("--out", type=Path, default=Path("docs/results/telemetry-agreement.md"))
    check.set_defaults(func=_cmd_check_telemetry)
