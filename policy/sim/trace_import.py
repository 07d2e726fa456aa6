"""Arrivals from a user's own traffic, as the simulator's ``trace`` workload files.

Two sources:

* TorchServe's access log (``logs/access_log.log``): every request line for
  ``/predictions/{model}[/{version}]``. A line reads
  ``2026-12-07T04:23:22,812 - /127.0.0.1:46974 "POST /predictions/image HTTP/1.1" 200 4``:
  the time the answer was logged (local time, milliseconds), the client, the request line,
  the status and the milliseconds since the request arrived, so the arrival is the logged
  time minus that duration. Every status counts: a request answered 503 still arrived.
  Other request lines (management, ``/ping``) are skipped.
* A CSV of timestamps: one column (default: the first) of numeric seconds or of date-times
  such as the Azure LLM inference traces' ``2023-11-16 18:15:46.6805900``.

The arrivals are then sliced (``start_s``/``duration_s``, in the source's seconds from its
first arrival), shifted to start at 0, stretched in time (``time_scale``: 0.1 plays ten
source seconds in one) and thinned or multiplied (``rate_scale``), and written as a
one-column ``timestamp`` CSV that :class:`~tsadapt.policy.sim.workload_files.Trace` (the
simulator) and ``loadtests/openloop.py`` (the Locust replay) read. ``#`` lines at the top
record where the file came from. A malformed line is a :class:`TraceImportError` naming the
file and line; files are written to a temporary name and renamed, so a failed import writes
nothing.
"""

from __future__ import annotations

import csv
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

__all__ = [
    "TraceImportError",
    "TraceTransform",
    "read_access_log",
    "read_timestamp_csv",
    "transform",
    "write_trace_files",
]

#: ``<time> - <client> "<method> <uri> <protocol>" <status> <ms>``, as TorchServe logs it.
ACCESS_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[,.]\d+)?) - (?P<client>\S*) "
    r'"(?P<method>[A-Z]+) (?P<uri>\S+) (?P<proto>[^"]*)" (?P<status>\d{3}) (?P<ms>\d+)\s*$'
)
PREDICTIONS = re.compile(r"^/predictions/(?P<model>[^/?#]+)(?:/[^/?#]+)?/?(?:[?#].*)?$")
TIMESTAMP_HEADER = "timestamp"
#: Decimals written: microseconds.
DECIMALS = 6
#: Permissions of a written file (an ordinary file's, not a temporary file's 0600).
FILE_MODE = 0o644


class TraceImportError(ValueError):
    """A source line that cannot be read, or options that do not fit the source."""


@dataclass(frozen=True)
class TraceTransform:
    """What to take from the source and how to replay it (see the module docstring)."""

    start_s: float = 0.0
    duration_s: float | None = None
    time_scale: float = 1.0
    rate_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise TraceImportError(f"--start must be >= 0 seconds, got {self.start_s}")
        if self.duration_s is not None and not (
            math.isfinite(self.duration_s) and self.duration_s > 0
        ):
            raise TraceImportError(f"--duration must be > 0 seconds, got {self.duration_s}")
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise TraceImportError(f"--time-scale must be > 0, got {self.time_scale}")
        if not (math.isfinite(self.rate_scale) and self.rate_scale > 0):
            raise TraceImportError(f"--rate-scale must be > 0, got {self.rate_scale}")


def _log_time(text: str) -> float:
    """Seconds since the epoch of a log4j ISO8601 time read as UTC (only differences matter)."""
    stamp = datetime.fromisoformat(text.replace(",", "."))
    return stamp.timestamp() if stamp.tzinfo else (stamp - datetime(1970, 1, 1)).total_seconds()


