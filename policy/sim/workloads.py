"""Arrival workloads, one definition shared by the simulator and the Locust shapes.

Every kind is a frozen dataclass with validated parameters (rates in requests per
second, times in seconds) and the same two methods:

* ``rate_at(t)`` -- the intended instantaneous rate at elapsed time ``t``; a Locust
  ``LoadTestShape.tick()`` asks this, and plots use it.
* ``arrivals(duration_s, rng)`` -- sorted arrival timestamps in ``[0, duration_s)``, the
  exact point process whose intensity is ``rate_at`` (so the empirical rate of
  ``arrivals`` matches the integral of ``rate_at``).

Kinds (``workload_from_dict({"kind": ..., **params})``):

``poisson {rate}``
    Homogeneous Poisson process.
``bursty {base_rate, spike_rate, spike_s, period_s, offset_s=period_s/2}``
    Two-level MMPP with deterministic modulation: the rate is ``spike_rate`` (the total
    rate, not an increment) inside the windows ``[offset_s + k*period_s,
    offset_s + k*period_s + spike_s)`` for every integer ``k`` and ``base_rate``
    elsewhere. Deterministic switching (instead of random holding times) keeps
    ``rate_at`` a function of time, so the Locust shape and the simulator see the very
    same spikes; arrivals are Poisson within each level.
``diurnal {min_rate, max_rate, period_s, offset_s=0}``
    ``rate(t) = min + (max - min) * (1 - cos(2 pi (t - offset_s) / period_s)) / 2``: at
    the minimum at ``offset_s``, peaks at ``offset_s + period_s / 2`` (models whose users
    live in other time zones peak at other times). Non-homogeneous Poisson by thinning
    (exact).
``gamma {mean_rate, cv, interval_s=1}``
    Stationary renewal process whose inter-arrival times are Gamma distributed with
    mean ``1/mean_rate`` and coefficient of variation ``cv`` (cv = 1 is Poisson,
    cv > 1 is bursty). ``rate_at`` is ``mean_rate`` (the intensity of a stationary
    renewal process). ``interval_s`` is the replay granularity: a load generator that
    can only set a rate per tick replays the *same* sample path through
    ``realized_rates(arrivals, duration_s, interval_s)`` (rates averaged per
    ``interval_s`` window); the simulator uses the exact timestamps.
``mmpp {rates: [...], mean_hold_s: [...], seed=0}``
    Markov-modulated Poisson process with random holding times: state ``i`` has arrival
    rate ``rates[i]`` and holds for an exponential time of mean ``mean_hold_s[i]``, then
    jumps to another state drawn uniformly (two states alternate). The modulating path
    comes from its own generator seeded with ``seed``, so ``rate_at`` is a function of
    time (the Locust shape and the simulator see the same bursts); the start state is drawn
    in proportion to the holding times (stationary). Two states with a silent or near-silent
    ``off`` state and short ``on`` periods give on/off bursts whose inter-arrival CV reaches
    10 and more; long holds and a 10x rate ratio give minute-scale swings.
``step {rates: [...], step_s}``
    ``rates[i]`` on ``[i*step_s, (i+1)*step_s)``; the last rate holds afterwards.
``trace {path}``
    CSV with a header. Either two columns including ``rate`` (e.g. ``second,rate``:
    the rate of row i holds from its time until the next row's time, the last row for
    one second; 0 outside), replayed as piecewise-constant Poisson; or a single column of
    timestamps in seconds (e.g. ``timestamp``), replayed exactly (``rng`` unused) with
    ``rate_at(t)`` = the trace's count in the one-second bin containing ``t``.

``trace`` and :func:`workload_from_dict` are in :mod:`tsadapt.policy.sim.workload_files`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from tsadapt.policy.defaults import REPLAY_INTERVAL_S

__all__ = [
    "Bursty",
    "Diurnal",
    "GammaRenewal",
    "MMPP",
    "Mix",
    "Poisson",
    "Step",
    "Workload",
    "realized_rates",
]


# --------------------------------------------------------------------------- helpers


def _number(kind: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{kind}.{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{kind}.{name} must be finite, got {value!r}")
    return value


def _check(kind: str, name: str, value: Any, *, positive: bool = False) -> float:
    """Coerce to float and check ``>= 0`` (or ``> 0`` with ``positive``)."""
    v = _number(kind, name, value)
    if positive and v <= 0:
        raise ValueError(f"{kind}.{name} must be > 0, got {value!r}")
    if not positive and v < 0:
        raise ValueError(f"{kind}.{name} must be >= 0, got {value!r}")
    return v


def _check_offset(kind: str, value: Any, period_s: float) -> float:
    """A periodic workload's ``offset_s``: a number in ``[0, period_s)``."""
    offset = _check(kind, "offset_s", value)
    if offset >= period_s:
        raise ValueError(f"{kind}.offset_s must be < period_s ({period_s}), got {offset}")
    return offset


