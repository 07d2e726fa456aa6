"""Batch-latency profiles, in one place: the type, the timing loop, the fit, the file format
and the Nexus batch cap.

- :class:`LatencyModel`: a model's batch execution time, ``alpha_ms * b + beta_ms`` or a
  measured ``(batch, ms)`` table (what the simulator, the fleet and the controller read).
- :func:`timed_rounds`: the one timing loop every producer runs (``tsadapt models profile``,
  ``tsadapt gpu-check``'s part 1, ``tsadapt packrat profile``, ``tsadapt profile`` on a
  served model): ``warmup`` untimed rounds, then ``repeats`` timed ones.
- :func:`fit_linear`: seed 000's Eq. 1, ``latency(b) = alpha * b + beta``.
- :class:`ModelProfile` and :func:`write_profiles` / :func:`read_profiles`: one JSON format,
  ``{"format": "tsadapt-profiles", "version": 1, "profiles": [...]}``; the reader also takes
  the files written before the version field (a bare list of profiles, or ``tsadapt
  profile``'s document of raw points).
- :func:`slo_feasible_batch`: the largest batch whose profiled time fits the SLO (Nexus).

It lives in the base room because its producers do: ``serve`` (below ``policy``) profiles a
served model.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
    "SLO_BATCH_SHARE",
    "LatencyModel",
    "LinearFit",
    "ModelProfile",
    "ProfileFormatError",
    "fit_linear",
    "profile_from_times",
    "read_profiles",
    "slo_feasible_batch",
    "timed_rounds",
    "write_profiles",
]

#: The ``format`` and ``version`` fields of a profile file.
PROFILE_FORMAT, PROFILE_VERSION = "tsadapt-profiles", 1
#: Share of the SLO one batch's execution may take when it bounds max_batch (Nexus's rule),
#: of the SLO left after the latency outside the worker.
SLO_BATCH_SHARE = 0.5

T = TypeVar("T")


@dataclass(frozen=True)
class LatencyModel:
    """Batch execution time in ms: ``alpha_ms * b + beta_ms``, or a measured table.

    ``table`` holds ``(batch, ms)`` points; between points the time is interpolated
    linearly, beyond the last point extrapolated along the last segment, below the
    first point the first point's time is used.
    """

    alpha_ms: float = 0.0
    beta_ms: float = 0.0
    table: tuple[tuple[int, float], ...] | None = None

    def __post_init__(self) -> None:
        if self.table is None:
            if self.alpha_ms < 0 or self.beta_ms < 0 or self.alpha_ms + self.beta_ms <= 0:
                raise ValueError(
                    f"latency: alpha_ms and beta_ms must be >= 0 and not both 0, got "
                    f"alpha_ms={self.alpha_ms}, beta_ms={self.beta_ms}"
                )
            return
        pts = tuple(sorted((int(b), float(ms)) for b, ms in self.table))
        if not pts:
            raise ValueError("latency: table must not be empty")
        bs = [b for b, _ in pts]
        if bs[0] < 1 or len(set(bs)) != len(bs):
            raise ValueError("latency: table batch sizes must be >= 1 and unique")
        if any(ms <= 0 for _, ms in pts):
            raise ValueError("latency: table times must be > 0")
        object.__setattr__(self, "table", pts)

    def batch_ms(self, b: int | np.ndarray) -> float | np.ndarray:
        """Execution time (ms) of a batch of ``b`` requests without contention."""
        if self.table is None:
            return self.alpha_ms * np.asarray(b, dtype=np.float64) + self.beta_ms
        bs = np.array([p[0] for p in self.table], dtype=np.float64)
        ms = np.array([p[1] for p in self.table], dtype=np.float64)
        x = np.asarray(b, dtype=np.float64)
        y = np.interp(x, bs, ms)
        if len(bs) >= 2:
            slope = (ms[-1] - ms[-2]) / (bs[-1] - bs[-2])
            y = np.where(x > bs[-1], ms[-1] + slope * (x - bs[-1]), y)
        return np.maximum(y, 1e-6)

    @classmethod
    def from_csv(cls, path: str | Path, threads: int | None = None) -> LatencyModel:
        """Read ``batch,latency_ms`` rows (optionally a ``threads`` column, filtered)."""
        p = Path(path)
        with p.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or not {"batch", "latency_ms"} <= set(rows[0]):
            raise ValueError(f"profile {p}: need a header with 'batch' and 'latency_ms'")
        if "threads" in rows[0]:
            want = threads if threads is not None else min(int(r["threads"]) for r in rows)
            rows = [r for r in rows if int(r["threads"]) == want]
            if not rows:
                raise ValueError(f"profile {p}: no rows with threads={want}")
        agg: dict[int, list[float]] = {}
        for r in rows:
            agg.setdefault(int(r["batch"]), []).append(float(r["latency_ms"]))
        return cls(table=tuple((b, float(np.mean(v))) for b, v in agg.items()))


def timed_rounds(
    run: Callable[[], T],
    warmup: int,
    repeats: int,
    after_each: Callable[[], None] | None = None,
) -> list[tuple[float, T]]:
    """The timing loop: ``warmup`` untimed calls of ``run``, then ``repeats`` timed ones.

    Returns ``(wall ms, result)`` of each timed call; ``after_each`` runs after every call
    (a progress bar). A producer that measures elsewhere (the server's handler counters)
    keeps its own figure in the result.
    """
    out: list[tuple[float, T]] = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        result = run()
        ms = (time.perf_counter() - t0) * 1000.0
        if i >= warmup:
            out.append((ms, result))
        if after_each is not None:
            after_each()
    return out


@dataclass(frozen=True)
class LinearFit:
    """latency_ms(b) = alpha_ms * b + beta_ms, with the coefficient of determination."""

    alpha_ms: float
    beta_ms: float
    r2: float

    def predict(self, batch: np.ndarray | float) -> np.ndarray | float:
        return self.alpha_ms * np.asarray(batch) + self.beta_ms


def fit_linear(batch_sizes: np.ndarray, latencies_ms: np.ndarray) -> LinearFit:
    """Least-squares fit over the raw points; R^2 = 1 - SS_res / SS_tot."""
    b = np.asarray(batch_sizes, dtype=float)
    y = np.asarray(latencies_ms, dtype=float)
    if b.shape != y.shape or b.size < 2 or np.ptp(b) == 0:
        raise ValueError("need at least two distinct batch sizes with one latency each")
    alpha, beta = np.polyfit(b, y, 1)
    residual = float(((y - (alpha * b + beta)) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - residual / total if total > 0 else 1.0
    return LinearFit(float(alpha), float(beta), r2)


@dataclass(frozen=True)
class ModelProfile:
    """One model's measured batch latency: medians (and p90) per batch size, and the fit."""

    model: str
    threads: int
    batch_sizes: list[int]
    median_ms: list[float]
    p90_ms: list[float]
    fit: LinearFit

    def latency(self) -> LatencyModel:
        """The measured table (medians) as a :class:`LatencyModel`."""
        return LatencyModel(table=tuple(zip(self.batch_sizes, self.median_ms, strict=True)))


def profile_from_times(
    model: str, threads: int, times_ms: Mapping[int, Sequence[float]]
) -> ModelProfile:
    """The profile of ``model`` from the timed rounds per batch size."""
    batches = sorted(times_ms)
    medians = [statistics.median(times_ms[b]) for b in batches]
    p90s = [float(np.percentile(times_ms[b], 90)) for b in batches]
    fit = fit_linear(np.array(batches), np.array(medians))
    return ModelProfile(model, threads, batches, medians, p90s, fit)


class ProfileFormatError(ValueError):
    """A profile file that is not one (the message names the file and what is wrong)."""


def write_profiles(
    path: Path, profiles: Sequence[ModelProfile | Mapping[str, Any]], **extra: Any
) -> Path:
    """Write ``profiles`` (and ``extra`` top-level fields) in the one versioned format."""
    rows = [asdict(p) if isinstance(p, ModelProfile) else dict(p) for p in profiles]
    doc = {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, **extra, "profiles": rows}
    Path(path).write_text(json.dumps(doc, indent=1))
    return Path(path)


def medians_by_batch(points: Sequence[Mapping[str, Any]], workers: int) -> dict[int, float]:
    """Median latency per batch size of ``tsadapt profile``'s raw points at ``workers``
    (the handler's time where it reports one, else the client's; non-finite ones skipped)."""
    by: dict[int, list[float]] = {}
    for p in points:
        ms = p["handler_ms"] if math.isfinite(p["handler_ms"]) else p["client_ms"]
        if p["workers"] == workers and math.isfinite(ms):
            by.setdefault(int(p["batch"]), []).append(float(ms))
    return {b: statistics.median(v) for b, v in sorted(by.items())}


def _from_points(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Profiles (one per worker count) from an unversioned ``tsadapt profile`` document."""
    points = doc["points"]
    out = []
    for w in sorted({int(p["workers"]) for p in points}):
        med = medians_by_batch(points, w)
        if med:
            out.append(
                {
                    "model": str(doc["model"]),
                    "workers": w,
                    "batch_sizes": list(med),
                    "median_ms": list(med.values()),
                }
            )
    return out


def read_profiles(path: str | Path) -> list[dict[str, Any]]:
    """The profiles in a profile file: ``model``, ``batch_sizes``, ``median_ms`` each (and
    what the producer added: ``threads``, ``workers``, ``p90_ms``, ``fit``, ``device``).

    Takes the versioned format and the older ones (a bare list, or one bare profile;
    ``tsadapt profile``'s document of raw ``points``); anything else is a
    :class:`ProfileFormatError`.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise ProfileFormatError(f"profile {p}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ProfileFormatError(f"profile {p}: invalid JSON: {exc}") from None
    try:
        if isinstance(doc, list):
            rows = doc
        elif isinstance(doc, dict) and "version" in doc:
            if doc.get("format") != PROFILE_FORMAT or doc["version"] != PROFILE_VERSION:
                raise ProfileFormatError(
                    f"profile {p}: format {doc.get('format')!r} version {doc['version']!r}; "
                    f"this tsadapt reads {PROFILE_FORMAT!r} version {PROFILE_VERSION}"
                )
            rows = doc["profiles"]
        elif isinstance(doc, dict) and "points" in doc:
            rows = _from_points(doc)
        elif isinstance(doc, dict) and "batch_sizes" in doc:
            rows = [doc]  # one bare profile
        else:
            raise ProfileFormatError(f"profile {p}: not a profile file (no 'profiles' list)")
        for r in rows:
            bs, ms = r["batch_sizes"], r["median_ms"]
            if not isinstance(r["model"], str) or len(bs) != len(ms) or not bs:
                raise ProfileFormatError(
                    f"profile {p}: model {r['model']!r} needs equal-length, non-empty "
                    "batch_sizes and median_ms"
                )
    except (KeyError, TypeError) as exc:
        raise ProfileFormatError(
            f"profile {p}: not a profile file ({type(exc).__name__}: {exc})"
        ) from None
    return [dict(r) for r in rows]


def latency_of(row: Mapping[str, Any]) -> LatencyModel:
    """The measured table of one :func:`read_profiles` row."""
    return LatencyModel(table=tuple(zip(row["batch_sizes"], row["median_ms"], strict=True)))


def slo_feasible_batch(
    latency: LatencyModel, slo_ms: float, max_batch: int, outside_ms: float = 0.0
) -> int:
    """The largest batch size <= ``max_batch`` whose profiled execution takes at most
    :data:`SLO_BATCH_SHARE` of what the SLO leaves after ``outside_ms`` (at least 1).

    Nexus's rule: when batches run back to back a request can wait for one whole batch to
    finish and then run in the next, so a batch taking more than half the SLO misses it
    under exactly the load that fills it. A request also spends time outside the worker
    (client and HTTP stack, frontend, the hop to the worker: ``outside_ms``, measured by
    ``tsadapt lab fidelity calibrate``), which the worker's two batches must leave room for:
    wait + execution <= SLO - outside. This is the one cap rule: the simulated sidecar, the
    real one and the fleet all use it.
    """
    if not (math.isfinite(outside_ms) and outside_ms >= 0):
        raise ValueError(f"outside_ms must be >= 0 and finite, got {outside_ms!r}")
    sizes = np.arange(1, max(1, max_batch) + 1)
    room = SLO_BATCH_SHARE * (slo_ms - outside_ms)
    ok = sizes[np.asarray(latency.batch_ms(sizes)) <= room]
    return int(ok[-1]) if ok.size else 1
