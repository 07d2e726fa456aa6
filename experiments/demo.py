"""The README's demo: a real TorchServe with the three demo models, real requests, latencies."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tsadapt import constants as C
from tsadapt.experiments.loadgen import LatencySummary, send_requests
from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.serve.server import ServerConfig, start, stop

logger = logging.getLogger(__name__)


def latency_table(summaries: list[LatencySummary], title: str) -> Table:
    table = Table(title=title)
    for col in ("model", "requests", "failed", "p50 ms", "p90 ms", "p99 ms", "req/s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for s in summaries:
        table.add_row(
            s.model,
            str(s.requests),
            str(s.failed),
            f"{s.p50_ms:.1f}",
            f"{s.p90_ms:.1f}",
            f"{s.p99_ms:.1f}",
            f"{s.throughput_rps:.1f}",
        )
    return table


#: Where the committed bench reports are (``bench-<scenario>.md`` and its ``.json``).
RESULTS_DIR = C.REPO_DIR / "docs" / "results"


def committed_report(scenario: str, results_dir: Path = RESULTS_DIR) -> Path:
    """The JSON summary of ``scenario``'s committed bench report."""
    from tsadapt.experiments.bench_schedule import resolve_scenario
    from tsadapt.policy.sim.scenario import load_scenario

    name = load_scenario(resolve_scenario(scenario)).name
    return results_dir / f"bench-{name}.json"


def best_adaptive(scenario: str, results_dir: Path = RESULTS_DIR) -> str:
    """The demo's "best adaptive" controller: the one the committed multi-seed report of
    ``scenario`` ranks first among the adaptive ones (never a single run)."""
    from tsadapt.experiments.bench_seeds import ReportError, best_adaptive_from_report

    path = committed_report(scenario, results_dir)
    try:
        return best_adaptive_from_report(path, scenario=path.stem.removeprefix("bench-"))
    except ReportError as exc:
        raise ReportError(f"{exc} (or skip the demo's short bench: --bench-s 0)") from None


def run_demo(
    workdir: Path,
    requests_per_model: int,
    concurrency: int,
    bench_s: float,
    seed: int = 0,
    scenario: str = C.DEMO_SCENARIO,
    results_dir: Path = RESULTS_DIR,
) -> int:
    """Part 1: per-model latency on a real server. Part 2 (``bench_s`` > 0): a short
    ``tsadapt lab bench`` of ``scenario``, static against the best adaptive controller of the
    committed multi-seed report (a missing or malformed report fails before part 1)."""
    best = best_adaptive(scenario, results_dir) if bench_s > 0 else ""
    status = latency_demo(workdir, requests_per_model, concurrency, seed)
    if bench_s > 0:
        from tsadapt.experiments.bench import BenchConfig, run_bench

        Console().print(
            f"\n[bold]Short bench[/]: {scenario} scenario, static vs {best} (the best adaptive "
            f"controller of {committed_report(scenario, results_dir).name}), {bench_s:g} s each "
            f"on a fresh server (report in {workdir / 'bench'})"
        )
        results, _ = run_bench(
            BenchConfig(
                scenario=scenario,
                controllers=("static", best),
                duration_s=bench_s,
                out_dir=workdir / "bench",
                runs_dir=workdir / "bench-runs",
                command=f"tsadapt lab demo --scenario {scenario} --bench-s {bench_s:g}",
            )
        )
        status = status or (0 if all(r.status == "ok" for r in results) else 1)
    return status


def latency_demo(workdir: Path, requests_per_model: int, concurrency: int, seed: int) -> int:
    """Start the server, send real requests to each model, print latencies, stop."""
    console = Console()
    config = ServerConfig.with_free_ports(workdir=workdir)
    console.print(f"[bold]Starting TorchServe[/] in {config.workdir} ...")
    server = start(config)
    try:
        console.print(
            f"inference {server.inference_url}  management {server.management_url}  "
            f"metrics {server.metrics_url}\nplugin {server.plugins_path or 'not loaded'}  "
            f"tokens {server.key_file or 'auth off'}"
        )
        client = server.client()
        rng = np.random.default_rng(seed)
        summaries = []
        for name in server.models:
            payloads = [DEMO_MODELS[name].example(rng) for _ in range(requests_per_model)]
            send_requests(client, name, payloads[: 2 * concurrency], concurrency)  # warm-up
            summary, _ = send_requests(client, name, payloads, concurrency)
            summaries.append(summary)
        console.print(
            latency_table(
                summaries,
                f"Client-side latency, {requests_per_model} requests per model, "
                f"{concurrency} in flight",
            )
        )
        bad = client.predict("tabular", {"features": [1.0, 2.0]})
        console.print(f"a malformed request gets {bad.status_code}: {bad.json()['message']}")
        return 0 if all(s.failed == 0 for s in summaries) else 1
    finally:
        stop(config.workdir)
        console.print("[bold]TorchServe stopped.[/]")
