"""Closed loop: a fixed number of users, each sending the next request to one model as soon
as the last is answered, to measure a server's steady capacity (``tsadapt lab bench --peers``
measures every system with it before the open-loop runs). The leading underscore keeps it
out of ``locust -f loadtests`` (Locust skips such files when it loads a folder): its users
must never join an open-loop run.

    locust -f loadtests/_closedloop.py --headless -u 32 -r 32 --run-time 12s \\
        --host http://127.0.0.1:8080 --model image --warmup 2 --out cap.json

The payloads are the open-loop runs' (``PAYLOADS_PER_MODEL`` bodies drawn as the scenarios
draw them); the answers counted are those that end after ``--warmup`` seconds; at the end
``--out`` gets JSON: requests answered 2xx and failed in the measured window, its length,
req/s, p50 and p99 latency. The inference token, if any, comes from ``--server-workdir``'s
record, as in ``openloop.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import gevent
import numpy as np
from locust import FastHttpUser, constant, events, task

from tsadapt import constants as C
from tsadapt.client import KeyFile
from tsadapt.experiments.bench_schedule import PAYLOADS_PER_MODEL, REQUEST_TIMEOUT_S
from tsadapt.handlers.catalog import demo_model

STATE: dict[str, Any] = {"t0": None, "ok": [], "failed": 0, "bodies": [], "headers": {}}


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    g = parser.add_argument_group("tsadapt closed loop")
    g.add_argument("--model", required=True, help="demo model to send to")
    g.add_argument("--warmup", type=float, default=2.0, help="seconds not counted")
    g.add_argument("--out", required=True, help="JSON result path")
    g.add_argument("--server-workdir", default="", help="TorchServe record (for the token)")
    g.add_argument("--payload-seed", type=int, default=0)


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None:
        return
    model = demo_model(opts.model)
    rng = np.random.default_rng(opts.payload_seed)
    STATE["bodies"] = [json.dumps(model.example(rng)).encode() for _ in range(PAYLOADS_PER_MODEL)]
    headers = {"Content-Type": "application/json"}
    record = Path(opts.server_workdir) / C.SERVER_STATE_FILE if opts.server_workdir else None
    if record is not None and record.is_file():
        key_file = json.loads(record.read_text()).get("key_file")
        if key_file:
            headers.update(KeyFile(key_file).headers("inference"))
    STATE["headers"] = headers
    # Locust arms --run-time on gevent's cached clock; after a slow start-up on a busy box
    # that clock is stale and the limit fires at once: refresh it.
    gevent.get_hub().loop.update_now()


@events.test_start.add_listener
def _on_start(**_: Any) -> None:
    STATE["t0"] = time.perf_counter()


@events.request.add_listener
def _record(response_time: float, exception: Any, response: Any, **_: Any) -> None:
    t0 = STATE["t0"]
    opts_warm = STATE.get("warmup", 0.0)
    if t0 is None or time.perf_counter() - t0 < opts_warm:
        return
    status = int(getattr(response, "status_code", 0) or 0)
    if exception is None and 200 <= status < 300:
        STATE["ok"].append(response_time)
    else:
        STATE["failed"] += 1


@events.test_stop.add_listener
def _on_stop(environment: Any, **_: Any) -> None:
    opts = environment.parsed_options
    if STATE["t0"] is None or opts is None:
        return
    span = time.perf_counter() - STATE["t0"] - opts.warmup
    lat = np.asarray(STATE["ok"], dtype=float)
    out = {
        "model": opts.model,
        "users": opts.num_users,
        "window_s": round(span, 3),
        "ok": int(lat.size),
        "failed": int(STATE["failed"]),
        "rps": lat.size / span if span > 0 else None,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
    }
    Path(opts.out).write_text(json.dumps(out, indent=2))


class ClosedLoopUser(FastHttpUser):
    """Sends the next request as soon as the last is answered."""

    wait_time = constant(0)
    network_timeout = REQUEST_TIMEOUT_S
    connection_timeout = REQUEST_TIMEOUT_S
    max_retries = 0

    def on_start(self) -> None:
        STATE["warmup"] = float(self.environment.parsed_options.warmup)
        self.model = self.environment.parsed_options.model
        self.i = 0

    @task
    def send(self) -> None:
        bodies = STATE["bodies"]
        self.i += 1
        self.client.request(
            "POST", f"/predictions/{self.model}", name=self.model,
            data=bodies[self.i % len(bodies)], headers=STATE["headers"],
        )  # fmt: skip
