"""Packrat's <instances, threads, batch> planner (pure functions).

Problem: given a profile ``L(t, b)`` of one model instance, ``cores`` and a batch ``B``,
choose a multiset of profiled points ``(t_k, b_k)`` with ``sum t_k <= cores`` and
``sum b_k == B`` that minimises, lexicographically,

    (max_k L(t_k, b_k),  #instances,  sum_k L(t_k, b_k),  sorted((t_k, b_k)))

i.e. the batch latency (instances run in parallel), then fewer instances, then less total
work, then the lexicographically smallest sorted list of ``(threads, batch)``.

Why two DP passes. A single DP carrying the whole key is *not* exact: lexicographic
(max, count, sum) is not monotone under adding an instance. With sub-plans
``A = (max 5 ms, 3 instances)`` < ``B = (max 7 ms, 1 instance)``, adding a 10 ms instance
gives ``(10, 4) > (10, 2)``; a DP that kept only ``A`` would miss the optimum. So:

1. min-max DP (monotone: ``max(a, L) <= max(b, L)`` when ``a <= b``) gives the optimal
   batch latency ``M*`` exactly (the paper's recurrence, iterating profiled items only);
2. restricted to items with ``L <= M*``, every feasible plan has max exactly ``M*``, and
   the remaining key ``(count, sum)`` is additive, hence monotone: a second DP minimises
   it exactly;
3. the canonical order is recovered by reconstruction: at each state take the smallest
   ``(t, b)`` item that lies on *some* optimal plan. The set of such items is exactly the
   set of elements of optimal plans, so the smallest is the first element of the
   lexicographically smallest sorted optimal plan, and the argument repeats on the rest.

Both DPs are over ``(threads budget t, batch b)``, iterate only profiled items and are
vectorised with numpy over the batch axis: ``O(cores * B * |profile|)`` elementwise work,
``O(cores * |profile|)`` numpy calls. Latencies are compared as integers in units of
``LATENCY_QUANTUM_MS`` (1 ns) so that sums and ties are exact rather than subject to float
rounding; differences below 1 ns count as ties.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from tsadapt.packrat_cpu.profile_table import ProfileTable

LATENCY_QUANTUM_MS: float = 1e-6
"""Latencies are compared as integer multiples of this (1 ns)."""

MAX_DP_CELLS: int = 1 << 22
"""Upper bound on (cores + 1) * (batch + 1) states, to bound memory (~32 MiB per table)."""

MAX_DIAGNOSTIC_BATCH: int = 1 << 16
"""Largest batch for which an infeasible request reports the minimum cores it would need."""

_INF = np.int64(1 << 62)
"""Quantized latency / sum of an unreachable state (room left for additions)."""

_NO_PLAN_COUNT = np.int64(1 << 40)
"""Instance count of an unreachable state."""


class PlanError(ValueError):
    """A request the planner cannot satisfy; ``field`` names the offending input."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, order=True)
class Instance:
    """One model instance: intra-op ``threads``, its share of the ``batch``, its latency."""

    threads: int
    batch: int
    latency_ms: float


@dataclass(frozen=True)
class Baseline:
    """The fat instance: one instance with ``threads`` threads running ``batches`` in turn.

    ``batches == (B,)`` whenever ``(threads, B)`` is profiled (always the case on the
    published profiles); otherwise the fat instance processes B as consecutive profiled
    sub-batches with the least total latency (``latency_ms`` is their sum).
    """

    threads: int
    batches: tuple[int, ...]
    latency_ms: float


