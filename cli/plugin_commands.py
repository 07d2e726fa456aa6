"""``tsadapt plugin ...`` subcommands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tsadapt.plugin.build import (
    JAR_NAME,
    PINNED_TORCHSERVE,
    PluginBuildError,
    build_plugin,
    plugins_path,
)


def _cmd_build(args: argparse.Namespace) -> int:
    try:
        out = build_plugin(args.out_dir, force=args.force)
    except PluginBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out / JAR_NAME)
    return 0


def _cmd_path(args: argparse.Namespace) -> int:
    try:
        folder = plugins_path()
    except PluginBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(folder)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``plugin build`` and ``plugin path`` (each leaf sets ``func(args) -> int``)."""
    plugin = subparsers.add_parser("plugin", help="the TorchServe frontend plugin (/adapt)")
    actions = plugin.add_subparsers(dest="plugin_command", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="compile the plugin jar (cached) and print its path")
    build.add_argument(
        "--out-dir", type=Path, default=None, help="output directory (default: plugin/build)"
    )
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.set_defaults(func=_cmd_build)
    path = actions.add_parser(
        "path",
        help="print the folder to put in config.properties as plugins_path=",
        description="The folder holding the plugin jar: the prebuilt one a wheel ships "
        f"(built for TorchServe {PINNED_TORCHSERVE}; only a Java runtime needed), else built "
        "here from plugin/java (needs a JDK).",
    )
    path.set_defaults(func=_cmd_path)
