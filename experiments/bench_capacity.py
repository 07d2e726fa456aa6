"""Each system's steady capacity per model, measured before the open-loop runs of
``tsadapt lab bench --peers``, and the box's speed around every bench (``speed_probe_s``:
TorchServe at its registration defaults, before and after the runs): a closed loop
(``loadtests/_closedloop.py``: ``USERS`` Locust users each sending the next request as soon
as the last is answered, the open-loop runs' payloads) against one model at a time, on a
fresh server per system, for ``seconds`` after a warm-up.

The systems measured are those whose size does not change during a run: TorchServe at its
registration defaults (``static``), and each peer's variants that do not autoscale.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tsadapt.experiments.bench_schedule import LOADTESTS_DIR
from tsadapt.policy.sim.scenario import Scenario

if TYPE_CHECKING:
    from tsadapt.experiments.bench_run import BenchConfig

#: Closed-loop users (requests in flight) per model: enough to fill every batch the systems
#: use here (at most 16) twice over.
USERS = 32
#: Seconds at the start of each model's loop that are not counted.
WARMUP_S = 3.0
#: Peer runs that autoscale (not measured: their capacity is not one number).
AUTOSCALING = ("rayserve-auto",)


@dataclass(frozen=True)
class Capacity:
    """Closed-loop throughput of one model on one system."""

    system: str
    model: str
    status: str  # ok, failed, skipped
    reason: str = ""
    users: int = USERS
    window_s: float = math.nan
    ok: int = 0
    failed: int = 0
    rps: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan


def capacity_systems(peer_runs: tuple[str, ...]) -> list[str]:
    """``static`` and the peer runs of fixed size."""
    return ["static", *[r for r in peer_runs if r not in AUTOSCALING]]


@contextmanager
def serving(cfg: BenchConfig, system: str, scenario_path: Path, scenario: Scenario,
            rundir: Path) -> Iterator[tuple[str, Path]]:  # fmt: skip
    """A fresh server of ``system`` for the block: (inference URL, TorchServe work dir or
    the run dir); stopped after."""
    if system == "static":
        from tsadapt.experiments.bench_run import start_server
        from tsadapt.serve.server import ServerConfig, start, stop

        server_cfg = ServerConfig.with_free_ports(
            workdir=rundir / "server", model_store=cfg.runs_dir / "model-store",
            models=tuple(scenario.model_names),
        )  # fmt: skip
        server = start_server(start, server_cfg)
        try:
            yield server.inference_url, server_cfg.workdir
        finally:
            stop(server_cfg.workdir)
        return
    from tsadapt.experiments.peers.envs import peer_python
    from tsadapt.experiments.peers.peer_bench import start_variant, variant_of

    python, where = peer_python(variant_of(system)[0])
    if python is None:
        raise RuntimeError(where)
    peer = start_variant(system, python, scenario_path, scenario, rundir)
    try:
        yield peer.url, rundir
    finally:
        peer.stop()


def closed_loop(url: str, workdir: Path, model: str, seconds: float, out: Path) -> dict:
    """One model's closed loop through Locust; its JSON result."""
    from tsadapt.experiments.bench_run import favour_load_generator

    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOADTESTS_DIR / "_closedloop.py"),
        "--headless", "--only-summary", "--loglevel", "WARNING", "-u", str(USERS),
        "-r", str(USERS), "--run-time", f"{math.ceil(seconds + WARMUP_S)}s", "--host", url,
        "--model", model, "--warmup", str(WARMUP_S), "--out", str(out),
        "--server-workdir", str(workdir),
    ]  # fmt: skip
    with (out.with_suffix(".log")).open("wb") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=seconds + 120,
                       preexec_fn=favour_load_generator, check=False)  # fmt: skip
    return json.loads(out.read_text())


def capacities(system: str, url: str, workdir: Path, models: list[str] | tuple[str, ...],
               seconds: float, rundir: Path) -> list[Capacity]:  # fmt: skip
    """Every model's closed loop on a running server of ``system``, one after the other."""
    out = []
    for m in models:
        try:
            r = closed_loop(url, workdir, m, seconds, rundir / f"capacity-{m}.json")
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            out.append(Capacity(system, m, "failed", str(exc)))
            continue
        out.append(Capacity(
            system, m, "ok", "", USERS, r["window_s"], r["ok"], r["failed"],
            r["rps"] if r["rps"] is not None else math.nan,
            r["p50_ms"] if r["p50_ms"] is not None else math.nan,
            r["p99_ms"] if r["p99_ms"] is not None else math.nan,
        ))  # fmt: skip
    return out


def measure(cfg: BenchConfig, system: str, scenario_path: Path, scenario: Scenario,
            rundir: Path, seconds: float) -> list[Capacity]:  # fmt: skip
    """Every model's capacity on ``system`` (one server, one model after the other)."""
    rundir.mkdir(parents=True, exist_ok=True)
    try:
        with serving(cfg, system, scenario_path, scenario, rundir) as (url, workdir):
            return capacities(system, url, workdir, scenario.model_names, seconds, rundir)
    except RuntimeError as exc:
        return [Capacity(system, m, "failed", str(exc)) for m in scenario.model_names]


def speed_json(before: Sequence[Capacity], after: Sequence[Capacity], seconds: float) -> dict:
    """The box-speed probe for the report's JSON: closed-loop req/s per model (None where the
    probe failed) before and after the runs."""

    def rps(caps: Sequence[Capacity]) -> dict[str, float | None]:
        return {c.model: (round(c.rps, 2) if math.isfinite(c.rps) else None) for c in caps}

    return {"system": "static", "users": USERS, "seconds": seconds,
            "before": rps(before), "after": rps(after)}  # fmt: skip


def speed_lines(before: Sequence[Capacity], after: Sequence[Capacity], seconds: float) -> list[str]:
    """The report's box-speed section: the same probe before and after the runs, so reports
    from different days (the box's speed varies 2x between them) can be read side by side."""
    after_of = {c.model: c for c in after}

    def cell(c: Capacity | None) -> str:
        if c is None or not math.isfinite(c.rps):
            return f"failed: {c.reason}" if c is not None and c.reason else "-"
        return f"{c.rps:.1f}"

    rows = []
    for b in before:
        a = after_of.get(b.model)
        ok = a is not None and math.isfinite(b.rps) and math.isfinite(a.rps) and b.rps > 0
        change = f"{100 * (a.rps / b.rps - 1):+.1f} %" if ok else "-"
        rows.append(f"| {b.model} | {cell(b)} | {cell(a)} | {change} |")
    return [
        "## Box speed",
        "",
        f"Each model's closed-loop capacity on TorchServe at its registration defaults ({USERS} "
        f"Locust users, one model at a time, {seconds:g} s after a {WARMUP_S:g} s warm-up, on "
        "a fresh server), measured before the first run and after the last: the same box "
        "serves 2x more on some days than on others, so compare reports by these figures.",
        "",
        "| model | before (req/s) | after (req/s) | change |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
