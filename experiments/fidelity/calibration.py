"""``tsadapt lab fidelity calibrate``: what the handler-only profile misses, measured on a
real run with steady load (:func:`calibrate`): the worker's time per batch from the
server's log and the outside overhead as a distribution, fitted so that the simulator
reproduces the real latencies (:func:`derive_calibration`)."""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.experiments.fidelity.common import (
    CALIBRATION_ATTEMPTS,
    CALIBRATION_FILE,
    CALIBRATION_MAX_OTHERS,
    CALIBRATION_SCENARIO,
    DEFAULT_RUNS,
    RESULTS_DIR,
    _clean,
    _rel,
)
from tsadapt.experiments.fidelity.runs import run_real, simulate
from tsadapt.experiments.hostcpu import CpuLoad, Quiet
from tsadapt.policy.sim.scenario import Scenario, load_scenario, with_batch_overhead


@dataclass(frozen=True)
class Calibration:
    """Per-model values ``tsadapt lab fidelity calibrate`` derives (see :func:`calibrate`)."""

    model: str
    batch_overhead_ms: float
    exec_cv: float
    overhead_quantiles_ms: tuple[float, ...]
    backend_p50_ms: float  # the worker's time per batch, as the frontend saw it
    profile_b1_ms: float
    real_p50_ms: float
    real_p99_ms: float
    sim_p50_ms: float  # without the outside overhead
    requests: int
    solo_batches: int  # batches that ran alone (the worker time's sample)
    solo_p90_ms: float = math.nan
    overlapped_batches: int = 0  # batches that overlapped another model's (not used)
    overlapped_p50_ms: float = math.nan
    overlapped_p90_ms: float = math.nan
    host_cpu_ms: float = 0.0  # CPU per request outside the workers (the run's mean)

    @property
    def overhead_p50_ms(self) -> float:
        return quantile_of(self.overhead_quantiles_ms, 0.50)

    @property
    def overhead_p99_ms(self) -> float:
        return quantile_of(self.overhead_quantiles_ms, 0.99)

    def as_dict(self) -> dict[str, Any]:
        d = _clean(asdict(self))
        d["overhead_quantiles_ms"] = list(self.overhead_quantiles_ms)
        d["overhead_p50_ms"] = round(self.overhead_p50_ms, 3)
        d["overhead_p99_ms"] = round(self.overhead_p99_ms, 3)
        return d


#: Quantiles of the overhead distribution written by ``calibrate`` (at k / N, k = 0..N).
OVERHEAD_QUANTILES = 100
#: z-score of the 90th percentile of a standard normal.
_Z90 = 1.2815515655446004
#: TorchServe 0.12's frontend line per batch: the worker's round trip to its backend.
_BACKEND_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d),(?P<ms>\d{3}) .*W-\d+-(?P<model>\S+)_[^_\s]+ "
    r"org\.pytorch\.serve\.wlm\.WorkerThread - Backend response time: (?P<dur>\d+)\s*$"
)


def quantile_of(q: Sequence[float], p: float) -> float:
    """The ``p``-quantile (0..1) of a quantile table at equally spaced probabilities."""
    x = np.asarray(q, dtype=float)
    return float(np.interp(p * (x.size - 1), np.arange(x.size), x))


def lognormal_cv(p50: float, p90: float) -> float:
    """Coefficient of variation of the log-normal with this median and 90th percentile."""
    if not (p50 > 0 and p90 >= p50):
        return 0.0
    sigma = math.log(p90 / p50) / _Z90
    return math.sqrt(math.expm1(sigma * sigma))


@dataclass(frozen=True)
class Batches:
    """One model's batches from the server log: end times (s, epoch) and durations (ms)."""

    end_s: np.ndarray
    duration_ms: np.ndarray

    @property
    def start_s(self) -> np.ndarray:
        return self.end_s - self.duration_ms / 1000.0

    def __len__(self) -> int:
        return int(self.end_s.size)


