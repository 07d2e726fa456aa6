"""Packrat-style profile of one model instance: latency per (threads, batch) point.

``tsadapt packrat profile`` measures what the planner needs (Packrat, ICML'25, Sec. 4):
the latency of ONE instance of a demo model for every thread count ``t`` in 1..T and every
batch size ``b``. For each ``t`` one fresh worker process is started that

* pins itself to ``cores[:t]`` (``os.sched_setaffinity``) before it loads anything,
* calls ``torch.set_num_threads(t)`` (and runs with ``OMP_NUM_THREADS=t``),
* loads the model as a TorchServe worker does (:func:`tsadapt.handlers.local.load_local`),
  runs one forward so the OpenMP pool exists, then pins every thread in ``/proc/self/task``,
* for each ``b``: builds ``b`` valid raw requests (JSON bytes, as the frontend sends them),
  runs ``warmup`` untimed batches, then ``reps`` timed ones through the whole handler
  (decode, validate, collate, forward, answers) and reports mean/min/max/std in ms.

The worker writes one JSON line per point on a private copy of its stdout (anything the
libraries print goes to stderr); the parent advances a progress bar per point and writes
``threads,batch,latency_ms,min_ms,max_ms,std_ms`` (``latency_ms`` is the mean), which
:func:`tsadapt.packrat_cpu.profile_table.load_profile` reads and ``packrat plan`` uses.

The settings and the point record are in :mod:`tsadapt.packrat_cpu.profiler_config`, the
CSV and the summary in :mod:`tsadapt.packrat_cpu.profiler_output`.

Nothing here imports torch at module level: the worker must pin itself first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tsadapt.handlers.placement import pin_process
from tsadapt.packrat_cpu.profiler_config import PointResult, ProfilerConfig, int_list
from tsadapt.profile import timed_rounds

EXIT_FAILED = 1  # a worker failed (the CLI's exit code)


class ProfilerError(RuntimeError):
    """A worker failed or reported something unexpected."""


# ----------------------------------------------------------------------------- worker


def _worker(
    model_name: str,
    threads: int,
    cores: Sequence[int],
    batches: Sequence[int],
    warmup: int,
    reps: int,
    seed: int,
    emit: Callable[[dict[str, Any]], None],
) -> None:
    os.sched_setaffinity(0, cores)  # before torch: every thread created later inherits it

    import numpy as np
    import torch

    from tsadapt.handlers.catalog import demo_model
    from tsadapt.handlers.local import load_local

    torch.set_num_threads(threads)
    model = demo_model(model_name)
    with tempfile.TemporaryDirectory(prefix=f"packrat-profile-{model_name}-") as tmp:
        local = load_local(model, Path(tmp) / model_name)
        torch.set_num_threads(threads)  # in case the handler's initialize changed it
        first = np.random.default_rng([seed, 0])
        local.run([model.worker_request(first)])  # OpenMP pool exists
        pinned = pin_process(cores)
        emit(
            {
                "ready": True,
                "threads": threads,
                "torch_threads": torch.get_num_threads(),
                "cores": list(cores),
                "pinned_threads": pinned,
                "pid": os.getpid(),
            }
        )
        for b in batches:
            rng = np.random.default_rng([seed, b])  # the same requests for every t
            requests = [model.worker_request(rng) for _ in range(b)]
            rounds = timed_rounds(lambda r=requests: local.run(r), warmup, reps)
            times = [ms for ms, _ in rounds]
            out = rounds[-1][1]
            bad = [i for i in range(b) if local.status(i) != 200]
            if len(out) != b or bad:
                raise ProfilerError(
                    f"b={b}: request(s) {bad} failed: {out[bad[0]] if bad else out}"
                )
            emit({"point": asdict(PointResult.from_times(threads, b, times))})


def worker_main(argv: Sequence[str] | None = None) -> int:
    """``python -m tsadapt.packrat_cpu.profiler --worker ...``: measure one thread count."""
    ap = argparse.ArgumentParser(prog="tsadapt.packrat_cpu.profiler")
    ap.add_argument("--worker", action="store_true", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--cores", required=True)
    ap.add_argument("--batches", required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--reps", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    # Results go to a private copy of stdout; fd 1 then points at stderr, so nothing a
    # library prints can corrupt the JSON lines.
    sys.stdout.flush()
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)

    def emit(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    _worker(
        args.model,
        args.threads,
        [int(c) for c in args.cores.split(",")],
        [int(b) for b in args.batches.split(",")],
        args.warmup,
        args.reps,
        args.seed,
        emit,
    )
    channel.close()
    return 0


# ----------------------------------------------------------------------------- parent


def _worker_command(config: ProfilerConfig, threads: int) -> list[str]:
    assert config.cores is not None
    return [
        sys.executable,
        "-m",
        "tsadapt.packrat_cpu.profiler",
        "--worker",
        "--model",
        config.model,
        "--threads",
        str(threads),
        "--cores",
        int_list(config.cores[:threads]),
        "--batches",
        int_list(config.batches),
        "--warmup",
        str(config.warmup),
        "--reps",
        str(config.reps),
        "--seed",
        str(config.seed),
    ]


def _worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # A live Packrat placement (TorchServe workers re-pin from it) must not override ours.
    env.pop("TSADAPT_PLACEMENT_DIR", None)
    return env


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def measure_threads(
    config: ProfilerConfig,
    threads: int,
    on_point: Callable[[PointResult], None] | None = None,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> list[PointResult]:
    """Run one worker for ``threads`` and return its points (one per batch size)."""
    results: list[PointResult] = []
    with tempfile.TemporaryDirectory(prefix="packrat-profile-") as tmp:
        errlog = Path(tmp) / "worker.stderr"
        with errlog.open("w", encoding="utf-8") as err:
            proc = subprocess.Popen(
                _worker_command(config, threads),
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=_worker_env(threads),
                text=True,
                encoding="utf-8",
            )
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    try:
                        message = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if "point" in message:
                        point = PointResult(**message["point"])
                        results.append(point)
                        if on_point is not None:
                            on_point(point)
                    elif message.get("ready") and on_ready is not None:
                        on_ready(message)
                rc = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if rc != 0:
            raise ProfilerError(
                f"worker for threads={threads} exited with code {rc}:\n{_tail(errlog)}"
            )
    got = [p.batch for p in results]
    if got != list(config.batches):
        raise ProfilerError(f"worker for threads={threads} reported batches {got}")
    return results


def profile(
    config: ProfilerConfig,
    on_point: Callable[[PointResult], None] | None = None,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> list[PointResult]:
    """Measure every point of ``config`` (one worker per thread count), sorted by (t, b)."""
    results: list[PointResult] = []
    for t in config.threads or ():
        results.extend(measure_threads(config, t, on_point, on_ready))
    return sorted(results, key=lambda p: (p.threads, p.batch))


def _cost(batch: int) -> int:
    """Rough relative cost of one point, for the time-left estimate (latency ~ a*b + c)."""
    return batch + 1


def run_with_progress(config: ProfilerConfig, console: Any = None) -> list[PointResult]:
    """:func:`profile` with a rich progress bar (points done, elapsed, time left)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = console or Console(stderr=True)
    per_point = config.warmup + config.reps
    total_points = len(config.points)
    # Work units: every worker start (load ~ a few batches) plus each point's batches.
    load_units = 4 * per_point * _cost(1)
    total = sum(
        load_units + per_point * sum(map(_cost, config.batches)) for _ in config.threads or ()
    )
    done = {"points": 0}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[points]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(
            f"profile {config.model}", total=total, points=f"0/{total_points} points"
        )

        def on_ready(message: dict[str, Any]) -> None:
            progress.advance(task, load_units)
            progress.update(task, description=f"profile {config.model} t={message['threads']}")

        def on_point(point: PointResult) -> None:
            done["points"] += 1
            progress.update(
                task,
                advance=per_point * _cost(point.batch),
                points=f"{done['points']}/{total_points} points",
            )

        results = profile(config, on_point=on_point, on_ready=on_ready)
    return results


if __name__ == "__main__":
    raise SystemExit(worker_main())
