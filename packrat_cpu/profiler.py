"""Packrat-style profile of one model instance: latency per (threads, batch) point.

``tsadapt packrat profile`` measures what the planner needs (Packrat, ICML'25, Sec. 4):
the latency of ONE instance of a demo model for every thread count ``t`` in 1..T and every
batch size ``b``. For each ``t`` one fresh worker process is started that

* pins itself to ``cores[:t]`` (``os.sched_setaffinity``) before it loads anything,
* calls ``torch.set_num_threads(t)`` (and runs with ``OMP_NUM_THREADS=t``),
* loads the model as a TorchServe worker does (:func:`tsadapt.handlers.local.load_local`),
  runs one forward so the OpenMP pool exists, then pins every thread in ``/proc/self/task``,
* for each ``b``: builds ``b`` valid raw requests (JSON bytes, as the frontend sends them),
  runs ``warmup`` untimed batches, then ``reps`` timed ones through the whole handler
  (decode, validate, collate, forward, answers) and reports mean/min/max/std in ms.

The worker writes one JSON line per point on a private copy of its stdout (anything the
libraries print goes to stderr); the parent advances a progress bar per point and writes
``threads,batch,latency_ms,min_ms,max_ms,std_ms`` (``latency_ms`` is the mean), which
:func:`tsadapt.packrat_cpu.profile_table.load_profile` reads and ``packrat plan`` uses.

Nothing here imports torch at module level: the worker must pin itself first.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tsadapt.handlers.placement import pin_process, usable_cores

DEFAULT_BATCHES: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
DEFAULT_WARMUP = 10  # Packrat's warm-up iterations
DEFAULT_REPS = 100  # Packrat's timed iterations
DEFAULT_OUT_DIR = Path("runs/packrat")
CSV_COLUMNS: tuple[str, ...] = ("threads", "batch", "latency_ms", "min_ms", "max_ms", "std_ms")
EXIT_FAILED = 1  # a worker failed (the CLI's exit code)


class ProfilerError(RuntimeError):
    """A worker failed or reported something unexpected."""


class ProfilerConfigError(ValueError):
    """Invalid profiler setting: ``str()`` is ``"<field>: <detail>"``.

    ``field`` names the :class:`ProfilerConfig` field (``max_threads``, ``batches``, ...);
    the CLI prints ``detail`` after the matching flag (``--max-threads``, ``--batches``).
    """

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def default_out(model: str) -> Path:
    return DEFAULT_OUT_DIR / f"{model}.profile.csv"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: object, name: str) -> int:
    if not _is_int(value) or value < 1:
        raise ProfilerConfigError(name, f"must be a positive integer, got {value!r}")
    return int(value)


def positive_ints(values: object, name: str) -> tuple[int, ...]:
    """Sorted distinct positive integers of ``values``; ProfilerConfigError(name) else."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ProfilerConfigError(name, f"must be a list of positive integers, got {values!r}")
    items = tuple(values)
    if not items:
        raise ProfilerConfigError(name, "must not be empty")
    for v in items:
        if not _is_int(v) or v < 1:
            raise ProfilerConfigError(name, f"must hold positive integers only, got {v!r}")
    return tuple(sorted(set(items)))


