"""What a Packrat profile measures and how its settings are checked: :class:`ProfilerConfig`
(validated, every error naming the bad field), the command line's integer parsers, and
:class:`PointResult`, one measured (threads, batch) point."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tsadapt.handlers.placement import usable_cores

DEFAULT_BATCHES: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
DEFAULT_WARMUP = 10  # Packrat's warm-up iterations
DEFAULT_REPS = 100  # Packrat's timed iterations
DEFAULT_OUT_DIR = Path("runs/packrat")


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
                f"({int_list(usable)}); Packrat profiles t = 1..T on a T-core machine",
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
                raise ProfilerConfigError("cores", f"{int_list(cores)} repeats a CPU id")
            outside = [c for c in cores if c not in usable]
            if outside:
                raise ProfilerConfigError(
                    "cores",
                    f"CPU(s) {int_list(outside)} not usable by this process "
                    f"(usable: {int_list(usable)})",
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


def int_list(values: Iterable[int]) -> str:
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
