"""argparse types shared by the ``tsadapt`` subcommands (a bad value names its option), and
the one way a subcommand reports a bad value it finds itself (:func:`usage_error`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def usage_error(msg: str) -> int:
    """Print ``error: msg`` to stderr; the exit code of a usage error (2)."""
    print(f"error: {msg}", file=sys.stderr)
    return 2


def positive_float(value: str) -> float:
    """argparse type: a number > 0."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {x}")
    return x


def nonneg_float(value: str) -> float:
    """argparse type: a number >= 0."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {x}")
    return x


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        x = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if x < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {x}")
    return x


def with_argv(func: Callable[[argparse.Namespace], int], name: str) -> Callable:
    """``func`` with ``args.argv`` set to the words after ``name`` on the command line (for
    the command line a report prints at its top), unless the caller set it already. The
    command line is ``args.cli_argv`` when :func:`tsadapt.cli.main.main` parsed a list."""

    def run(args: argparse.Namespace) -> int:
        if not hasattr(args, "argv"):
            argv = getattr(args, "cli_argv", None) or sys.argv[1:]
            args.argv = argv[argv.index(name) + 1 :] if name in argv else argv
        return func(args)

    return run