@dataclass(frozen=True)
class Plan:
    """Result of :func:`plan` / :func:`plan_uniform`.

    ``latency_ms`` is the predicted batch latency (the slowest instance). ``baseline_*`` and
    ``speedup`` refer to the fat instance (see :class:`Baseline`); they are ``None`` when the
    fat instance cannot process the batch from profiled points. For uniform plans
    ``optimal_latency_ms`` is the heterogeneous optimum the uniform plan is compared with.
    """

    instances: tuple[Instance, ...]
    latency_ms: float
    baseline_latency_ms: float | None
    speedup: float | None
    cores: int
    batch: int
    baseline: Baseline | None = None
    uniform: bool = False
    optimal_latency_ms: float | None = None

    @property
    def threads_used(self) -> int:
        return sum(i.threads for i in self.instances)

    @property
    def sum_latency_ms(self) -> float:
        return sum(i.latency_ms for i in self.instances)

    @property
    def groups(self) -> tuple[tuple[int, int, int], ...]:
        """``(count, threads, batch)`` per distinct instance kind, most threads first."""
        counts = Counter((i.threads, i.batch) for i in self.instances)
        return tuple(
            (n, t, b) for (t, b), n in sorted(counts.items(), key=lambda kv: (-kv[0][0], kv[0][1]))
        )

    @property
    def uniform_gap_ms(self) -> float | None:
        """How much slower this uniform plan is than the heterogeneous optimum."""
        if self.optimal_latency_ms is None:
            return None
        return self.latency_ms - self.optimal_latency_ms

    @property
    def uniform_gap_ratio(self) -> float | None:
        """``latency_ms / optimal_latency_ms`` (1.0 when uniform is optimal)."""
        if self.optimal_latency_ms is None:
            return None
        return self.latency_ms / self.optimal_latency_ms

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict describing the plan."""
        out: dict[str, Any] = {
            "instances": [{"threads": i.threads, "batch": i.batch} for i in self.instances],
            "latency_ms": self.latency_ms,
            "baseline_latency_ms": self.baseline_latency_ms,
            "speedup": self.speedup,
            "cores": self.cores,
            "batch": self.batch,
            "baseline": None
            if self.baseline is None
            else {"threads": self.baseline.threads, "batches": list(self.baseline.batches)},
        }
        if self.uniform:
            out["uniform"] = True
            out["optimal_latency_ms"] = self.optimal_latency_ms
            out["uniform_gap_ms"] = self.uniform_gap_ms
            out["uniform_gap_ratio"] = self.uniform_gap_ratio
        return out


@dataclass(frozen=True)
class _Items:
    """Profile points in canonical (threads, batch) order, latencies quantized."""

    threads: tuple[int, ...]
    batches: tuple[int, ...]
    qlat: tuple[int, ...]
    lat: tuple[float, ...]


def quantize(latency_ms: float) -> int:
    """Latency as an integer number of ``LATENCY_QUANTUM_MS``."""
    return round(latency_ms / LATENCY_QUANTUM_MS)


def _items(profile: ProfileTable, max_threads: int, max_batch: int) -> _Items:
    pts = [(t, b, lat) for t, b, lat in profile.points if t <= max_threads and b <= max_batch]
    return _Items(
        threads=tuple(p[0] for p in pts),
        batches=tuple(p[1] for p in pts),
        qlat=tuple(quantize(p[2]) for p in pts),
        lat=tuple(p[2] for p in pts),
    )


def _check_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise PlanError(f"{name} must be an integer, got {value!r}", name)
    if value < 1:
        raise PlanError(f"{name} must be >= 1, got {value}", name)
    return int(value)


def _validate(profile: ProfileTable, cores: object, batch: object) -> tuple[int, int]:
    cores = _check_int(cores, "cores")
    batch = _check_int(batch, "batch")
    min_threads = profile.threads[0]
    if cores < min_threads:
        raise PlanError(
            f"cores={cores} is below the smallest profiled thread count ({min_threads})", "cores"
        )
    return cores, batch


def _min_threads_for(items: _Items, batch: int) -> int | None:
    """Fewest threads whose instances sum to exactly ``batch`` (None if unreachable)."""
    threads = np.asarray(items.threads, dtype=np.int64)
    batches = np.asarray(items.batches, dtype=np.int64)
    best = np.full(batch + 1, _INF, dtype=np.int64)
    best[0] = 0
    for b in range(1, batch + 1):
        ok = batches <= b
        if ok.any():
            best[b] = min(int((best[b - batches[ok]] + threads[ok]).min()), int(_INF))
    return None if best[batch] >= _INF else int(best[batch])


def _infeasible(profile: ProfileTable, cores: int, batch: int) -> PlanError:
    if batch > MAX_DIAGNOSTIC_BATCH:
        return PlanError(
            f"batch={batch} cannot be split into profiled points using at most cores={cores}",
            "batch",
        )
    items = _items(profile, max_threads=profile.threads[-1], max_batch=batch)
    need = _min_threads_for(items, batch)
    if need is None:
        return PlanError(
            f"batch={batch} is not a sum of profiled batch sizes {list(profile.batches)}",
            "batch",
        )
    return PlanError(
        f"batch={batch} needs at least {need} cores with the profiled points; cores={cores}",
        "cores",
    )


def _minmax_dp(items: _Items, cores: int, batch: int) -> int:
    """Pass 1: least achievable max quantized latency (``_INF`` if infeasible)."""
    opt = np.full((cores + 1, batch + 1), _INF, dtype=np.int64)
    opt[:, 0] = 0  # the empty plan; latencies are > 0 so max(0, L) == L
    for t in range(1, cores + 1):
        row = opt[t]
        for ti, bi, q in zip(items.threads, items.batches, items.qlat, strict=True):
            if ti > t:
                break  # items are sorted by threads
            cand = np.maximum(opt[t - ti, : batch + 1 - bi], q)
            np.minimum(row[bi:], cand, out=row[bi:])
    return int(opt[cores, batch])


def _count_sum_dp(items: _Items, cores: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2: lexicographically least (#instances, sum latency) per (threads budget, batch)."""
    count = np.full((cores + 1, batch + 1), _NO_PLAN_COUNT, dtype=np.int64)
    total = np.full((cores + 1, batch + 1), _INF, dtype=np.int64)
    count[:, 0] = 0
    total[:, 0] = 0
    for t in range(1, cores + 1):
        for ti, bi, q in zip(items.threads, items.batches, items.qlat, strict=True):
            if ti > t:
                break
            cn = count[t - ti, : batch + 1 - bi] + 1
            cs = total[t - ti, : batch + 1 - bi] + q
            cur_n = count[t, bi:]
            cur_s = total[t, bi:]
            better = (cn < cur_n) | ((cn == cur_n) & (cs < cur_s))
            np.copyto(cur_n, cn, where=better)
            np.copyto(cur_s, cs, where=better)
    return count, total


