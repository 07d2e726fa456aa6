"""Packrat profile tables: latency of one model instance per (threads, batch) point.

The CSV format is ``threads,batch,latency_ms`` with a header row. Extra columns (for
example ``min``, ``max``, ``std``) are allowed and ignored by the planner.
"""

from __future__ import annotations

import csv
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

REQUIRED_COLUMNS: tuple[str, ...] = ("threads", "batch", "latency_ms")

Point = tuple[int, int]


@dataclass(frozen=True)
class ProfileTable:
    """Immutable map (threads, batch) -> latency_ms of one instance.

    ``points`` holds ``(threads, batch, latency_ms)`` sorted by (threads, batch); build it
    with :meth:`from_mapping` or :func:`load_profile`.
    """

    points: tuple[tuple[int, int, float], ...]
    source: str | None = field(default=None, compare=False)
    _index: Mapping[Point, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[Point, float] = {}
        for threads, batch, latency in self.points:
            _check_point(threads, batch, latency, where=f"point ({threads}, {batch})")
            if (int(threads), int(batch)) in index:
                raise ValueError(f"duplicate profile point threads={threads} batch={batch}")
            index[(int(threads), int(batch))] = float(latency)
        if not index:
            raise ValueError("profile table is empty")
        ordered = tuple((t, b, index[(t, b)]) for t, b in sorted(index))
        object.__setattr__(self, "points", ordered)
        object.__setattr__(self, "_index", MappingProxyType(index))

    @classmethod
    def from_mapping(
        cls, latencies: Mapping[Point, float], source: str | None = None
    ) -> ProfileTable:
        """Build a table from ``{(threads, batch): latency_ms}``."""
        return cls(tuple((t, b, lat) for (t, b), lat in latencies.items()), source=source)

    @property
    def latencies(self) -> Mapping[Point, float]:
        """Read-only mapping (threads, batch) -> latency_ms."""
        return self._index

    @property
    def threads(self) -> tuple[int, ...]:
        """Sorted distinct profiled thread counts."""
        return tuple(sorted({t for t, _, _ in self.points}))

    @property
    def batches(self) -> tuple[int, ...]:
        """Sorted distinct profiled batch sizes."""
        return tuple(sorted({b for _, b, _ in self.points}))

    def latency(self, threads: int, batch: int) -> float:
        """Latency of one instance at (threads, batch); KeyError if not profiled."""
        try:
            return self._index[(threads, batch)]
        except KeyError:
            raise KeyError(f"(threads={threads}, batch={batch}) is not profiled") from None

    def __contains__(self, point: object) -> bool:
        return point in self._index

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self) -> Iterator[tuple[int, int, float]]:
        return iter(self.points)


def _check_point(threads: object, batch: object, latency: object, where: str) -> None:
    for name, value in (("threads", threads), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{where}: field '{name}' must be a positive integer, got {value!r}")
    if (
        isinstance(latency, bool)
        or not isinstance(latency, numbers.Real)
        or not math.isfinite(latency)
        or latency <= 0
    ):
        raise ValueError(
            f"{where}: field 'latency_ms' must be a finite number > 0, got {latency!r}"
        )


def _parse_int(text: str, name: str, where: str) -> int:
    try:
        value = int(text.strip())
    except (ValueError, AttributeError):
        raise ValueError(
            f"{where}: field '{name}' must be a positive integer, got {text!r}"
        ) from None
    if value < 1:
        raise ValueError(f"{where}: field '{name}' must be a positive integer, got {text!r}")
    return value


def _parse_latency(text: str, where: str) -> float:
    try:
        value = float(text.strip())
    except (ValueError, AttributeError):
        raise ValueError(
            f"{where}: field 'latency_ms' must be a finite number > 0, got {text!r}"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: field 'latency_ms' must be a finite number > 0, got {text!r}")
    return value


def parse_profile(lines: Iterable[str], source: str = "<profile>") -> ProfileTable:
    """Parse CSV text lines (header first) into a :class:`ProfileTable`.

    Raises ValueError naming the source, line number and field of the first bad row.
    """
    reader = csv.DictReader(lines)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {', '.join(missing)} "
            f"(header must contain {','.join(REQUIRED_COLUMNS)}; got {','.join(header) or 'none'})"
        )
    reader.fieldnames = header
    seen: dict[Point, int] = {}
    rows: list[tuple[int, int, float]] = []
    for record in reader:
        where = f"{source}: line {reader.line_num}"
        if None in record or any(record.get(c) is None for c in REQUIRED_COLUMNS):
            raise ValueError(f"{where}: expected {len(header)} fields")
        threads = _parse_int(record["threads"], "threads", where)
        batch = _parse_int(record["batch"], "batch", where)
        latency = _parse_latency(record["latency_ms"], where)
        if (threads, batch) in seen:
            raise ValueError(
                f"{where}: duplicate point threads={threads} batch={batch} "
                f"(first on line {seen[(threads, batch)]})"
            )
        seen[(threads, batch)] = reader.line_num
        rows.append((threads, batch, latency))
    if not rows:
        raise ValueError(f"{source}: no data rows")
    return ProfileTable(tuple(rows), source=source)


def load_profile(path: str | Path) -> ProfileTable:
    """Load a ``threads,batch,latency_ms`` CSV file."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        return parse_profile(fh, source=str(path))


def save_profile(table: ProfileTable, path: str | Path) -> None:
    """Write ``table`` as ``threads,batch,latency_ms`` (floats round-trip exactly)."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(REQUIRED_COLUMNS)
        for threads, batch, latency in table.points:
            writer.writerow((threads, batch, repr(latency)))


BUNDLED_DIR: Path = Path(__file__).resolve().parent / "profiles"
"""Packrat's published profiles (16-core Xeon Gold 6142, TorchScript), ``{model}.profile.csv``."""


def bundled_profiles() -> tuple[str, ...]:
    """Names of the bundled published profiles (e.g. ``bert``, ``resnet``)."""
    return tuple(
        sorted(p.name.removesuffix(".profile.csv") for p in BUNDLED_DIR.glob("*.profile.csv"))
    )


def resolve_profile(spec: str | Path) -> Path:
    """A CSV path, or the name of a bundled profile (``bert`` -> bundled bert.profile.csv)."""
    path = Path(spec)
    if path.exists() or path.suffix:
        return path
    bundled = BUNDLED_DIR / f"{spec}.profile.csv"
    return bundled if bundled.exists() else path
