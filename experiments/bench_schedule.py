"""Open-loop arrival schedules, per-request records and rate/SLO summaries (no Locust here).

The Locust scenarios (``loadtests/``) and ``tsadapt lab bench`` share this module, so the
schedule a load test replays, the records it writes and the figures the benchmark reports
come from one place. The arrivals are the simulator's: :func:`scenario_schedule` draws each
model's arrivals exactly as :meth:`Simulator.from_workloads` does for the same scenario and
seed (one ``SeedSequence`` child stream per model, stream 0 kept for the simulator itself).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from tsadapt import constants as C
from tsadapt.policy.sim.metrics import percentile
from tsadapt.policy.sim.scenario import Scenario
from tsadapt.policy.sim.workload_files import workload_from_dict
from tsadapt.policy.sim.workloads import Mix, Workload, realized_rates
from tsadapt.scenario_files import (  # noqa: F401 - re-exported: the load tests' lookup
    LOADTESTS_DIR,
    SCENARIO_DIRS,
    resolve_scenario,
)

# --------------------------------------------------------------------------- constants

#: Hard cap on the requests of one run (a shape's ``max_requests`` may lower it).
MAX_REQUESTS = 200_000
#: Requests in flight at most; far above what open-loop runs on this box reach.
MAX_IN_FLIGHT = 10_000
#: Client timeout per request (connect + response).
REQUEST_TIMEOUT_S = 30.0
#: Distinct pre-encoded bodies per model (cycled).
PAYLOADS_PER_MODEL = 8
#: Window of the rate and SLO time series.
WINDOW_S = 5.0
#: Achieved rate must be within this fraction of the intended one.
RATE_TOLERANCE = 0.05
#: Columns of the per-request CSV written by the Locust ``request`` event hook.
RECORD_FIELDS = (
    "sent_epoch",  # wall clock when the request was sent (s since the epoch)
    "scheduled_s",  # intended send time, s from the dispatcher's start
    "sent_s",  # actual send time, same clock
    "model",
    "latency_ms",  # client-side, send to last byte; empty if unanswered
    "status",  # HTTP status; 0 = no answer (connection error, timeout, unfinished)
    "ok",  # 1 if 2xx
    "error",
)
UNFINISHED = "unfinished"

# --------------------------------------------------------------------------- scenarios


def check_loopback(url: str) -> str:
    """``url`` unchanged if it points at this host's loopback, else ``ValueError``."""
    host = urlparse(url).hostname
    if host not in (C.LOOPBACK, "localhost"):
        raise ValueError(f"host {url!r} is not {C.LOOPBACK}: load tests stay on loopback")
    return url


# --------------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class Intensity:
    """Intended rate of one model: ``share * workload.rates_at(t)``."""

    model: str
    workload: Workload
    share: float = 1.0

    def rates_at(self, t: np.ndarray) -> np.ndarray:
        return self.share * self.workload.rates_at(np.asarray(t, dtype=np.float64))


@dataclass(frozen=True)
class Schedule:
    """Every request of a run: when to send it and to which model (open loop)."""

    times: np.ndarray  # sorted send offsets (s) from the run's start
    model_idx: np.ndarray  # index into ``models`` per request
    models: tuple[str, ...]
    duration_s: float
    seed: int
    intensities: tuple[Intensity, ...]
    slo_ms: Mapping[str, float] = field(default_factory=dict)
    truncated: bool = False  # cut at max_requests

    def __len__(self) -> int:
        return int(self.times.size)

    def model_of(self, i: int) -> str:
        return self.models[int(self.model_idx[i])]

    def times_of(self, model: str) -> np.ndarray:
        return self.times[self.model_idx == self.models.index(model)]

    def intended_rates(self, t: np.ndarray, model: str | None = None) -> np.ndarray:
        """Intended rate (req/s) at times ``t``, of one model or all."""
        t = np.asarray(t, dtype=np.float64)
        out = np.zeros_like(t)
        for it in self.intensities:
            if model is None or it.model == model:
                out = out + it.rates_at(t)
        return out

    def intended_mean_rate(self, model: str | None = None, step_s: float = 0.01) -> float:
        """Mean intended rate over ``[0, duration_s)`` (midpoint rule)."""
        n = max(1, math.ceil(self.duration_s / step_s))
        t = (np.arange(n) + 0.5) * (self.duration_s / n)
        return float(self.intended_rates(t, model).mean())


