"""``tsadapt plugin ...`` subcommands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import JAR_NAME, PluginBuildError, build_plugin


def _cmd_build(args: argparse.Namespace) -> int:
    try:
        out = build_plugin(args.out_dir, force=args.force)
    except PluginBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out / JAR_NAME)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``plugin build``; each leaf parser sets ``func(args) -> int`` via set_defaults."""
    plugin = subparsers.add_parser("plugin", help="the TorchServe frontend plugin (/adapt)")
    actions = plugin.add_subparsers(dest="plugin_command", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="compile the plugin jar (cached) and print its path")
    build.add_argument(
        "--out-dir", type=Path, default=None, help="output directory (default: plugin/build)"
    )
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.set_defaults(func=_cmd_build)
