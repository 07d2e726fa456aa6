"""Open-loop request dispatch shared by the Locust scenarios in this folder.

Each scenario file defines one :class:`OpenLoopShape` subclass (its class attributes are
the workload) and imports :class:`OpenLoopDispatcher`. At start-up the arrival schedule is
computed once, from the simulator's workload classes and the seed:

* with ``--scenario NAME|PATH`` (``TSADAPT_SCENARIO``): the scenario file's per-model
  workloads, exactly the arrivals the simulator draws for that scenario and seed;
* otherwise: the shape's ``workload`` with each arrival sent to a model drawn by ``weights``.

One dispatcher user sleeps until each arrival's timestamp and fires the request in its own
greenlet (a gevent pool capped at ``MAX_IN_FLIGHT``), so slow answers never delay the
next arrival. Every request is written by the ``request`` event hook to a CSV
(``--records``, ``TSADAPT_RECORDS``): send time, scheduled time, model, client latency,
status. At the end the requests still in flight get ``REQUEST_TIMEOUT_S`` to finish
(then count as ``unfinished``) and a report prints intended against achieved rate per
model, the dispatcher's lateness and the SLO attainment; it is also saved as JSON next to
the records.

``locust -f loadtests`` (the whole folder) loads every shape; the run uses one, named by
``--shape`` (``TSADAPT_SHAPE``, default :data:`DEFAULT_SHAPE`), and ``--scenario`` replaces
its arrivals with the scenario file's. ``locust -f loadtests/<shape>.py`` loads just one.

Connection: ``--host`` (``TSADAPT_HOST`` / ``LOCUST_HOST``), else the server recorded in
``--server-workdir`` (``TSADAPT_WORKDIR``, default ``runs/server``, as ``tsadapt lab serve
start`` writes it), else ``http://127.0.0.1:8080``. The inference token comes from
``--key-file`` (``TSADAPT_KEY_FILE``), else from that server's record. Loopback only.
One run per Locust process; single process only (no ``--processes``, no workers).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import gevent
import numpy as np
from gevent.pool import Pool
from locust import FastHttpUser, LoadTestShape, events, task
from locust.env import Environment

from tsadapt import constants as C
from tsadapt.client import KeyFile
from tsadapt.experiments.bench_schedule import (
    MAX_IN_FLIGHT,
    PAYLOADS_PER_MODEL,
    RATE_TOLERANCE,
    RECORD_FIELDS,
    REQUEST_TIMEOUT_S,
    UNFINISHED,
    Schedule,
    check_loopback,
    dispatch,
    mix_schedule,
    parse_weights,
    rate_checks,
    record_row,
    records_from_rows,
    resolve_scenario,
    scenario_schedule,
    workload_of,
)
from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.policy.sim.metrics import summarize
from tsadapt.policy.sim.scenario import load_scenario

logger = logging.getLogger("openloop")
#: The shape a run of the whole folder uses unless ``--shape`` names another.
DEFAULT_SHAPE = "bursty"


class OpenLoopShape(LoadTestShape):
    """Base of the scenario shapes: the class attributes define the workload.

    ``tick()`` depends only on the elapsed time: one dispatcher user until
    ``duration_s + stop_grace_s``, then ``None`` (stop). ``--run-time`` is a hard cap.
    """

    abstract = True
    use_common_options = True  # honour --run-time as an extra bound

    #: Length of the run (s); ``--duration`` / ``TSADAPT_DURATION`` overrides it.
    duration_s: ClassVar[float] = 60.0
    #: Workload in the simulator's format: ``{"kind": ..., **params}`` or a list (superposed).
    workload: ClassVar[dict[str, Any] | list[dict[str, Any]]] = {"kind": "poisson", "rate": 20}
    #: Share of the arrivals per model (normalised); ``--weights`` overrides it.
    weights: ClassVar[dict[str, float]] = {"tabular": 0.7, "text": 0.2, "image": 0.1}
    #: SLO (ms) per model that the shapes' summaries score against (a scenario file, given
    #: with ``--scenario``, states its own instead).
    slo_ms: ClassVar[dict[str, float]] = {"image": 200.0, "text": 150.0, "tabular": 50.0}
    #: Seed of the arrival draws (``--seed`` / ``TSADAPT_SEED`` overrides it).
    seed: ClassVar[int] = 0
    #: Upper bound on the requests of the run (``--max-requests`` lowers it).
    max_requests: ClassVar[int] = 20_000
    #: Seconds the shape keeps running after ``duration_s`` (dispatcher start-up lag).
    stop_grace_s: ClassVar[float] = 2.0

    def tick(self) -> tuple[int, float] | None:
        if self.get_run_time() >= RUN.duration_s + self.stop_grace_s:
            return None
        return (1, 1.0)


# --------------------------------------------------------------------------- run state


@dataclass
class _Run:
    """State of the one run of this process."""

    schedule: Schedule | None = None
    payloads: dict[str, list[bytes]] = field(default_factory=dict)
    keys: KeyFile | None = None
    records_path: Path | None = None
    rows: list[list[str]] = field(default_factory=list)
    writer: Any = None
    fh: Any = None
    pool: Pool | None = None
    t0: float | None = None
    in_flight: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    dispatched: int = 0
    started: bool = False
    finished: bool = False

    @property
    def duration_s(self) -> float:
        return self.schedule.duration_s if self.schedule else 0.0

    def write(self, row: list[str]) -> None:
        self.rows.append(row)
        if self.writer is not None:
            self.writer.writerow(row)


RUN = _Run()


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def _add_options(parser: Any) -> None:
    g = parser.add_argument_group("tsadapt open-loop scenario")
    g.add_argument("--scenario", default=_env("TSADAPT_SCENARIO"), help="scenario name or YAML")
    g.add_argument(
        "--shape",
        default=_env("TSADAPT_SHAPE", DEFAULT_SHAPE),
        help="the shape to run when several are loaded (locust -f loadtests): "
        "bursty, diurnal, step or trace (default: %(default)s)",
    )
    g.add_argument(
        "--server-workdir",
        default=_env("TSADAPT_WORKDIR", str(C.DEFAULT_WORKDIR)),
        help="workdir of 'tsadapt lab serve start' (host and key file)",
    )
    g.add_argument("--key-file", default=_env("TSADAPT_KEY_FILE"), help="TorchServe key_file.json")
    g.add_argument("--records", default=_env("TSADAPT_RECORDS"), help="per-request CSV path")
    g.add_argument("--duration", default=_env("TSADAPT_DURATION"), help="run length (s)")
    g.add_argument("--seed", default=_env("TSADAPT_SEED"), help="arrival seed")
    g.add_argument("--max-requests", default=_env("TSADAPT_MAX_REQUESTS"), help="request cap")
    g.add_argument("--weights", default=_env("TSADAPT_WEIGHTS"), help="e.g. tabular=0.7,text=0.3")


def _server_record(workdir: str) -> dict[str, Any] | None:
    path = Path(workdir) / C.SERVER_STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def build_schedule(shape: type[OpenLoopShape] | OpenLoopShape, options: Any) -> Schedule:
    """The run's schedule from the shape's attributes and the options."""
    duration = float(options.duration) if options.duration else None
    seed = int(options.seed) if options.seed else None
    requested = int(options.max_requests) if options.max_requests else None
    if options.scenario:
        # A scenario replays its own arrivals whole (the bench counts every one of them):
        # the shape's cap is for the shape's own mix, so only --max-requests bounds it here.
        scenario = load_scenario(resolve_scenario(options.scenario))
        return scenario_schedule(scenario, seed, duration, requested)
    cap = min(requested, shape.max_requests) if requested else shape.max_requests
    weights = parse_weights(options.weights) if options.weights else dict(shape.weights)
    unknown = sorted(set(weights) - set(DEMO_MODELS))
    if unknown:
        raise ValueError(f"weights: unknown model(s) {unknown}; known: {list(DEMO_MODELS)}")
    return mix_schedule(
        workload_of(shape.workload),
        weights,
        duration if duration is not None else shape.duration_s,
        seed if seed is not None else shape.seed,
        cap,
        slo_ms=shape.slo_ms,
    )


def choose_shape(available: dict[str, Any], name: str) -> Any:
    """The shape ``--shape NAME`` names among those Locust loaded (``bursty`` or
    ``BurstyShape``); ``ValueError`` naming the choices when none matches."""
    wanted = name.strip().lower().removesuffix("shape")
    for cls_name, shape in available.items():
        if cls_name.lower().removesuffix("shape") == wanted:
            return shape
    known = ", ".join(sorted(c.lower().removesuffix("shape") for c in available))
    raise ValueError(f"--shape {name!r}: no such shape loaded; loaded: {known}")


def _on_init(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    shape = environment.shape_class
    if opts is None or shape is None:
        return
    available = environment.available_shape_classes or {}
    if len(available) > 1:  # a folder: Locust's pick is the file system's order, so choose
        try:
            shape = choose_shape(available, opts.shape)
        except ValueError as exc:
            sys.exit(f"openloop: error: {exc}")
        shape.runner = environment.runner
        environment.shape_class = shape
        logger.info("open loop: shape %s of %d (--shape)", type(shape).__name__, len(available))
    record = _server_record(opts.server_workdir)
    host = environment.host or _env("TSADAPT_HOST") or (record or {}).get("inference_url")
    environment.host = check_loopback(host or f"http://{C.LOOPBACK}:{C.DEFAULT_INFERENCE_PORT}")
    key_file = opts.key_file or (record or {}).get("key_file")
    RUN.keys = KeyFile(key_file) if key_file else None
    RUN.schedule = build_schedule(shape, opts)
    rng = np.random.default_rng(RUN.schedule.seed)
    RUN.payloads = {
        m: [json.dumps(DEMO_MODELS[m].example(rng)).encode() for _ in range(PAYLOADS_PER_MODEL)]
        for m in RUN.schedule.models
    }
    stem = Path(sys.argv[0]).stem if not opts.locustfile else Path(opts.locustfile).stem
    default = Path("runs/loadtests") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    RUN.records_path = Path(opts.records) if opts.records else default
    RUN.records_path.parent.mkdir(parents=True, exist_ok=True)
    RUN.fh = RUN.records_path.open("w", newline="")
    RUN.writer = csv.writer(RUN.fh)
    RUN.writer.writerow(RECORD_FIELDS)
    RUN.pool = Pool(MAX_IN_FLIGHT)
    s = RUN.schedule
    logger.info(
        "open loop: %d requests over %.0f s to %s (%s), records -> %s",
        len(s),
        s.duration_s,
        environment.host,
        ", ".join(f"{m} {s.intended_mean_rate(m):.1f}/s" for m in s.models),
        RUN.records_path,
    )
    gevent.spawn(_flusher)


def _flusher() -> None:
    while not RUN.finished:
        gevent.sleep(1.0)
        if RUN.fh is not None and not RUN.fh.closed:
            RUN.fh.flush()


def _record(
    response_time: float,
    response: Any,
    context: dict[str, Any],
    exception: Any,
    start_time: float,
    **_: Any,
) -> None:
    """Write one per-request record (only the dispatcher's requests carry ``scheduled_s``)."""
    if RUN.finished or "scheduled_s" not in context:
        return
    status = int(getattr(response, "status_code", 0) or 0)
    ok = exception is None and 200 <= status < 300
    RUN.in_flight.pop(context["index"], None)
    RUN.write(
        record_row(
            start_time,
            context["scheduled_s"],
            context["sent_s"],
            context["model"],
            response_time,
            status,
            ok,
            "" if exception is None else f"{type(exception).__name__}: {exception}",
        )
    )


class OpenLoopDispatcher(FastHttpUser):
    """Sends the precomputed schedule, each request in its own greenlet (open loop)."""

    fixed_count = 1
    concurrency = MAX_IN_FLIGHT
    network_timeout = REQUEST_TIMEOUT_S
    connection_timeout = REQUEST_TIMEOUT_S
    max_retries = 0

    def _send(self, i: int, scheduled_s: float) -> None:
        s = RUN.schedule
        assert s is not None and RUN.t0 is not None
        model = s.model_of(i)
        headers = {"Content-Type": "application/json"}
        if RUN.keys is not None:
            headers.update(RUN.keys.headers("inference"))
        sent_s = time.perf_counter() - RUN.t0
        RUN.in_flight[i] = (time.time(), scheduled_s, sent_s)
        bodies = RUN.payloads[model]
        self.client.request(
            "POST",
            f"/predictions/{model}",
            name=model,
            data=bodies[i % len(bodies)],
            headers=headers,
            context={"index": i, "scheduled_s": scheduled_s, "sent_s": sent_s, "model": model},
        )

    @task
    def run_schedule(self) -> None:
        if RUN.started or RUN.schedule is None or RUN.pool is None:
            gevent.sleep(3600)  # only the first dispatcher of the run sends
            return
        RUN.started = True
        pool = RUN.pool
        RUN.t0 = time.perf_counter()
        RUN.dispatched = dispatch(
            RUN.schedule.times,
            lambda i, t: pool.spawn(self._send, i, t),
            time.perf_counter,
            gevent.sleep,
            t0=RUN.t0,
        )
        pool.join(timeout=REQUEST_TIMEOUT_S)
        gevent.sleep(3600)  # idle until the shape stops the run


# --------------------------------------------------------------------------- report


def _finish_run() -> None:
    if RUN.finished or RUN.schedule is None:
        return
    if RUN.pool is not None:
        RUN.pool.join(timeout=REQUEST_TIMEOUT_S)
    for i, (epoch, sched, sent) in sorted(RUN.in_flight.items()):
        RUN.write(
            record_row(epoch, sched, sent, RUN.schedule.model_of(i), None, 0, False, UNFINISHED)
        )
    RUN.in_flight.clear()
    if RUN.pool is not None:
        RUN.pool.kill(block=False)
    RUN.finished = True
    if RUN.fh is not None:
        RUN.fh.close()
    report = summary(RUN.schedule, RUN.rows)
    assert RUN.records_path is not None
    RUN.records_path.with_suffix(".summary.json").write_text(json.dumps(report, indent=2))
    print(format_summary(report, RUN.records_path), flush=True)


def _on_test_stop(**_: Any) -> None:
    _finish_run()


def _on_quitting(**_: Any) -> None:
    _finish_run()


def _clean(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, 3)


def summary(schedule: Schedule, rows: list[list[str]]) -> dict[str, Any]:
    """Rates, lateness and SLO figures of a finished run (JSON-ready)."""
    rec = records_from_rows(rows)
    out: dict[str, Any] = {
        "duration_s": schedule.duration_s,
        "seed": schedule.seed,
        "truncated": schedule.truncated,
        "tolerance": RATE_TOLERANCE,
        "rates": [],
        "slo": [],
    }
    for rc in rate_checks(schedule, rec):
        d = {k: _clean(v) if isinstance(v, float) else v for k, v in asdict(rc).items()}
        d["scheduled_rps"] = _clean(rc.scheduled_rps)
        d["error_vs_intended"] = _clean(rc.error_vs_intended)
        d["error_vs_scheduled"] = _clean(rc.error_vs_scheduled)
        d["within_tolerance"] = rc.within()
        out["rates"].append(d)
    for m in schedule.models:
        r = rec.of(m)
        res = summarize(
            m,
            r.latency_ms[r.ok],
            schedule.slo_ms.get(m, math.inf),
            len(r),
            schedule.duration_s,
            rejected=int((r.status == 503).sum()),
            failed=int((~r.ok & (r.status != 503)).sum()),
        )
        out["slo"].append(
            {k: _clean(v) if isinstance(v, float) else v for k, v in res.as_dict().items()}
        )
    return out


def format_summary(report: dict[str, Any], records_path: Path) -> str:
    """The end-of-run report: intended against achieved rate, lateness, SLO."""
    lines = [
        "",
        f"open-loop report ({report['duration_s']:.0f} s, seed {report['seed']}), "
        f"records: {records_path}",
        f"{'model':<8} {'intended/s':>10} {'scheduled':>9} {'sent':>7} {'sched./s':>9} "
        f"{'achieved/s':>10} {'vs sched.':>9} {'vs int.':>8} {'late p50':>8} {'p99 ms':>7} "
        f"{'max ms':>7}  within {100 * report['tolerance']:.0f}%",
    ]
    for r in report["rates"]:
        lines.append(
            f"{r['model']:<8} {r['intended_rps']:>10.2f} {r['scheduled']:>9d} {r['sent']:>7d} "
            f"{r['scheduled_rps']:>9.2f} {r['achieved_rps']:>10.2f} "
            f"{100 * (r['error_vs_scheduled'] or 0):>+8.1f}% "
            f"{100 * (r['error_vs_intended'] or 0):>+7.1f}% "
            f"{r['lateness_p50_ms'] or 0:>8.2f} {r['lateness_p99_ms'] or 0:>7.2f} "
            f"{r['lateness_max_ms'] or 0:>7.1f}  {'yes' if r['within_tolerance'] else 'NO'}"
        )
    lines.append(
        f"{'model':<8} {'SLO ms':>7} {'requests':>8} {'failed':>6} {'503':>5} {'SLO att.':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8}"
    )
    for s in report["slo"]:
        lines.append(
            f"{s['name']:<8} {s['slo_ms']:>7.0f} {s['requests']:>8d} {s['failed']:>6d} "
            f"{s['rejected']:>5d} {100 * s['slo_attainment']:>7.1f}% "
            f"{s['p50_ms'] or float('nan'):>8.1f} {s['p99_ms'] or float('nan'):>8.1f}"
        )
    return "\n".join(lines)


def _register_hooks() -> None:
    """Add the options and event hooks, once per process: ``locust -f loadtests`` loads this
    file itself after the shapes imported it, and a second copy must not add them again."""
    if getattr(events, "_tsadapt_openloop", False):
        return
    events._tsadapt_openloop = True
    events.init_command_line_parser.add_listener(_add_options)
    events.init.add_listener(_on_init)
    events.request.add_listener(_record)
    events.test_stop.add_listener(_on_test_stop)
    events.quitting.add_listener(_on_quitting)


_register_hooks()
