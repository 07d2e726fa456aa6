"""argparse types shared by the ``tsadapt`` subcommands (a bad value names its option)."""

from __future__ import annotations

import argparse


def positive_float(value: str) -> float:
    """argparse type: a number > 0."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {x}")
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