def _finish(
    times: np.ndarray,
    idx: np.ndarray,
    models: Sequence[str],
    duration_s: float,
    seed: int,
    intensities: Sequence[Intensity],
    slo_ms: Mapping[str, float],
    max_requests: int | None,
) -> Schedule:
    cap = MAX_REQUESTS if max_requests is None else min(int(max_requests), MAX_REQUESTS)
    if cap < 1:
        raise ValueError(f"max_requests must be >= 1, got {max_requests}")
    order = np.argsort(times, kind="stable")
    times, idx = times[order], idx[order]
    truncated = times.size > cap
    return Schedule(
        times[:cap].copy(),
        idx[:cap].astype(np.int64),
        tuple(models),
        float(duration_s),
        int(seed),
        tuple(intensities),
        dict(slo_ms),
        bool(truncated),
    )


def scenario_arrivals(
    scenario: Scenario, seed: int | None = None, duration_s: float | None = None
) -> dict[str, np.ndarray]:
    """Each model's arrival times, drawn exactly as the simulator draws them."""
    seed = scenario.seed if seed is None else seed
    duration = scenario.duration_s if duration_s is None else float(duration_s)
    streams = np.random.SeedSequence(seed).spawn(len(scenario.models) + 1)
    out: dict[str, np.ndarray] = {}
    for m, ss in zip(scenario.models, streams[1:], strict=True):
        wl = scenario.workload_for(m.name)
        if wl is not None:
            out[m.name] = wl.arrivals(duration, np.random.default_rng(ss))
    return out


def scenario_schedule(
    scenario: Scenario,
    seed: int | None = None,
    duration_s: float | None = None,
    max_requests: int | None = None,
) -> Schedule:
    """The simulator's arrivals of ``scenario`` (all models merged, sorted)."""
    seed = scenario.seed if seed is None else int(seed)
    duration = scenario.duration_s if duration_s is None else float(duration_s)
    if duration <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration}")
    arr = scenario_arrivals(scenario, seed, duration)
    names = scenario.model_names
    times = np.concatenate([arr.get(n, np.empty(0)) for n in names])
    idx = np.concatenate([np.full(arr.get(n, np.empty(0)).size, i) for i, n in enumerate(names)])
    intens = [Intensity(n, wl) for n in names if (wl := scenario.workload_for(n)) is not None]
    slo = {m.name: m.slo_ms for m in scenario.models}
    return _finish(times, idx, names, duration, seed, intens, slo, max_requests)


def workload_of(spec: Mapping[str, Any] | Sequence[Mapping[str, Any]] | Workload) -> Workload:
    """A workload from a ``{"kind": ...}`` dict, a list of them (superposed) or itself."""
    if isinstance(spec, Workload):
        return spec
    if isinstance(spec, Mapping):
        return workload_from_dict(spec, base_dir=LOADTESTS_DIR)
    parts = tuple(workload_from_dict(p, base_dir=LOADTESTS_DIR) for p in spec)
    if not parts:
        raise ValueError("workload list must not be empty")
    return parts[0] if len(parts) == 1 else Mix(parts)


def mix_schedule(
    workload: Workload,
    weights: Mapping[str, float],
    duration_s: float,
    seed: int,
    max_requests: int | None = None,
    slo_ms: Mapping[str, float] | None = None,
) -> Schedule:
    """One workload's arrivals, each sent to a model drawn by ``weights``; ``slo_ms`` are the
    SLOs the caller states (a model without one has none: every answer counts as within).

    Labelling a point process's arrivals independently with probabilities ``w_i`` splits it
    into per-model processes of intensity ``w_i * rate(t)`` (Poisson thinning).
    """
    names = tuple(weights)
    w = np.asarray([float(weights[n]) for n in names], dtype=np.float64)
    if not names or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {dict(weights)}")
    w = w / w.sum()
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    arr_ss, label_ss = np.random.SeedSequence(int(seed)).spawn(2)
    times = workload.arrivals(float(duration_s), np.random.default_rng(arr_ss))
    idx = np.random.default_rng(label_ss).choice(len(names), size=times.size, p=w)
    intens = [Intensity(n, workload, float(s)) for n, s in zip(names, w, strict=True) if s > 0]
    slo = {n: float((slo_ms or {}).get(n, math.inf)) for n in names}
    return _finish(times, idx, names, duration_s, seed, intens, slo, max_requests)