def backend_batches(log_lines: Iterable[str], since_epoch: float = 0.0) -> dict[str, Batches]:
    """Per model, every batch's "Backend response time" (the worker's round trip to its
    backend, whole ms) and the time it was logged (its end), from TorchServe's ``ts_log``,
    for batches ending at or after ``since_epoch`` (local time stamps, as TorchServe writes
    them). A line the log holds twice (two appenders) counts once."""
    seen: set[str] = set()
    out: dict[str, list[tuple[float, float]]] = {}
    for line in log_lines:
        m = _BACKEND_LINE.match(line)
        if m is None or line in seen:
            continue
        seen.add(line)
        t = time.mktime(time.strptime(m["ts"], "%Y-%m-%dT%H:%M:%S")) + int(m["ms"]) / 1000.0
        if t >= since_epoch:
            out.setdefault(m["model"], []).append((t, float(m["dur"])))
    res = {}
    for k, v in out.items():
        a = np.asarray(sorted(v), dtype=float).reshape(-1, 2)
        res[k] = Batches(a[:, 0], a[:, 1])
    return res


def solo_mask(batches: Mapping[str, Batches], model: str) -> np.ndarray:
    """Which of ``model``'s batches ran from start to end while no other model's did.

    The simulator applies contention itself ((threads executing) / cores), so the worker's
    time per batch it is calibrated with must come from batches no other worker slowed.
    """
    mine = batches[model]
    start, end = mine.start_s, mine.end_s
    alone = np.ones(len(mine), dtype=bool)
    for other, b in batches.items():
        if other == model or len(b) == 0:
            continue
        order = np.argsort(b.end_s, kind="stable")
        o_start, o_end = b.start_s[order], b.end_s[order]
        # another batch overlaps when o_end > start and o_start < end
        first = np.searchsorted(o_end, start, side="right")
        # the earliest start among the batches ending after ``start`` (o_end[first:])
        earliest = np.minimum.accumulate(o_start[::-1])[::-1]
        has = first < o_start.size
        idx = np.minimum(first, o_start.size - 1)
        alone &= ~(has & (earliest[idx] < end))
    return alone


