"""``tsadapt lab reliability``: every fault of :mod:`.fault_cases` against a real TorchServe under
load with the PPO controller, one after the other; writes ``reliability.md`` and
``reliability.json`` (one row per fault: requests sent, answered, shed, failed otherwise,
recovery time, what the controller did, and which checks held)."""

from __future__ import annotations

import json
import math
import os
import platform
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from tsadapt.experiments.fault_cases import FAULTS, FaultEnv, start_server
from tsadapt.experiments.fault_harness import CONTROLLER, MODEL, FaultResult
from tsadapt.markdown import table

DEFAULT_OUT = Path("docs/results")
DEFAULT_RUNS = Path("runs/reliability")


def render(out_dir: Path) -> Path:
    """Rewrite ``reliability.md`` (and the JSON) from ``reliability.json`` in ``out_dir``."""
    doc, rows = load_results(out_dir / "reliability.json")
    return write(rows, out_dir, doc["command"], doc["load_average_before"],
                 doc["load_average_after"], doc["date"])  # fmt: skip


def run_reliability(
    out_dir: Path,
    runs_dir: Path,
    command: str,
    faults: Sequence[str] = tuple(FAULTS),
    model_store: Path | None = None,
    on_progress: Callable[[str], None] = print,
) -> list[FaultResult]:
    """Run ``faults`` on one shared server (the ones that need their own start it); write the
    report; return the rows."""
    from tsadapt.serve.server import ServerConfig, stop

    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise ValueError(f"--faults: unknown {unknown}; known: {', '.join(FAULTS)}")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    tmp = (runs_dir / stamp).resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    store = (model_store or runs_dir / "model-store").resolve()
    config = ServerConfig.with_free_ports(workdir=tmp / "ts", model_store=store, models=(MODEL,))
    server = start_server(config)
    results = []
    load_before = os.getloadavg()
    try:
        env = FaultEnv(server, config, tmp, store)
        for name in faults:
            on_progress(f"fault {name} ...")
            try:
                env.reset()
                row = FAULTS[name](env)
            except Exception as exc:  # noqa: BLE001 - a broken run is a row, not a crash
                row = FaultResult(name, checks={"the run completed": False})
                row.details = {"error": f"{type(exc).__name__}: {exc}",
                               "traceback": traceback.format_exc()[-2000:]}  # fmt: skip
            on_progress(f"  {'ok' if row.ok else 'NOT ok'}: {row.controller[:120]}")
            results.append(row)
    finally:
        stop(config.workdir)
    write(results, out_dir, command, load_before, os.getloadavg())
    return results


def relative_paths(text: str) -> str:
    """``text`` with this checkout's absolute path removed (reports name relative paths)."""
    return text.replace(str(Path.cwd().resolve()) + "/", "")


def load_results(path: Path) -> tuple[dict, list[FaultResult]]:
    """A written ``reliability.json``: its header and its rows."""
    doc = json.loads(Path(path).read_text())
    rows = []
    for d in doc["faults"]:
        d = {k: v for k, v in d.items() if k != "ok"}
        d["recovery_s"] = math.nan if d.get("recovery_s") is None else d["recovery_s"]
        rows.append(FaultResult(**d))
    return doc, rows


def _fmt_recovery(r: FaultResult) -> str:
    if not math.isfinite(r.recovery_s):
        return r.recovery or "n/a"
    return f"{r.recovery_s:.2f} s ({r.recovery})"


def write(results: Sequence[FaultResult], out_dir: Path, command: str,
          load_before: Sequence[float], load_after: Sequence[float],
          date: str | None = None) -> Path:  # fmt: skip
    """``reliability.md`` and ``reliability.json`` in ``out_dir``; the markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    date = date or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    doc = {
        "command": command,
        "date": date,
        "host": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": load_before,
        "load_average_after": load_after,
        "controller_config": CONTROLLER,
        "faults": [r.as_dict() for r in results],
    }
    text = relative_paths(json.dumps(doc, indent=1, default=str))
    (out_dir / "reliability.json").write_text(text + "\n")
    lines = [
        "# Reliability: faults injected into a real TorchServe under load",
        "",
        f"Written by `{command}` on {date}.",
        "",
        f"Each fault hits a real TorchServe 0.12 (token auth on, the tsadapt plugin loaded) "
        f"serving `{MODEL}` under open-loop Poisson load from 127.0.0.1 while the controller "
        "sidecar runs the shipped PPO policy (the unregister case drives the real sidecar with "
        "a one-step scale-up policy, so that the change is in flight at a known moment). "
        "'shed' are 503 answers (the job queue full: deliberate); 'failed' is every other "
        "non-200 outcome, by status in the details. Checks are the conditions each run must "
        "meet (the same ones `tests/test_faults_server.py` asserts).",
        "",
        f"Machine: {doc['host']}; 1-minute load average {load_before[0]:.1f} before the runs "
        f"and {load_after[0]:.1f} after (other processes' load lengthens latencies and "
        "recovery times).",
        "",
    ]
    lines += table(
        ["fault", "sent", "answered", "shed (503)", "failed otherwise", "recovery",
         "what the controller did", "checks"],
        [[r.fault, str(r.sent), str(r.answered), str(r.shed), str(r.failed),
          _fmt_recovery(r), r.controller.replace("|", "/"),
          f"{sum(r.checks.values())}/{len(r.checks)}" + ("" if r.ok else " **not met**")]
         for r in results],
    )  # fmt: skip
    lines += ["", "## Details", ""]
    for r in results:
        lines += [f"### {r.fault}", ""]
        lines += [f"- {'met' if ok else '**not met**'}: {name}" for name, ok in r.checks.items()]
        if r.failed_by_status:
            lines.append(f"- failed, by status: {r.failed_by_status}")
        shown = {k: v for k, v in r.details.items() if k != "traceback"}
        if shown:
            lines.append(f"- details: `{json.dumps(shown, default=str)}`")
        lines.append("")
    md = out_dir / "reliability.md"
    md.write_text(relative_paths("\n".join(lines)) + "\n")
    return md