def parse_weights(text: str) -> dict[str, float]:
    """``"tabular=0.7,text=0.2,image=0.1"`` -> dict."""
    out: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"weights: expected NAME=WEIGHT, got {item!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"weights: {value!r} is not a number") from None
    if not out:
        raise ValueError("weights: empty")
    return out


# --------------------------------------------------------------------------- dispatch


def dispatch(
    times: np.ndarray,
    fire: Callable[[int, float], object],
    clock: Callable[[], float],
    sleep: Callable[[float], object],
    should_stop: Callable[[], bool] = lambda: False,
    t0: float | None = None,
) -> int:
    """Call ``fire(i, scheduled_s)`` at ``t0 + times[i]`` for every request; return how many.

    Open loop: ``fire`` must hand the request off (spawn) and return at once; a late
    dispatcher never skips a request, it fires it immediately. ``t0`` defaults to now.
    """
    start = clock() if t0 is None else t0
    n = 0
    for i, t in enumerate(times):
        if should_stop():
            break
        wait = start + float(t) - clock()
        if wait > 0:
            sleep(wait)
        fire(i, float(t))
        n += 1
    return n


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Records:
    """The per-request CSV of one run, as arrays (one element per request)."""

    sent_epoch: np.ndarray
    scheduled_s: np.ndarray
    sent_s: np.ndarray
    model: np.ndarray  # str
    latency_ms: np.ndarray  # NaN when unanswered
    status: np.ndarray
    ok: np.ndarray  # bool
    error: np.ndarray  # str

    def __len__(self) -> int:
        return int(self.sent_s.size)

    def of(self, model: str) -> Records:
        mask = self.model == model
        return Records(*(getattr(self, f)[mask] for f in RECORD_FIELDS))

    @property
    def lateness_ms(self) -> np.ndarray:
        return (self.sent_s - self.scheduled_s) * 1000.0


def record_row(
    sent_epoch: float,
    scheduled_s: float,
    sent_s: float,
    model: str,
    latency_ms: float | None,
    status: int,
    ok: bool,
    error: str = "",
) -> list[str]:
    """One CSV row in :data:`RECORD_FIELDS` order."""
    lat = "" if latency_ms is None or math.isnan(latency_ms) else f"{latency_ms:.3f}"
    return [
        f"{sent_epoch:.6f}",
        f"{scheduled_s:.6f}",
        f"{sent_s:.6f}",
        model,
        lat,
        str(int(status)),
        "1" if ok else "0",
        error.replace("\n", " ")[:200],
    ]


def records_from_rows(rows: Iterable[Sequence[str]]) -> Records:
    rows = list(rows)

    def col(i: int) -> list[str]:
        return [r[i] for r in rows]

    def floats(i: int) -> np.ndarray:
        return np.asarray([float(x) if x != "" else math.nan for x in col(i)], dtype=np.float64)

    return Records(
        sent_epoch=floats(0),
        scheduled_s=floats(1),
        sent_s=floats(2),
        model=np.asarray(col(3), dtype=object),
        latency_ms=floats(4),
        status=np.asarray([int(x) for x in col(5)], dtype=np.int64),
        ok=np.asarray([x == "1" for x in col(6)], dtype=bool),
        error=np.asarray(col(7), dtype=object),
    )


def read_records(path: Path | str) -> Records:
    """Read a per-request CSV (header :data:`RECORD_FIELDS`), sorted by send time."""
    with Path(path).open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(header) != RECORD_FIELDS:
            raise ValueError(f"{path}: header must be {','.join(RECORD_FIELDS)}, got {header}")
        rec = records_from_rows(reader)
    order = np.argsort(rec.sent_s, kind="stable")
    return Records(*(getattr(rec, f)[order] for f in RECORD_FIELDS))


