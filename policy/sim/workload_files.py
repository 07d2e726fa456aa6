"""Workloads as scenario files give them: the ``trace`` kind (a CSV of per-second rates
or of timestamps, read and checked once; lines starting with ``#`` are comments, e.g. where
``tsadapt trace`` took the arrivals from) and :func:`workload_from_dict`, which builds any
kind from a ``{"kind": ..., **params}`` mapping and names the bad field. The kinds and
their semantics are in :mod:`tsadapt.policy.sim.workloads`."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tsadapt.policy.sim.workloads import (
    MMPP,
    Bursty,
    Diurnal,
    GammaRenewal,
    Poisson,
    Step,
    Workload,
    check_duration,
    piecewise_poisson,
    set_frozen,
)

__all__ = ["WORKLOAD_KINDS", "Trace", "workload_from_dict"]


@dataclass(frozen=True)
class Trace(Workload):
    """Replay a CSV of per-second rates or of timestamps (see module docstring)."""

    kind: ClassVar[str] = "trace"
    path: str
    _times: np.ndarray = field(init=False, repr=False, compare=False)
    _rates: np.ndarray | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        k = self.kind
        if not isinstance(self.path, str | Path) or not str(self.path):
            raise ValueError(f"{k}.path must be a file path, got {self.path!r}")
        p = Path(self.path)
        if not p.is_file():
            raise ValueError(f"{k}.path: no such file: {p}")
        set_frozen(self, "path", str(p))
        with p.open(newline="") as fh:
            rows = [
                r
                for r in csv.reader(fh)
                if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")
            ]
        if not rows:
            raise ValueError(f"{k}.path: {p} is empty")
        header = [c.strip().lower() for c in rows[0]]
        try:
            [float(c) for c in header]
            body = rows  # no header: detect by column count
            names = ["timestamp"] if len(header) == 1 else ["second", "rate"]
        except ValueError:
            body = rows[1:]
            names = header
        try:
            data = np.asarray([[float(c) for c in r] for r in body], dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"{k}.path: {p}: non-numeric value ({exc})") from None
        if data.size == 0:
            raise ValueError(f"{k}.path: {p} has no data rows")
        if data.ndim != 2 or data.shape[1] != len(names):
            raise ValueError(f"{k}.path: {p}: every row must have {len(names)} column(s)")
        if len(names) == 1:
            ts = np.sort(data[:, 0])
            if ts[0] < 0:
                raise ValueError(f"{k}.path: {p}: timestamps must be >= 0")
            set_frozen(self, "_times", ts)
            set_frozen(self, "_rates", None)
        elif len(names) == 2 and "rate" in names:
            ri = names.index("rate")
            times, rates = data[:, 1 - ri], data[:, ri]
            if np.any(np.diff(times) <= 0):
                raise ValueError(f"{k}.path: {p}: times must be strictly increasing")
            if np.any(rates < 0) or times[0] < 0:
                raise ValueError(f"{k}.path: {p}: times and rates must be >= 0")
            set_frozen(self, "_times", times)
            set_frozen(self, "_rates", rates)
        else:
            raise ValueError(
                f"{k}.path: {p}: header must be one timestamp column or two columns "
                f"including 'rate' (e.g. 'second,rate'), got {rows[0]!r}"
            )

    @property
    def is_timestamps(self) -> bool:
        return self._rates is None

    def _edges(self) -> tuple[np.ndarray, np.ndarray]:
        ends = np.append(self._times[1:], self._times[-1] + 1.0)
        return self._times, ends

    def rates_at(self, t: np.ndarray) -> np.ndarray:
        x = np.asarray(t, dtype=np.float64)
        if self._rates is None:
            lo = np.floor(x)
            n = np.searchsorted(self._times, lo + 1.0, "left") - np.searchsorted(
                self._times, lo, "left"
            )
            return n.astype(np.float64)
        starts, ends = self._edges()
        i = np.searchsorted(starts, x, "right") - 1
        ok = (i >= 0) & (x < ends[np.clip(i, 0, None)])
        return np.where(ok, self._rates[np.clip(i, 0, None)], 0.0)

    def peak_rate(self) -> float:
        if self._rates is None:
            return float(np.max(np.bincount(self._times.astype(np.int64))))
        return float(self._rates.max())

    def arrivals(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        d = check_duration(duration_s)
        if self._rates is None:
            return self._times[self._times < d].copy()
        starts, ends = self._edges()
        starts, ends = np.minimum(starts, d), np.minimum(ends, d)
        keep = ends > starts
        return piecewise_poisson(starts[keep], ends[keep], self._rates[keep], rng)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path}


WORKLOAD_KINDS: dict[str, type[Workload]] = {
    cls.kind: cls for cls in (Poisson, Bursty, Diurnal, GammaRenewal, MMPP, Step, Trace)
}


def workload_from_dict(d: Mapping[str, Any], base_dir: str | Path | None = None) -> Workload:
    """Build a workload from ``{"kind": ..., **params}``; ``ValueError`` names the bad field.

    ``base_dir`` resolves a relative ``trace`` path (the scenario file's folder).
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"workload must be a mapping, got {d!r}")
    if "kind" not in d:
        raise ValueError("workload: missing field 'kind'")
    kind = d["kind"]
    cls = WORKLOAD_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(
            f"workload.kind: unknown kind {kind!r} (expected one of {sorted(WORKLOAD_KINDS)})"
        )
    params = {k: v for k, v in d.items() if k != "kind"}
    spec = [f for f in fields(cls) if f.init]
    names = {f.name for f in spec}
    unknown = sorted(set(params) - names)
    if unknown:
        raise ValueError(f"{kind}: unknown field {unknown[0]!r} (expected fields: {sorted(names)})")
    for f in spec:
        required = f.default is MISSING and f.default_factory is MISSING
        if required and f.name not in params:
            raise ValueError(f"{kind}: missing field {f.name!r}")
    if cls is Trace and base_dir is not None and "path" in params:
        p = Path(str(params["path"]))
        if not p.is_absolute():
            params["path"] = str(Path(base_dir) / p)
    try:
        return cls(**params)
    except TypeError as exc:  # pragma: no cover - guarded above
        raise ValueError(f"{kind}: {exc}") from None
