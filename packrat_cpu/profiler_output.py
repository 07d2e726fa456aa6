"""Where a Packrat profile goes: the output file checked before a long measurement
(:func:`prepare_out`), the CSV :func:`tsadapt.packrat_cpu.profile_table.load_profile`
reads (:func:`write_csv`), and the summary on stdout (:func:`print_summary`)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tsadapt.handlers.placement import usable_cores
from tsadapt.packrat_cpu.profiler_config import (
    PointResult,
    ProfilerConfig,
    ProfilerConfigError,
    int_list,
)

CSV_COLUMNS: tuple[str, ...] = ("threads", "batch", "latency_ms", "min_ms", "max_ms", "std_ms")


def write_csv(results: Iterable[PointResult], path: Path) -> Path:
    """Write ``threads,batch,latency_ms,min_ms,max_ms,std_ms`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for p in sorted(results, key=lambda p: (p.threads, p.batch)):
            writer.writerow(p.row())
    tmp.replace(path)
    return path


def summary_table(results: Sequence[PointResult], title: str) -> Any:
    """A rich table: one row per batch, one column per thread count (mean ms)."""
    from rich.table import Table

    threads = sorted({p.threads for p in results})
    batches = sorted({p.batch for p in results})
    at = {(p.threads, p.batch): p for p in results}
    table = Table(title=title)
    table.add_column("batch", justify="right")
    for t in threads:
        table.add_column(f"t={t} ms", justify="right")
    for b in batches:
        cells = []
        for t in threads:
            p = at.get((t, b))
            cells.append("-" if p is None else f"{p.latency_ms:.2f} ±{p.std_ms:.2f}")
        table.add_row(str(b), *cells)
    return table


def prepare_out(path: Path) -> Path:
    """Create ``path``'s folder and check it can be written, before a long measurement."""
    path = Path(path)
    if path.is_dir():
        raise ProfilerConfigError("out", f"{path} is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(path.name + ".tmp")
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ProfilerConfigError("out", f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def print_summary(
    results: Sequence[PointResult],
    config: ProfilerConfig,
    path: Path,
    wall_s: float,
    load_before: float | None = None,
) -> None:
    """The per-point table, where the CSV went and how busy the machine was, on stdout."""
    from rich.console import Console

    console = Console()
    threads = config.threads or ()
    console.print(summary_table(results, f"{config.model}: mean ms per batch (± std)"))
    console.print(
        f"wrote {path}: {len(results)} points (threads {int_list(threads)} x batches "
        f"{int_list(config.batches)}), {config.warmup} warm-up + {config.reps} timed reps each, "
        f"cores {int_list(config.cores or ())}, wall {wall_s:.1f} s",
        highlight=False,
        markup=False,
    )
    load_after = os.getloadavg()[0]
    ncores = len(usable_cores())
    loads = (
        f"{load_before:.2f} -> {load_after:.2f}" if load_before is not None else f"{load_after:.2f}"
    )
    console.print(f"load average (1 min): {loads} on {ncores} usable core(s)", highlight=False)
    if max(load_after, load_before or 0.0) > ncores:
        console.print(
            "[yellow]warning: the machine was busier than its cores; other processes competed "
            "with the pinned workers (multi-thread points suffer most), so re-run when idle "
            "for a clean profile[/yellow]"
        )
    console.print(
        f"plan with it: tsadapt packrat plan --profile {path} --cores {max(threads)} "
        f"--batch {max(config.batches)}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