# --------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class RateCheck:
    """Intended against achieved arrival rate of one model (or ``all``)."""

    model: str
    intended_rps: float  # mean of the workload's intensity over the run
    scheduled: int  # requests in the schedule (the sample path)
    sent: int  # requests actually sent
    achieved_rps: float  # sent / max(duration, last send time)
    lateness_p50_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float
    span_s: float  # the run's duration

    @property
    def scheduled_rps(self) -> float:
        return self.scheduled / self.span_s if self.span_s > 0 else math.nan

    @property
    def error_vs_intended(self) -> float:
        return self.achieved_rps / self.intended_rps - 1.0 if self.intended_rps else math.nan

    @property
    def error_vs_scheduled(self) -> float:
        return self.achieved_rps / self.scheduled_rps - 1.0 if self.scheduled else math.nan

    def within(self, tolerance: float = RATE_TOLERANCE) -> bool:
        """Achieved within ``tolerance`` of the intended schedule (the exact arrivals).

        The schedule is one sample of the intensity: its own deviation from
        ``intended_rps`` is sampling noise (reported as ``error_vs_intended``).
        """
        return abs(self.error_vs_scheduled) <= tolerance


def rate_checks(schedule: Schedule, records: Records) -> list[RateCheck]:
    """One :class:`RateCheck` per model and one for ``all``."""
    out = []
    for model in (*schedule.models, None):
        rec = records if model is None else records.of(model)
        sched = schedule.times if model is None else schedule.times_of(model)
        sent_s = rec.sent_s[~np.isnan(rec.sent_s)]
        span = max(schedule.duration_s, float(sent_s.max()) if sent_s.size else 0.0)
        late = rec.lateness_ms[~np.isnan(rec.lateness_ms)]
        out.append(
            RateCheck(
                model=model or "all",
                intended_rps=schedule.intended_mean_rate(model),
                scheduled=int(sched.size),
                sent=int(sent_s.size),
                achieved_rps=sent_s.size / span if span > 0 else math.nan,
                lateness_p50_ms=percentile(late, 50.0),
                lateness_p99_ms=percentile(late, 99.0),
                lateness_max_ms=float(late.max()) if late.size else math.nan,
                span_s=schedule.duration_s,
            )
        )
    return out


@dataclass(frozen=True)
class WindowSeries:
    """Per-window series of one model (or all): rates, latency percentiles, attainment."""

    model: str
    starts_s: np.ndarray
    intended_rps: np.ndarray
    scheduled_rps: np.ndarray
    achieved_rps: np.ndarray
    p50_ms: np.ndarray
    p99_ms: np.ndarray
    slo_attainment: np.ndarray  # NaN where nothing was sent


def windows(
    schedule: Schedule, records: Records, model: str | None = None, window_s: float = WINDOW_S
) -> WindowSeries:
    """Windowed series of ``model`` (all models when None); SLO per model.

    A request belongs to the window of its *scheduled* time; a request counts as within
    the SLO only if it was answered 2xx within its model's ``slo_ms``.
    """
    rec = records if model is None else records.of(model)
    sched = schedule.times if model is None else schedule.times_of(model)
    n = max(1, math.ceil(schedule.duration_s / window_s))
    starts = np.arange(n) * window_s
    fine = np.linspace(0.0, schedule.duration_s, n * 50, endpoint=False) + (
        schedule.duration_s / (n * 50) / 2
    )
    intended = schedule.intended_rates(fine, model).reshape(n, 50).mean(axis=1)
    sent = rec.sent_s[~np.isnan(rec.sent_s)]
    slo = np.asarray([schedule.slo_ms.get(m, math.inf) for m in rec.model], dtype=np.float64)
    good = rec.ok & (rec.latency_ms <= slo)
    wi = np.minimum((rec.scheduled_s / window_s).astype(np.int64), n - 1)
    p50 = np.full(n, math.nan)
    p99 = np.full(n, math.nan)
    att = np.full(n, math.nan)
    for k in range(n):
        sel = wi == k
        if sel.any():
            lat = rec.latency_ms[sel & rec.ok]
            p50[k], p99[k] = percentile(lat, 50.0), percentile(lat, 99.0)
            att[k] = good[sel].sum() / sel.sum()
    return WindowSeries(
        model or "all",
        starts,
        intended,
        realized_rates(sched, n * window_s, window_s),
        realized_rates(sent, n * window_s, window_s),
        p50,
        p99,
        att,
    )
