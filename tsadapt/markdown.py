"""Markdown pieces shared by the report writers under ``docs/results/``: tables, the
command that wrote a report (its first line) and the paths it names."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tsadapt.constants import REPO_DIR


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A GitHub Markdown table: the header line, the separator, one line per row."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def rel(path: Path | str) -> str:
    """``path`` relative to the checkout when it lies inside it (as reports name files), else
    as given."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(REPO_DIR))
    except ValueError:
        return str(p)


#: The attribute ``tsadapt``'s main sets on the parsed arguments: the words typed after
#: ``tsadapt`` (also when main is called in-process with its own argv).
TYPED_ARGV = "typed_argv"


def command_of(args: Any, within: str | None = None) -> str:
    """:func:`typed_command` of the command line ``tsadapt``'s main parsed into ``args``
    (``sys.argv`` when it was parsed elsewhere)."""
    return typed_command(getattr(args, TYPED_ARGV, None), within)


def typed_command(argv: Sequence[str] | None = None, within: str | None = None) -> str:
    """The command that wrote a report, for its first line: ``tsadapt`` and the words typed
    after it (``sys.argv[1:]`` by default), without the global options before the
    subcommand (``tsadapt -v fleet train --x 1`` -> ``tsadapt fleet train --x 1``).

    With ``within``: ``""`` unless that word was typed (the report was written by another
    command, which names itself).
    """
    words = list(sys.argv[1:] if argv is None else argv)
    while words and words[0].startswith("-"):
        words.pop(0)
    if within is not None and within not in words:
        return ""
    return " ".join(["tsadapt", *(shlex.quote(w) for w in words)])