def _reconstruct(
    items: _Items, count: np.ndarray, total: np.ndarray, cores: int, batch: int
) -> list[int]:
    """Indices of the lexicographically smallest sorted optimal plan (see module doc)."""
    chosen: list[int] = []
    t, b = cores, batch
    while b > 0:
        for k, (ti, bi, q) in enumerate(zip(items.threads, items.batches, items.qlat, strict=True)):
            if (
                ti <= t
                and bi <= b
                and (
                    count[t - ti, b - bi] + 1 == count[t, b]
                    and total[t - ti, b - bi] + q == total[t, b]
                )
            ):
                chosen.append(k)
                t, b = t - ti, b - bi
                break
        else:  # pragma: no cover - would mean the DP tables are inconsistent
            raise AssertionError(f"planner reconstruction failed at threads={t} batch={b}")
    return chosen


def baseline(profile: ProfileTable, cores: int, batch: int) -> Baseline | None:
    """The fat instance: the most profiled threads <= ``cores`` at batch ``batch``.

    If ``(threads, batch)`` is not profiled, the fat instance runs the batch as consecutive
    profiled sub-batches (least total latency, then fewest sub-batches); ``None`` when even
    that is impossible.
    """
    cores, batch = _validate(profile, cores, batch)
    fat = max(t for t in profile.threads if t <= cores)
    if (fat, batch) in profile:
        return Baseline(fat, (batch,), profile.latency(fat, batch))
    sizes = [b for b in profile.batches if (fat, b) in profile and b <= batch]
    best: list[tuple[int, int] | None] = [None] * (batch + 1)
    best[0] = (0, 0)
    choice = [0] * (batch + 1)
    for b in range(1, batch + 1):
        for s in sizes:
            prev = best[b - s] if s <= b else None
            if prev is None:
                continue
            cand = (prev[0] + quantize(profile.latency(fat, s)), prev[1] + 1)
            if best[b] is None or cand < best[b]:
                best[b], choice[b] = cand, s
    if best[batch] is None:
        return None
    chunks: list[int] = []
    b = batch
    while b > 0:
        chunks.append(choice[b])
        b -= choice[b]
    chunks.sort(reverse=True)
    return Baseline(fat, tuple(chunks), sum(profile.latency(fat, s) for s in chunks))