def read_access_log(path: Path, models: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Arrival times (epoch seconds, sorted) per model of a TorchServe access log.

    ``models`` keeps only those (each must appear); default: every model in the log.
    """
    path = Path(path)
    out: dict[str, list[float]] = {}
    try:
        fh = path.open(encoding="utf-8", errors="strict")
    except OSError as exc:
        raise TraceImportError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with fh:
        try:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                m = ACCESS_LINE.match(line.rstrip("\r\n"))
                if m is None:
                    raise TraceImportError(
                        f"{path}:{n}: not a TorchServe access log line "
                        f'(expected \'<time> - <client> "<method> <uri> <protocol>" <status> '
                        f"<ms>'): {line.strip()[:120]!r}"
                    )
                p = PREDICTIONS.match(m["uri"])
                if p is None:
                    continue
                try:
                    done = _log_time(m["time"])
                except ValueError:
                    raise TraceImportError(f"{path}:{n}: bad time {m['time']!r}") from None
                out.setdefault(p["model"], []).append(done - int(m["ms"]) / 1000.0)
        except UnicodeDecodeError as exc:
            raise TraceImportError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if models:
        missing = [x for x in models if x not in out]
        if missing:
            raise TraceImportError(
                f"{path}: no /predictions requests for model(s) {missing}; "
                f"the log has {sorted(out) or 'none'}"
            )
        out = {x: out[x] for x in models}
    if not out:
        raise TraceImportError(f"{path}: no /predictions requests in the log")
    return {k: np.sort(np.asarray(v, dtype=np.float64)) for k, v in out.items()}


def _stamp(text: str) -> float:
    """Seconds of a numeric value or an ISO date-time (any number of fractional digits)."""
    try:
        return float(text)
    except ValueError:
        pass
    t = text.strip()
    m = re.match(r"^(.*[T ]\d\d:\d\d:\d\d)[.,](\d+)(.*)$", t)
    frac = 0.0
    if m:  # fromisoformat takes 1-6 digits in some Pythons; keep every digit ourselves
        t, frac = m[1] + m[3], float("0." + m[2])
    stamp = datetime.fromisoformat(t)
    base = stamp.timestamp() if stamp.tzinfo else (stamp - datetime(1970, 1, 1)).total_seconds()
    return base + frac


def read_timestamp_csv(path: Path, column: str | None = None) -> np.ndarray:
    """The timestamps (seconds, sorted) of one CSV column: ``column`` by header name
    (case-insensitive), default the first column; a header row is recognised by a first
    cell that is not a time."""
    path = Path(path)
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise TraceImportError(f"{path}: cannot read: {exc.strerror or exc}") from None
    times: list[float] = []
    with fh:
        reader = csv.reader(fh)
        index: int | None = None
        try:
            for row in reader:
                n = reader.line_num
                if not row or not any(c.strip() for c in row) or row[0].startswith("#"):
                    continue
                if index is None:
                    index = _header_index(path, n, row, column)
                    if index >= 0:
                        continue
                    index = 0
                if index >= len(row):
                    raise TraceImportError(
                        f"{path}:{n}: {len(row)} column(s), the timestamp is column {index + 1}"
                    )
                try:
                    value = _stamp(row[index])
                except ValueError:
                    raise TraceImportError(
                        f"{path}:{n}: timestamp {row[index]!r} is neither seconds nor a "
                        "date-time (YYYY-MM-DD HH:MM:SS[.fraction])"
                    ) from None
                if not math.isfinite(value):
                    raise TraceImportError(f"{path}:{n}: timestamp {row[index]!r} is not finite")
                times.append(value)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TraceImportError(f"{path}:{reader.line_num}: {exc}") from None
    if not times:
        raise TraceImportError(f"{path}: no timestamps")
    return np.sort(np.asarray(times, dtype=np.float64))


def _header_index(path: Path, line: int, row: list[str], column: str | None) -> int:
    """The timestamp column of a header row, or -1 when the first row is data."""
    try:
        _stamp(row[0])
        is_header = False
    except ValueError:
        is_header = True
    if not is_header:
        if column is not None:
            raise TraceImportError(f"{path}:{line}: --column {column!r} needs a header row")
        return -1
    names = [c.strip().lower() for c in row]
    if column is None:
        return 0
    if column.lower() not in names:
        raise TraceImportError(f"{path}:{line}: no column {column!r} in the header {row!r}")
    return names.index(column.lower())


def transform(times: np.ndarray, t: TraceTransform, origin: float | None = None) -> np.ndarray:
    """Slice, shift to 0, stretch and thin/multiply sorted arrival ``times`` (see the module
    docstring). ``origin`` is the source's time 0 (default: its first arrival)."""
    x = np.sort(np.asarray(times, dtype=np.float64))
    if x.size == 0:
        return x
    zero = float(x[0] if origin is None else origin) + t.start_s
    end = math.inf if t.duration_s is None else zero + t.duration_s
    x = x[(x >= zero) & (x < end)] - zero
    rng = np.random.default_rng(t.seed)
    whole, frac = divmod(t.rate_scale, 1.0)
    copies = np.full(x.size, int(whole)) + (rng.random(x.size) < frac)
    gaps = np.diff(np.append(x, x[-1] + 1.0 if x.size else 0.0))
    parts = [x[copies >= 1]]
    for k in range(2, int(copies.max(initial=0)) + 1):
        keep = copies >= k  # an extra copy lands uniformly before the next arrival
        parts.append(x[keep] + rng.random(int(keep.sum())) * gaps[keep])
    out = np.sort(np.concatenate(parts)) * t.time_scale
    return out if t.duration_s is None else out[out < t.duration_s * t.time_scale]


def trace_text(times: np.ndarray, header: Iterable[str] = ()) -> str:
    """The CSV text: ``# `` header lines, ``timestamp``, one arrival (s) per line."""
    lines = [f"# {h}".rstrip() for h in header]
    lines.append(TIMESTAMP_HEADER)
    lines += [f"{v:.{DECIMALS}f}" for v in times]
    return "\n".join(lines) + "\n"


def write_trace_files(files: Mapping[Path, str]) -> list[Path]:
    """Write every ``path -> text`` or none: each to a temporary file in its folder, then all
    renamed into place (a failure before the renames leaves no file behind)."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, FILE_MODE)  # mkstemp's 0600 would hide the file from other users
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    return [p for _, p in staged]


def summary(times: np.ndarray) -> str:
    """``N arrivals over S s, mean R/s, peak P/s (1 s bins)``."""
    if times.size == 0:
        return "0 arrivals"
    span = float(times[-1]) if times.size > 1 else 0.0
    peak = int(np.bincount(times.astype(np.int64)).max())
    mean = times.size / span if span > 0 else float("nan")
    return f"{times.size} arrivals over {span:.1f} s, mean {mean:.1f}/s, peak {peak}/s (1 s bins)"
