"""Time :func:`plan` on a synthetic 7x11 profile and on Packrat's published profiles.

Run: ``tsadapt lab packrat bench-planner [--cores 64] [--batch 1024] [PROFILE ...]``
(or ``python -m tsadapt.experiments.packrat_planner_speed``).
PROFILE is a CSV path or a bundled name.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from tsadapt.packrat_cpu.planner import plan
from tsadapt.packrat_cpu.profile_table import (
    ProfileTable,
    bundled_profiles,
    load_profile,
    resolve_profile,
)

SYNTH_THREADS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
SYNTH_BATCHES: tuple[int, ...] = tuple(2**k for k in range(11))  # 1..1024
SYNTH_SEED: int = 0
DEFAULT_CORES: int = 64
DEFAULT_BATCH: int = 1024
PUBLISHED_CORES: int = 16
DEFAULT_REPEAT: int = 5


def synthetic_profile(
    threads: Sequence[int] = SYNTH_THREADS,
    batches: Sequence[int] = SYNTH_BATCHES,
    seed: int = SYNTH_SEED,
) -> ProfileTable:
    """Amdahl-style latency (diminishing returns in threads, linear in batch) with noise."""
    rng = np.random.default_rng(seed)
    lat = {}
    for t in threads:
        for b in batches:
            serial, parallel = 2.0 + 0.05 * b, 3.0 * b
            noise = float(rng.uniform(0.95, 1.05))
            lat[(t, b)] = (serial + parallel / t + 0.2 * t) * noise
    return ProfileTable.from_mapping(lat, source="synthetic")


def time_call(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(min, median) wall time of ``fn`` in seconds over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def run(
    profiles: Sequence[str],
    cores: int = DEFAULT_CORES,
    batch: int = DEFAULT_BATCH,
    repeat: int = DEFAULT_REPEAT,
) -> list[str]:
    """Run the benchmark; return the report lines."""
    lines = [f"plan() timings, min / median of {repeat} runs"]
    synth = synthetic_profile()
    best, med = time_call(lambda: plan(synth, cores, batch), repeat)
    result = plan(synth, cores, batch)
    lines.append(
        f"synthetic {len(SYNTH_THREADS)}x{len(SYNTH_BATCHES)} T={cores} B={batch}: "
        f"{best * 1e3:.1f} / {med * 1e3:.1f} ms  -> {_groups(result.groups)} "
        f"{result.latency_ms:.1f} ms (speedup {result.speedup:.2f}x)"
    )
    for spec in profiles:
        table = load_profile(resolve_profile(spec))
        name = spec if not str(spec).endswith(".csv") else table.source
        for t, b in ((PUBLISHED_CORES, batch), (cores, batch)):
            best, med = time_call(lambda p=table, t=t, b=b: plan(p, t, b), repeat)
            result = plan(table, t, b)
            lines.append(
                f"{name} ({len(table)} points) T={t} B={b}: {best * 1e3:.1f} / {med * 1e3:.1f} ms"
                f"  -> {_groups(result.groups)} {result.latency_ms:.1f} ms "
                f"(speedup {result.speedup:.2f}x)"
            )
        sweep = [2**k for k in range(11)]
        start = time.perf_counter()
        speedups = [plan(table, PUBLISHED_CORES, b).speedup or 1.0 for b in sweep]
        lines.append(
            f"{name} T={PUBLISHED_CORES} sweep B=1..1024 (11 plans): "
            f"{(time.perf_counter() - start) * 1e3:.1f} ms; mean predicted speedup "
            f"{statistics.mean(speedups):.2f}x"
        )
    if profiles:
        lines.append(
            "note: fat instance = most profiled threads <= T (16 for the published profiles)"
        )
    return lines


def _groups(groups: tuple[tuple[int, int, int], ...]) -> str:
    return " + ".join(f"{n}x<{t},{b}>" for n, t, b in groups)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("profiles", nargs="*", help="profile CSVs or bundled names (default: all)")
    parser.add_argument("--cores", type=int, default=DEFAULT_CORES)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT)


def run_args(args: argparse.Namespace) -> int:
    for line in run(args.profiles or bundled_profiles(), args.cores, args.batch, args.repeat):
        print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsadapt.experiments.packrat_planner_speed")
    add_arguments(parser)
    return run_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
