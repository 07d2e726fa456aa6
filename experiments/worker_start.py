"""``tsadapt lab fidelity load-delay``: how long a new worker takes to serve, on the real server.

For each demo model, on a fresh TorchServe (free loopback ports, token auth, the plugin):

* **register**: the management API's ``POST /models`` (``initial_workers=1``, asynchronous),
  then ``describe`` polled every :data:`POLL_S` until the worker is ``READY``;
* **scale-up**: ``PUT /models/NAME`` from 1 to 2 workers (asynchronous), polled until both
  are ``READY``; then back to 1 and :data:`SETTLE_S` of quiet before the next repeat.

Each time runs from the request to the first poll that sees the worker ``READY`` (process
start, handler import, model load and the handler's warm-up: what a worker does before it
serves). The scale-up median is the simulator's ``load_delay_s`` for the model (the seconds
from a scale-up call until the new worker serves); the command writes it into the fidelity
calibration file as well, which the calibrated scenarios read.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tsadapt.constants import RESULTS_DIR
from tsadapt.markdown import rel, table

#: Seconds between two ``describe`` calls while waiting for READY.
POLL_S = 0.02
#: Seconds of quiet after scaling back down, before the next repeat.
SETTLE_S = 1.0
#: Longest wait for a worker (a worker that takes longer is a failed measurement).
TIMEOUT_S = 120.0
#: How the times are taken (the report's method paragraph).
METHOD = f"""
For each demo model, on a fresh TorchServe (free loopback ports, token auth, the plugin):
*register* is the management API's `POST /models` (`initial_workers=1`, asynchronous),
then `describe` polled every {POLL_S * 1000:.0f} ms until the worker is `READY`; *scale-up*
is `PUT /models/NAME` from 1 to 2 workers (asynchronous), polled until both are `READY`,
then back to 1 and {SETTLE_S:g} s of quiet. Each time runs from the request to the first
poll that sees the worker `READY` (process start, handler import, model load and the
handler's warm-up).
"""
RESULT_FILE = "worker-start.json"
REPORT_FILE = "worker-start.md"
DEFAULT_RUNS = Path("runs/worker-start")


@dataclass(frozen=True)
class StartTimes:
    """One model's measured times (s), request to READY."""

    model: str
    register_s: list[float]
    scale_up_s: list[float]

    @property
    def load_delay_s(self) -> float:
        """The simulator's ``load_delay_s``: the median scale-up time."""
        return round(statistics.median(self.scale_up_s), 3)


def ready_workers(client: Any, model: str) -> int:
    """Workers of ``model`` the management API reports READY."""
    return sum(w.get("status") == "READY" for w in client.describe(model).get("workers", []))


def wait_ready(client: Any, model: str, count: int, started: float) -> float:
    """Seconds from ``started`` (``perf_counter``) until ``count`` workers are READY."""
    while time.perf_counter() - started < TIMEOUT_S:
        try:
            if ready_workers(client, model) >= count:
                return time.perf_counter() - started
        except Exception:  # noqa: BLE001 - the model may not be described yet
            pass
        time.sleep(POLL_S)
    raise RuntimeError(f"{model}: {count} worker(s) not READY within {TIMEOUT_S:.0f} s")


def measure_model(client: Any, name: str, repeats: int) -> StartTimes:
    """``repeats`` registrations and scale-ups of ``name`` (registered at the end, 1 worker)."""
    from tsadapt.handlers.catalog import DEMO_MODELS

    model = DEMO_MODELS[name]
    register, scale = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        client.checked(
            "management", "POST", "models",
            params={
                "url": f"{name}.mar", "model_name": name, "batch_size": model.batch_size,
                "max_batch_delay": model.max_batch_delay_ms, "initial_workers": 1,
                "synchronous": "false",
            },
        )  # fmt: skip
        register.append(round(wait_ready(client, name, 1, started), 3))
        started = time.perf_counter()
        client.scale_workers(name, 2, synchronous=False)
        scale.append(round(wait_ready(client, name, 2, started), 3))
        client.scale_workers(name, 1, synchronous=True)
        time.sleep(SETTLE_S)
        client.checked("management", "DELETE", f"models/{name}")
        time.sleep(SETTLE_S)
    return StartTimes(name, register, scale)


def measure(
    models: list[str], repeats: int, runs_dir: Path, on_model: Callable[[StartTimes], None]
) -> list[StartTimes]:
    """Start a fresh server with no model registered and measure each of ``models``."""
    from tsadapt.serve.archive import archive_all
    from tsadapt.serve.server import ServerConfig, start, stop

    store = runs_dir / "model-store"
    store.mkdir(parents=True, exist_ok=True)
    archive_all(store, models)
    workdir = runs_dir / time.strftime("%Y%m%d-%H%M%S")
    config = ServerConfig.with_free_ports(workdir=workdir, model_store=store, models=())
    server = start(config)
    try:
        client = server.client(timeout_s=60)
        out = []
        for name in models:
            out.append(measure_model(client, name, repeats))
            on_model(out[-1])
        return out
    finally:
        stop(config.workdir)


def write_results(
    times: list[StartTimes],
    out_dir: Path,
    command: str,
    calibration: Path | None,
    load_average: tuple[float, float, float] | None = None,
    generated: str | None = None,
) -> tuple[Path, Path]:
    """``worker-start.json`` and ``.md`` in ``out_dir``; each model's ``load_delay_s`` into
    ``calibration`` (a ``tsadapt lab fidelity calibrate`` file) when given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    )
    doc = {
        "command": command,
        "generated": generated or time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine,
        "load_average_at_start": list(load_average) if load_average else None,
        "method": " ".join(METHOD.split()),
        "models": {t.model: {**asdict(t), "load_delay_s": t.load_delay_s} for t in times},
    }
    js = out_dir / RESULT_FILE
    js.write_text(json.dumps(doc, indent=1) + "\n")
    rows = [
        [
            t.model,
            f"{statistics.median(t.register_s):.2f}",
            f"{min(t.register_s):.2f}-{max(t.register_s):.2f}",
            f"{statistics.median(t.scale_up_s):.2f}",
            f"{min(t.scale_up_s):.2f}-{max(t.scale_up_s):.2f}",
            str(len(t.scale_up_s)),
        ]
        for t in times
    ]
    header = ["model", "register s (median)", "register range", "scale-up s (median)",
              "scale-up range", "repeats"]  # fmt: skip
    lines = [
        "# Worker start delay on the real TorchServe",
        "",
        f"Generated by `{command}` on {doc['generated']}. Machine: {machine}"
        + (
            f"; load average {load_average[0]:.1f} when it started (other processes share "
            "the cores: a busy box starts workers slower)."
            if load_average
            else "."
        ),
        "",
        METHOD.strip(),
        "",
        *table(header, rows),
        "",
        "The simulator's `load_delay_s` per model is the scale-up median "
        f"({', '.join(f'{t.model} {t.load_delay_s:.2f} s' for t in times)}); it replaced the "
        "unmeasured default of 1 s in the calibration the calibrated scenarios read"
        + (f" (`{rel(calibration)}`)." if calibration is not None else "."),
    ]
    md = out_dir / REPORT_FILE
    md.write_text("\n".join(lines) + "\n")
    if calibration is not None:
        record_in_calibration(calibration, times, rel(js))
    return js, md


def record_in_calibration(path: Path, times: list[StartTimes], source: str) -> None:
    """Set each measured model's ``load_delay_s`` in the calibration file ``path``."""
    doc = json.loads(path.read_text())
    add_load_delays(doc, {t.model: t.load_delay_s for t in times}, source)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def add_load_delays(doc: dict[str, Any], delays: dict[str, float], source: str) -> None:
    """``doc`` (a calibration document) with each of its models' measured ``load_delay_s``."""
    for name, entry in doc.get("models", {}).items():
        if name in delays:
            entry["load_delay_s"] = delays[name]
    doc["load_delay_source"] = source


def times_from_json(path: Path) -> tuple[list[StartTimes], dict[str, Any]]:
    """The measured times of a ``worker-start.json`` and the document (to render it again)."""
    doc = json.loads(path.read_text())
    times = [
        StartTimes(name, list(m["register_s"]), list(m["scale_up_s"]))
        for name, m in doc["models"].items()
    ]
    return times, doc


def measured_load_delays(path: Path = RESULTS_DIR / RESULT_FILE) -> dict[str, float]:
    """Each model's ``load_delay_s`` from a ``worker-start.json`` (empty if there is none)."""
    if not path.is_file():
        return {}
    return {k: float(v["load_delay_s"]) for k, v in json.loads(path.read_text())["models"].items()}