def set_frozen(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def piecewise_poisson(
    starts: np.ndarray, ends: np.ndarray, rates: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Poisson arrivals with rate ``rates[i]`` on ``[starts[i], ends[i])`` (sorted)."""
    lengths = ends - starts
    counts = rng.poisson(np.maximum(rates, 0.0) * lengths)
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, dtype=np.float64)
    seg = np.repeat(np.arange(len(starts)), counts)
    t = starts[seg] + rng.random(total) * lengths[seg]
    t.sort()
    return t


def _segments(breaks: list[float], duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique breakpoints inside ``(0, duration_s)`` -> segment starts and ends."""
    inner = [b for b in breaks if 0.0 < b < duration_s]
    edges = np.unique(np.asarray([0.0, *inner, duration_s], dtype=np.float64))
    return edges[:-1], edges[1:]


def check_duration(duration_s: float) -> float:
    d = float(duration_s)
    if not d >= 0 or not math.isfinite(d):
        raise ValueError(f"duration_s must be a finite number >= 0, got {duration_s!r}")
    return d


def realized_rates(arrivals: np.ndarray, duration_s: float, interval_s: float) -> np.ndarray:
    """Per-window rates (req/s) of an arrival path, windows of ``interval_s`` from 0."""
    if interval_s <= 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
    n_bins = max(1, math.ceil(duration_s / interval_s))
    counts = np.bincount(
        np.minimum((np.asarray(arrivals) / interval_s).astype(np.int64), n_bins - 1),
        minlength=n_bins,
    )
    return counts[:n_bins] / interval_s


# --------------------------------------------------------------------------- base


class Workload:
    """Common interface of every workload kind."""

    kind: ClassVar[str] = ""

    def rate_at(self, t: float) -> float:
        """Intended instantaneous arrival rate (req/s) at elapsed time ``t`` (s)."""
        return float(self.rates_at(np.asarray([t], dtype=np.float64))[0])

    def rates_at(self, t: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`rate_at`."""
        raise NotImplementedError

    def arrivals(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        """Sorted arrival timestamps (s) in ``[0, duration_s)``."""
        raise NotImplementedError

    def peak_rate(self) -> float:
        """An upper bound of :meth:`rate_at` (used for thinning and sizing)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The dict :func:`workload_from_dict` accepts to rebuild this workload."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):  # type: ignore[arg-type]
            if f.init:
                v = getattr(self, f.name)
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


@dataclass(frozen=True)
class Poisson(Workload):
    """Homogeneous Poisson arrivals at ``rate`` req/s."""

    kind: ClassVar[str] = "poisson"
    rate: float

    def __post_init__(self) -> None:
        set_frozen(self, "rate", _check(self.kind, "rate", self.rate))

    def rates_at(self, t: np.ndarray) -> np.ndarray:
        return np.full(np.shape(t), self.rate)

    def peak_rate(self) -> float:
        return self.rate

    def arrivals(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        d = check_duration(duration_s)
        n = int(rng.poisson(self.rate * d))
        t = rng.random(n) * d
        t.sort()
        return t


@dataclass(frozen=True)
class Bursty(Workload):
    """Deterministically modulated two-level MMPP (see module docstring)."""

    kind: ClassVar[str] = "bursty"
    base_rate: float
    spike_rate: float
    spike_s: float
    period_s: float
    offset_s: float | None = None

    def __post_init__(self) -> None:
        k = self.kind
        set_frozen(self, "base_rate", _check(k, "base_rate", self.base_rate))
        set_frozen(self, "spike_rate", _check(k, "spike_rate", self.spike_rate))
        set_frozen(self, "spike_s", _check(k, "spike_s", self.spike_s, positive=True))
        set_frozen(self, "period_s", _check(k, "period_s", self.period_s, positive=True))
        if self.spike_s > self.period_s:
            raise ValueError(
                f"{k}.spike_s must be <= period_s ({self.period_s}), got {self.spike_s}"
            )
        offset = 0.5 * self.period_s if self.offset_s is None else self.offset_s
        set_frozen(self, "offset_s", _check_offset(k, offset, self.period_s))

    def rates_at(self, t: np.ndarray) -> np.ndarray:
        phase = np.mod(np.asarray(t, dtype=np.float64) - self.offset_s, self.period_s)
        return np.where(phase < self.spike_s, self.spike_rate, self.base_rate)

    def peak_rate(self) -> float:
        return max(self.base_rate, self.spike_rate)

    def arrivals(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        d = check_duration(duration_s)
        assert self.offset_s is not None
        k_max = math.ceil(d / self.period_s) + 1
        breaks: list[float] = []
        for k in range(-1, k_max + 1):
            s = self.offset_s + k * self.period_s
            breaks += [s, s + self.spike_s]
        starts, ends = _segments(breaks, d)
        rates = self.rates_at(0.5 * (starts + ends))
        return piecewise_poisson(starts, ends, rates, rng)


@dataclass(frozen=True)
class Diurnal(Workload):
    """Raised-cosine daily cycle between ``min_rate`` and ``max_rate``."""

    kind: ClassVar[str] = "diurnal"
    min_rate: float
    max_rate: float
    period_s: float
    offset_s: float = 0.0

    def __post_init__(self) -> None:
        k = self.kind
        set_frozen(self, "min_rate", _check(k, "min_rate", self.min_rate))
        set_frozen(self, "max_rate", _check(k, "max_rate", self.max_rate))
        set_frozen(self, "period_s", _check(k, "period_s", self.period_s, positive=True))
        if self.max_rate < self.min_rate:
            raise ValueError(
                f"{k}.max_rate must be >= min_rate ({self.min_rate}), got {self.max_rate}"
            )
        set_frozen(self, "offset_s", _check_offset(k, self.offset_s, self.period_s))

    def rates_at(self, t: np.ndarray) -> np.ndarray:
        x = np.asarray(t, dtype=np.float64) - self.offset_s
        amp = self.max_rate - self.min_rate
        return self.min_rate + amp * 0.5 * (1.0 - np.cos(2.0 * np.pi * x / self.period_s))

    def peak_rate(self) -> float:
        return self.max_rate

    def arrivals(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        d = check_duration(duration_s)
        lam = self.max_rate
        n = int(rng.poisson(lam * d))
        cand = rng.random(n) * d
        cand.sort()
        if lam <= 0:
            return cand
        keep = rng.random(n) * lam < self.rates_at(cand)
        return cand[keep]


@dataclass(frozen=True)
class GammaRenewal(Workload):
    """Renewal process with Gamma inter-arrival times (mean rate, CV)."""

    kind: ClassVar[str] = "gamma"
    mean_rate: float
    cv: float
    interval_s: float = REPLAY_INTERVAL_S

    #: Inter-arrival gaps simulated before t = 0 so the path starts stationary.
    BURN_IN_GAPS: ClassVar[int] = 100

    def __post_init__(self) -> None:
        k = self.kind
        set_frozen(self, "mean_rate", _check(k, "mean_rate", self.mean_rate, positive=True))
        set_frozen(self, "cv", _check(k, "cv", self.cv, positive=True))
        set_frozen(self, "interval_s", _check(k, "interval_s", self.interval_s, positive=True))

    def rates_at(self, t: np.ndarray) -> np.ndarray:
        return np.full(np.shape(t), self.mean_rate)

    def peak_rate(self) -> float:
        return self.mean_rate

    def arrivals(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        d = check_duration(duration_s)
        shape = 1.0 / (self.cv * self.cv)
        scale = 1.0 / (self.mean_rate * shape)
        burn = self.BURN_IN_GAPS / self.mean_rate
        horizon = d + burn
        expected = self.mean_rate * horizon
        chunks: list[np.ndarray] = []
        t_last = 0.0
        while t_last < horizon:
            n = int(expected * 1.1 + 10.0 * self.cv * math.sqrt(expected) + 16)
            gaps = rng.gamma(shape, scale, size=n)
            ts = t_last + np.cumsum(gaps)
            chunks.append(ts)
            t_last = float(ts[-1])
        ts = np.concatenate(chunks) - burn
        return ts[(ts >= 0.0) & (ts < d)]

    def realized_rates(self, arrivals: np.ndarray, duration_s: float) -> np.ndarray:
        """Rates of this sample path per ``interval_s`` window (for tick-based replay)."""
        return realized_rates(arrivals, duration_s, self.interval_s)


@dataclass(frozen=True)
class Step(Workload):
    """``rates[i]`` during step ``i`` of ``step_s`` seconds; the last rate holds."""

    kind: ClassVar[str] = "step"
    rates: tuple[float, ...]
    step_s: float

    def __post_init__(self) -> None:
        k = self.kind
        if isinstance(self.rates, str | bytes) or not isinstance(self.rates, list | tuple):
            raise ValueError(f"{k}.rates must be a list of numbers, got {self.rates!r}")
        if len(self.rates) == 0:
            raise ValueError(f"{k}.rates must not be empty")
        rates = tuple(_check(k, f"rates[{i}]", r) for i, r in enumerate(self.rates))
        set_frozen(self, "rates", rates)
        set_frozen(self, "step_s", _check(k, "step_s", self.step_s, positive=True))

    def rates_at(self, t: np.ndarray) -> np.ndarray:
        idx = np.clip(
            np.floor(np.asarray(t, dtype=np.float64) / self.step_s), 0, len(self.rates) - 1
        )
        return np.asarray(self.rates)[idx.astype(np.int64)]

    def peak_rate(self) -> float:
        return max(self.rates)

    def arrivals(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        d = check_duration(duration_s)
        breaks = [i * self.step_s for i in range(1, len(self.rates))]
        starts, ends = _segments(breaks, d)
        return piecewise_poisson(starts, ends, self.rates_at(0.5 * (starts + ends)), rng)


@dataclass(frozen=True)
class MMPP(Workload):
    """Markov-modulated Poisson process with exponential holding times (module docstring)."""

    kind: ClassVar[str] = "mmpp"
    rates: tuple[float, ...]
    mean_hold_s: tuple[float, ...]
    seed: int = 0
    #: States drawn per extension of the modulating path (fixed: the path is the same
    #: however far it is read).
    CHUNK: ClassVar[int] = 256

    def __post_init__(self) -> None:
        k = self.kind
        for name in ("rates", "mean_hold_s"):
            v = getattr(self, name)
            if isinstance(v, str | bytes) or not isinstance(v, list | tuple) or len(v) < 2:
                raise ValueError(f"{k}.{name} must be a list of at least 2 numbers, got {v!r}")
        if len(self.rates) != len(self.mean_hold_s):
            raise ValueError(f"{k}.mean_hold_s must have one entry per rate ({len(self.rates)})")
        rates = tuple(_check(k, f"rates[{i}]", r) for i, r in enumerate(self.rates))
        set_frozen(self, "rates", rates)
        holds = tuple(
            _check(k, f"mean_hold_s[{i}]", h, positive=True) for i, h in enumerate(self.mean_hold_s)
        )
        set_frozen(self, "mean_hold_s", holds)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise ValueError(f"{k}.seed must be an integer, got {self.seed!r}")
        if self.seed < 0:
            raise ValueError(f"{k}.seed must be >= 0, got {self.seed!r}")
        set_frozen(self, "seed", int(self.seed))
        rng = np.random.default_rng(self.seed)
        p = np.asarray(holds) / sum(holds)
        start = int(rng.choice(len(holds), p=p))
        empty = np.empty(0, dtype=np.int64)
        path = {"rng": rng, "state": start, "ends": np.empty(0), "states": empty}
        set_frozen(self, "_path", path)

    def path(self, until_s: float) -> tuple[np.ndarray, np.ndarray]:
        """The modulating path up to at least ``until_s``: segment end times and states
        (segment ``i`` runs from ``ends[i-1]`` (0 for the first) to ``ends[i]``)."""
        c = self._path  # type: ignore[attr-defined]
        n = len(self.rates)
        holds = np.asarray(self.mean_hold_s)
        while not len(c["ends"]) or c["ends"][-1] < until_s:
            rng, states = c["rng"], np.empty(self.CHUNK, dtype=np.int64)
            jumps = rng.integers(1, n, size=self.CHUNK)  # to another state, uniformly
            state = c["state"]
            for i in range(self.CHUNK):
                states[i] = state
                state = (state + int(jumps[i])) % n
            c["state"] = state
            gaps = rng.exponential(holds[states])
            start = c["ends"][-1] if len(c["ends"]) else 0.0
            c["ends"] = np.concatenate([c["ends"], start + np.cumsum(gaps)])
            c["states"] = np.concatenate([c["states"], states])
        return c["ends"], c["states"]

    def rates_at(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        ends, states = self.path(float(np.max(t, initial=0.0)))
        idx = np.searchsorted(ends, t, side="right")
        return np.asarray(self.rates)[states[np.minimum(idx, len(ends) - 1)]]

    def peak_rate(self) -> float:
        return max(self.rates)

    def mean_rate(self) -> float:
        """The stationary mean rate (holding-time-weighted)."""
        return float(np.dot(self.rates, self.mean_hold_s) / sum(self.mean_hold_s))

    def arrivals(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        d = check_duration(duration_s)
        ends, _ = self.path(d)
        starts, stops = _segments([float(e) for e in ends[ends < d]], d)
        return piecewise_poisson(starts, stops, self.rates_at(0.5 * (starts + stops)), rng)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rates": list(self.rates),
                "mean_hold_s": list(self.mean_hold_s), "seed": self.seed}  # fmt: skip


@dataclass(frozen=True)
class Mix(Workload):
    """Superposition of several workloads for one model (rates add up)."""

    kind: ClassVar[str] = "mix"
    parts: tuple[Workload, ...]

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("mix.parts must not be empty")
        set_frozen(self, "parts", tuple(self.parts))

    def rates_at(self, t: np.ndarray) -> np.ndarray:
        return np.sum([p.rates_at(t) for p in self.parts], axis=0)

    def peak_rate(self) -> float:
        return float(sum(p.peak_rate() for p in self.parts))

    def arrivals(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        out = np.concatenate([p.arrivals(duration_s, rng) for p in self.parts])
        out.sort()
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "parts": [p.to_dict() for p in self.parts]}