def parse_ints(text: str, field: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> ``(1, 2, 4)``; ProfilerConfigError(field) for anything else."""
    items = [item.strip() for item in text.split(",")] if text.strip() else []
    if not items:
        raise ProfilerConfigError(field, "must not be empty (a comma-separated list like 1,2,4)")
    values = []
    for item in items:
        try:
            values.append(int(item))
        except ValueError:
            raise ProfilerConfigError(
                field, f"{item!r} is not an integer (expected a comma-separated list like 1,2,4)"
            ) from None
    return tuple(values)


def parse_int(text: str, field: str) -> int:
    """``"8"`` -> ``8``; ProfilerConfigError(field) if it is not an integer."""
    try:
        return int(text.strip())
    except ValueError:
        raise ProfilerConfigError(field, f"{text!r} is not an integer") from None


@dataclass(frozen=True)
class ProfilerConfig:
    """What to profile. ``threads`` defaults to 1..max_threads, ``cores`` to the first
    ``max_threads`` usable cores (sorted), ``out`` to ``runs/packrat/<model>.profile.csv``.
    ``threads`` and ``batches`` are stored sorted and without repeats.

    Raises :class:`ProfilerConfigError` (a ValueError) naming the bad field.
    """

    model: str
    max_threads: int
    batches: tuple[int, ...] = DEFAULT_BATCHES
    threads: tuple[int, ...] | None = None
    warmup: int = DEFAULT_WARMUP
    reps: int = DEFAULT_REPS
    cores: tuple[int, ...] | None = None
    out: Path | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        from tsadapt.handlers.catalog import DEMO_MODELS

        if self.model not in DEMO_MODELS:
            raise ProfilerConfigError(
                "model", f"unknown model {self.model!r}; known: {', '.join(DEMO_MODELS)}"
            )
        usable = usable_cores()
        max_threads = _positive_int(self.max_threads, "max_threads")
        if max_threads > len(usable):
            raise ProfilerConfigError(
                "max_threads",
                f"{max_threads} exceeds the {len(usable)} core(s) this process may use "
                f"({_fmt(usable)}); Packrat profiles t = 1..T on a T-core machine",
            )
        threads = (
            tuple(range(1, max_threads + 1))
            if self.threads is None
            else positive_ints(self.threads, "threads")
        )
        if threads[-1] > max_threads:
            raise ProfilerConfigError("threads", f"{threads[-1]} exceeds max_threads={max_threads}")
        batches = positive_ints(self.batches, "batches")
        if not _is_int(self.warmup) or self.warmup < 0:
            raise ProfilerConfigError("warmup", f"must be an integer >= 0, got {self.warmup!r}")
        _positive_int(self.reps, "reps")
        if self.cores is None:
            cores = usable[:max_threads]
        else:
            if isinstance(self.cores, (str, bytes)) or not isinstance(self.cores, Iterable):
                raise ProfilerConfigError("cores", f"must be a list of CPU ids, got {self.cores!r}")
            cores = tuple(self.cores)
            bad = [c for c in cores if not _is_int(c)]
            if bad:
                raise ProfilerConfigError("cores", f"must hold CPU ids, got {bad[0]!r}")
            if len(set(cores)) != len(cores):
                raise ProfilerConfigError("cores", f"{_fmt(cores)} repeats a CPU id")
            outside = [c for c in cores if c not in usable]
            if outside:
                raise ProfilerConfigError(
                    "cores",
                    f"CPU(s) {_fmt(outside)} not usable by this process (usable: {_fmt(usable)})",
                )
            if len(cores) < max_threads:
                raise ProfilerConfigError(
                    "cores",
                    f"{len(cores)} CPU id(s) given; max_threads={max_threads} needs that many",
                )
        object.__setattr__(self, "max_threads", max_threads)
        object.__setattr__(self, "threads", threads)
        object.__setattr__(self, "batches", batches)
        object.__setattr__(self, "cores", tuple(cores))
        object.__setattr__(self, "out", Path(self.out) if self.out else default_out(self.model))

    @property
    def points(self) -> tuple[tuple[int, int], ...]:
        """Every (threads, batch) point, in measurement order."""
        return tuple((t, b) for t in self.threads or () for b in self.batches)


def _fmt(values: Iterable[int]) -> str:
    return ",".join(map(str, values))


@dataclass(frozen=True)
class PointResult:
    """One measured point; ``latency_ms`` is the mean of the timed repetitions."""

    threads: int
    batch: int
    latency_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    reps: int

    @classmethod
    def from_times(cls, threads: int, batch: int, times_ms: Sequence[float]) -> PointResult:
        return cls(
            threads,
            batch,
            statistics.fmean(times_ms),
            min(times_ms),
            max(times_ms),
            statistics.stdev(times_ms) if len(times_ms) > 1 else 0.0,
            len(times_ms),
        )

    def row(self) -> tuple[str, ...]:
        return (
            str(self.threads),
            str(self.batch),
            *(f"{v:.4f}" for v in (self.latency_ms, self.min_ms, self.max_ms, self.std_ms)),
        )


# ----------------------------------------------------------------------------- worker


def _worker(
    model_name: str,
    threads: int,
    cores: Sequence[int],
    batches: Sequence[int],
    warmup: int,
    reps: int,
    seed: int,
    emit: Callable[[dict[str, Any]], None],
) -> None:
    os.sched_setaffinity(0, cores)  # before torch: every thread created later inherits it

    import numpy as np
    import torch

    from tsadapt.handlers.catalog import demo_model
    from tsadapt.handlers.local import load_local

    torch.set_num_threads(threads)
    model = demo_model(model_name)
    with tempfile.TemporaryDirectory(prefix=f"packrat-profile-{model_name}-") as tmp:
        local = load_local(model, Path(tmp) / model_name)
        torch.set_num_threads(threads)  # in case the handler's initialize changed it
        first = np.random.default_rng([seed, 0])
        local.run([model.worker_request(first)])  # OpenMP pool exists
        pinned = pin_process(cores)
        emit(
            {
                "ready": True,
                "threads": threads,
                "torch_threads": torch.get_num_threads(),
                "cores": list(cores),
                "pinned_threads": pinned,
                "pid": os.getpid(),
            }
        )
        for b in batches:
            rng = np.random.default_rng([seed, b])  # the same requests for every t
            requests = [model.worker_request(rng) for _ in range(b)]
            for _ in range(warmup):
                local.run(requests)
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                out = local.run(requests)
                times.append((time.perf_counter() - t0) * 1000.0)
            bad = [i for i in range(b) if local.status(i) != 200]
            if len(out) != b or bad:
                raise ProfilerError(
                    f"b={b}: request(s) {bad} failed: {out[bad[0]] if bad else out}"
                )
            emit({"point": asdict(PointResult.from_times(threads, b, times))})


def worker_main(argv: Sequence[str] | None = None) -> int:
    """``python -m tsadapt.packrat_cpu.profiler --worker ...``: measure one thread count."""
    ap = argparse.ArgumentParser(prog="tsadapt.packrat_cpu.profiler")
    ap.add_argument("--worker", action="store_true", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--cores", required=True)
    ap.add_argument("--batches", required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--reps", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    # Results go to a private copy of stdout; fd 1 then points at stderr, so nothing a
    # library prints can corrupt the JSON lines.
    sys.stdout.flush()
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)

    def emit(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    _worker(
        args.model,
        args.threads,
        [int(c) for c in args.cores.split(",")],
        [int(b) for b in args.batches.split(",")],
        args.warmup,
        args.reps,
        args.seed,
        emit,
    )
    channel.close()
    return 0


# ----------------------------------------------------------------------------- parent


def _worker_command(config: ProfilerConfig, threads: int) -> list[str]:
    assert config.cores is not None
    return [
        sys.executable,
        "-m",
        "tsadapt.packrat_cpu.profiler",
        "--worker",
        "--model",
        config.model,
        "--threads",
        str(threads),
        "--cores",
        _fmt(config.cores[:threads]),
        "--batches",
        _fmt(config.batches),
        "--warmup",
        str(config.warmup),
        "--reps",
        str(config.reps),
        "--seed",
        str(config.seed),
    ]


def _worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # A live Packrat placement (TorchServe workers re-pin from it) must not override ours.
    env.pop("TSADAPT_PLACEMENT_DIR", None)
    return env


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def measure_threads(
    config: ProfilerConfig,
    threads: int,
    on_point: Callable[[PointResult], None] | None = None,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> list[PointResult]:
    """Run one worker for ``threads`` and return its points (one per batch size)."""
    results: list[PointResult] = []
    with tempfile.TemporaryDirectory(prefix="packrat-profile-") as tmp:
        errlog = Path(tmp) / "worker.stderr"
        with errlog.open("w", encoding="utf-8") as err:
            proc = subprocess.Popen(
                _worker_command(config, threads),
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=_worker_env(threads),
                text=True,
                encoding="utf-8",
            )
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    try:
                        message = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if "point" in message:
                        point = PointResult(**message["point"])
                        results.append(point)
                        if on_point is not None:
                            on_point(point)
                    elif message.get("ready") and on_ready is not None:
                        on_ready(message)
                rc = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if rc != 0:
            raise ProfilerError(
                f"worker for threads={threads} exited with code {rc}:\n{_tail(errlog)}"
            )
    got = [p.batch for p in results]
    if got != list(config.batches):
        raise ProfilerError(f"worker for threads={threads} reported batches {got}")
    return results


def profile(
    config: ProfilerConfig,
    on_point: Callable[[PointResult], None] | None = None,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> list[PointResult]:
    """Measure every point of ``config`` (one worker per thread count), sorted by (t, b)."""
    results: list[PointResult] = []
    for t in config.threads or ():
        results.extend(measure_threads(config, t, on_point, on_ready))
    return sorted(results, key=lambda p: (p.threads, p.batch))


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


def _cost(batch: int) -> int:
    """Rough relative cost of one point, for the time-left estimate (latency ~ a*b + c)."""
    return batch + 1


def run_with_progress(config: ProfilerConfig, console: Any = None) -> list[PointResult]:
    """:func:`profile` with a rich progress bar (points done, elapsed, time left)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = console or Console(stderr=True)
    per_point = config.warmup + config.reps
    total_points = len(config.points)
    # Work units: every worker start (load ~ a few batches) plus each point's batches.
    load_units = 4 * per_point * _cost(1)
    total = sum(
        load_units + per_point * sum(map(_cost, config.batches)) for _ in config.threads or ()
    )
    done = {"points": 0}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[points]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(
            f"profile {config.model}", total=total, points=f"0/{total_points} points"
        )

        def on_ready(message: dict[str, Any]) -> None:
            progress.advance(task, load_units)
            progress.update(task, description=f"profile {config.model} t={message['threads']}")

        def on_point(point: PointResult) -> None:
            done["points"] += 1
            progress.update(
                task,
                advance=per_point * _cost(point.batch),
                points=f"{done['points']}/{total_points} points",
            )

        results = profile(config, on_point=on_point, on_ready=on_ready)
    return results


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
        f"wrote {path}: {len(results)} points (threads {_fmt(threads)} x batches "
        f"{_fmt(config.batches)}), {config.warmup} warm-up + {config.reps} timed reps each, "
        f"cores {_fmt(config.cores or ())}, wall {wall_s:.1f} s",
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


if __name__ == "__main__":
    raise SystemExit(worker_main())