def overhead_quantiles(
    real_ms: np.ndarray, sim_ms: np.ndarray, n: int = OVERHEAD_QUANTILES
) -> tuple[float, ...]:
    """Quantiles (at k / n) of what the simulator misses per request, outside the worker:
    real minus simulated latency quantile by quantile, clipped at 0, sorted (monotone
    rearrangement: a quantile function must not decrease).

    A quantile-by-quantile difference is exact for a shift and treats the two parts as
    moving together otherwise (their sum's tail is then no lighter than the real one).
    """
    x = np.asarray(real_ms, dtype=float)
    y = np.asarray(sim_ms, dtype=float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size == 0 or y.size == 0:
        raise ValueError("need answered requests on both sides")
    p = np.linspace(0.0, 1.0, n + 1)
    d = np.sort(np.maximum(np.quantile(x, p) - np.quantile(y, p), 0.0))  # rearrangement
    return tuple(round(float(v), 3) for v in d)


#: Fixed-point iterations of :func:`fit_overhead_quantiles`.
FIT_ITERATIONS = 40
#: Monte Carlo draws per simulated latency in :func:`fit_overhead_quantiles`.
FIT_DRAWS = 20


def fit_overhead_quantiles(
    real_ms: np.ndarray,
    sim_ms: np.ndarray,
    n: int = OVERHEAD_QUANTILES,
    iterations: int = FIT_ITERATIONS,
    seed: int = 0,
) -> tuple[float, ...]:
    """Quantiles (at k / n) of an overhead O, independent of the simulated latency S, such
    that S + O has the real latencies' quantiles -- what the simulator does with it (one
    independent draw per request).

    Starts from the quantile-by-quantile difference (:func:`overhead_quantiles`) and
    corrects it by the remaining difference between the real quantiles and those of
    S + O (Monte Carlo with fixed draws), ``iterations`` times; clipped at 0, sorted.
    """
    x = np.asarray(real_ms, dtype=float)
    y = np.asarray(sim_ms, dtype=float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    q = np.asarray(overhead_quantiles(x, y, n), dtype=float)
    rng = np.random.default_rng(seed)
    u = rng.random(FIT_DRAWS * y.size) * n
    s = np.resize(rng.permutation(y), u.size)
    grid = np.linspace(0.0, 1.0, n + 1)
    target = np.quantile(x, grid)
    ks = np.arange(n + 1, dtype=float)
    for _ in range(iterations):
        q = np.sort(np.maximum(q + target - np.quantile(s + np.interp(u, ks, q), grid), 0.0))
    return tuple(round(float(v), 3) for v in q)


def host_cpu_per_request_ms(cpu: CpuLoad, requests: int) -> float:
    """CPU ms per request outside the workers over the run's load phase (0 if unmeasured)."""
    if requests <= 0 or not math.isfinite(cpu.load_host_cpu_s):
        return 0.0
    return 1000.0 * cpu.load_host_cpu_s / requests


def derive_calibration(
    scenario: Scenario,
    real_latencies_ms: Mapping[str, np.ndarray],
    backend: Mapping[str, Batches],
    profiles: Sequence[Mapping[str, Any]],
    seed: int,
    duration_s: float,
    host_cpu_ms: float = 0.0,
) -> list[Calibration]:
    """Per model, from the calibration run (``host_cpu_ms``: the CPU per request our process
    tree used outside the workers during its load phase, given to every model):

    * ``exec_cv``: the worker's time per batch (the frontend's backend round trip; at this
      load most batches hold one request), over the batches that ran while no other
      model's did (:func:`solo_mask`: the simulator adds contention itself), fitted by a
      log-normal through its p50 and p90;
    * ``batch_overhead_ms`` = that log-normal's mean - the profile at b = 1: the worker's
      work the in-process profile misses (the hop to the backend and back, request
      decoding, metrics, a worker woken from idle). The simulator's jitter has mean 1, so
      its times at b = 1 then have the real median and p90;
    * ``overhead_quantiles_ms``: the distribution of an outside overhead that, drawn
      independently per request and added to the simulated latency (with the two above),
      gives the real latencies' distribution (:func:`fit_overhead_quantiles`).
    """
    prof = {e["model"]: e for e in profiles}
    cal: dict[str, tuple[float, float, float, float, int]] = {}
    stats: dict[str, tuple[float, int, float, float]] = {}
    for m in scenario.models:
        if m.name not in backend or len(backend[m.name]) == 0:
            raise ValueError(f"no backend times for model {m.name!r} in the calibration run")
        solo = solo_mask(backend, m.name)
        bt = backend[m.name].duration_ms[solo]
        if bt.size < 10:
            raise ValueError(
                f"model {m.name!r}: only {bt.size} of its batches ran alone in the calibration "
                "run (need 10)"
            )
        b1 = float(m.latency.batch_ms(1)) - m.batch_overhead_ms
        if m.name in prof:
            e = prof[m.name]
            b1 = float(dict(zip(e["batch_sizes"], e["median_ms"], strict=True)).get(1, b1))
        p50, p90 = float(np.percentile(bt, 50)), float(np.percentile(bt, 90))
        cv = lognormal_cv(p50, p90)
        # the simulator's jitter has mean 1: the table must hold the mean of the log-normal
        # through p50 and p90, so that the simulated times have the real median and p90
        mean = p50 * math.sqrt(1.0 + cv * cv)
        cal[m.name] = (max(0.0, mean - b1), cv, p50, b1, int(bt.size))
        over = backend[m.name].duration_ms[~solo]
        stats[m.name] = (
            p90, int(over.size),
            float(np.percentile(over, 50)) if over.size else math.nan,
            float(np.percentile(over, 90)) if over.size else math.nan,
        )  # fmt: skip
    bare = replace(
        scenario,
        models=tuple(
            replace(
                m,
                latency=with_batch_overhead(m.latency, cal[m.name][0] - m.batch_overhead_ms),
                batch_overhead_ms=cal[m.name][0],
                exec_cv=cal[m.name][1],
                overhead_ms=0.0,
                overhead_quantiles_ms=None,
                host_cpu_ms=host_cpu_ms,
            )
            for m in scenario.models
        ),
    )
    sim = simulate(bare, seed, duration_s)
    out = []
    for m in scenario.models:
        lat = np.asarray(real_latencies_ms[m.name], dtype=float)
        w, cv, p50, b1, n_solo = cal[m.name]
        s = sim.per_model[m.name]
        out.append(
            Calibration(
                m.name, round(w, 3), round(cv, 3),
                fit_overhead_quantiles(lat, sim.latencies_ms[m.name]), round(p50, 3),
                round(b1, 3),
                round(float(np.percentile(lat, 50)), 3), round(float(np.percentile(lat, 99)), 3),
                round(s.p50_ms, 3), int(lat.size), n_solo, round(stats[m.name][0], 3),
                stats[m.name][1], round(stats[m.name][2], 3), round(stats[m.name][3], 3),
                round(host_cpu_ms, 3),
            )
        )  # fmt: skip
    return out


def calibrate(
    runs_dir: Path = DEFAULT_RUNS,
    out: Path = CALIBRATION_FILE,
    duration_s: float | None = None,
    profiles: Path = RESULTS_DIR / "model-profiles.json",
    command: str = "tsadapt lab fidelity calibrate",
    on_tick: Callable[[float, str], None] = lambda elapsed, what: None,
    quiet: Quiet = Quiet(),
    attempts: int = CALIBRATION_ATTEMPTS,
    max_others_cores: float = CALIBRATION_MAX_OTHERS,
) -> tuple[list[Calibration], CpuLoad]:
    """Measure what the handler-only profile misses, on a real run; write ``out``.

    The scenario ``calibrate`` (steady Poisson load on each model at the compared
    scenarios' mean rates, none of their structure) runs on a fresh, warmed server; the
    worker times per batch come from the server's log, and the simulator runs the same
    arrivals (see :func:`derive_calibration`). A run during which other processes used
    more than ``max_others_cores`` is repeated (at most ``attempts`` runs in all; the last
    one is kept and the file says it was not quiet).
    """
    from tsadapt.experiments.bench_schedule import read_records, resolve_scenario

    path = resolve_scenario(CALIBRATION_SCENARIO)
    scenario = load_scenario(path)
    seed = scenario.seed
    duration = scenario.duration_s if duration_s is None else float(duration_s)
    for attempt in range(1, max(1, attempts) + 1):
        real, cpu, (calm, waited) = run_real(
            path, scenario, seed, duration, runs_dir, command, on_tick, quiet
        )
        if real.status != "ok" or real.rundir is None:
            raise RuntimeError(f"calibration run {real.status}: {real.reason}")
        if cpu.others_cores <= max_others_cores:
            break
        on_tick(
            duration,
            f"attempt {attempt}: other processes used {cpu.others_cores:.2f} cores, run again",
        )
    rundir = Path(real.rundir)
    records = read_records(rundir / "requests.csv")
    latencies = {m: records.of(m).latency_ms[records.of(m).ok] for m in scenario.model_names}
    since = float(np.nanmin(records.sent_epoch)) if len(records) else 0.0
    with (rundir / "server" / "logs" / "ts_log.log").open(errors="replace") as fh:
        backend = backend_batches(fh, since)
    profile_doc = json.loads(profiles.read_text())
    host_cpu_ms = host_cpu_per_request_ms(cpu, len(records))
    cals = derive_calibration(
        scenario, latencies, backend, profile_doc, seed, duration, host_cpu_ms
    )
    doc = {
        "command": command,
        "generated": time.strftime("%Y-%m-%d %H:%M"),
        "scenario": _rel(path),
        "duration_s": duration,
        "seed": seed,
        "profiles": _rel(profiles),
        "cores": os.cpu_count(),
        "cpu": cpu.as_dict(),
        "quiet_at_start": calm,
        "quiet_during_run": cpu.others_cores <= max_others_cores,
        "attempts": attempt,
        "rundir": _rel(real.rundir),
        "method": "per model, on the calibration scenario: exec_cv = cv of the log-normal "
        "through the p50 and p90 of the worker time per batch (TorchServe's 'Backend "
        "response time') of the batches that ran while no other model's did; "
        "batch_overhead_ms = that log-normal's mean - the profile at b=1; "
        "overhead_quantiles_ms = quantiles (k/100) of an overhead that, drawn independently "
        "per request and added to the simulated latency (with the two above), reproduces "
        "the real latency quantiles (fixed-point fit from the quantile-by-quantile "
        "difference); host_cpu_ms = CPU seconds of the frontend, Locust and this command "
        "(our process tree without the TorchServe workers) over the load phase / requests "
        "sent, the same for every model",
        "models": {c.model: c.as_dict() for c in cals},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return cals, cpu