def _finish(
    profile: ProfileTable,
    instances: tuple[Instance, ...],
    cores: int,
    batch: int,
    uniform: bool = False,
    optimal_latency_ms: float | None = None,
) -> Plan:
    latency = max(i.latency_ms for i in instances)
    fat = baseline(profile, cores, batch)
    return Plan(
        instances=instances,
        latency_ms=latency,
        baseline_latency_ms=None if fat is None else fat.latency_ms,
        speedup=None if fat is None else fat.latency_ms / latency,
        cores=cores,
        batch=batch,
        baseline=fat,
        uniform=uniform,
        optimal_latency_ms=optimal_latency_ms,
    )


def plan(profile: ProfileTable, cores: int, batch: int) -> Plan:
    """Exact heterogeneous plan minimising (max latency, #instances, sum latency, order).

    Raises :class:`PlanError` for ``batch < 1``, ``cores`` below the smallest profiled
    thread count, a batch that is not a sum of profiled batch sizes, or one that needs more
    cores than available.
    """
    cores, batch = _validate(profile, cores, batch)
    # At most `batch` instances (each has batch >= 1), so more cores than
    # batch * max_threads cannot help; cap to bound the DP.
    budget = min(cores, batch * profile.threads[-1])
    if (budget + 1) * (batch + 1) > MAX_DP_CELLS:
        raise PlanError(
            f"cores={cores} x batch={batch} exceeds the planner limit of {MAX_DP_CELLS} states",
            "cores" if budget > batch else "batch",
        )
    items = _items(profile, max_threads=budget, max_batch=batch)
    best_max = _minmax_dp(items, budget, batch) if items.threads else int(_INF)
    if best_max >= _INF:
        raise _infeasible(profile, cores, batch)
    keep = [k for k, q in enumerate(items.qlat) if q <= best_max]
    sub = _Items(
        threads=tuple(items.threads[k] for k in keep),
        batches=tuple(items.batches[k] for k in keep),
        qlat=tuple(items.qlat[k] for k in keep),
        lat=tuple(items.lat[k] for k in keep),
    )
    count, total = _count_sum_dp(sub, budget, batch)
    chosen = _reconstruct(sub, count, total, budget, batch)
    instances = tuple(Instance(sub.threads[k], sub.batches[k], sub.lat[k]) for k in chosen)
    return _finish(profile, instances, cores, batch)


def plan_uniform(profile: ProfileTable, cores: int, batch: int) -> Plan:
    """Best plan of ``i`` identical instances ``(t, b)``: ``i * t <= cores``, ``i * b == batch``.

    This is what one TorchServe model (one batch size, one thread count per worker) can run.
    Same tie-break as :func:`plan`; ``optimal_latency_ms`` is the heterogeneous optimum.
    """
    best = plan(profile, cores, batch)  # validates; uniform plans are a subset
    candidates = []
    for t, b, lat in profile.points:
        if batch % b == 0 and (batch // b) * t <= cores:
            n = batch // b
            q = quantize(lat)
            candidates.append(((q, n, n * q, t, b), t, b, lat, n))
    if not candidates:
        raise PlanError(
            f"no uniform configuration for batch={batch} on cores={cores}: needs i identical "
            f"profiled instances (t, b) with i*b == batch and i*t <= cores",
            "batch",
        )
    _, t, b, lat, n = min(candidates)
    instances = tuple(Instance(t, b, lat) for _ in range(n))
    return _finish(profile, instances, cores, batch, True, best.latency_ms)
