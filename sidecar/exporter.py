"""The sidecar's own Prometheus metrics, served as text on ``/metrics`` (loopback by default).

Besides per-model gauges it exports the pod's *capacity demand*
(:func:`capacity_demand`): the workers its models want, against the workers the pod may run.
A pod autoscaler that targets a demand ratio of 1 adds pods only once adaptation inside the
pod has run out of room (:data:`DEMAND_RATIO` above 1, :data:`SHORTFALL` above 0).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tsadapt import constants as C
from tsadapt.policy.controller_config import ControllerConfig
from tsadapt.policy.types import Action, Observation

PREFIX = "tsadapt_controller"
_HELP = {
    "controlled": ("gauge", "1 if the controller may change the model, 0 if it only observes"),
    "slo_attainment": ("gauge", "Share of requests within the SLO over the window"),
    "p99_ms": ("gauge", "p99 latency (ms) over the window"),
    "batch_size": ("gauge", "Configured batch size"),
    "max_batch_delay_ms": ("gauge", "Configured max batch delay (ms)"),
    "workers": ("gauge", "Configured workers"),
    "overrides_total": ("counter", "Policy proposals changed by a guard"),
    "apply_failures_total": ("counter", "Changes that failed after all retries"),
    "wanted_workers": ("gauge", "Workers the model wants (see capacity_demand)"),
}
#: Pod-level series (no labels) that the Kubernetes autoscalers query.
DEMAND_RATIO = f"{PREFIX}_capacity_demand_ratio"
SHORTFALL = f"{PREFIX}_capacity_shortfall_workers"
_POD_HELP = {
    DEMAND_RATIO: "Workers the pod's models want / workers the pod may run (above 1: short)",
    SHORTFALL: "Workers wanted beyond what the pod may run (its budget and per-model limits)",
}


@dataclass(frozen=True)
class CapacityDemand:
    """One tick's demand: per-model wanted workers, and the pod's room for them."""

    wanted: dict[str, int]
    capacity: int
    shortfall: int

    @property
    def ratio(self) -> float:
        """Wanted / capacity; 0 when nothing is controlled (e.g. a restarted server that has
        not registered its models yet), where the pod neither wants nor has room."""
        total = sum(self.wanted.values())
        if self.capacity <= 0:
            return math.inf if total else 0.0
        return total / self.capacity


def capacity_demand(
    observation: Observation,
    config: ControllerConfig,
    proposed: Iterable[Action] = (),
    emergencies: Iterable[str] = (),
) -> CapacityDemand:
    """How many workers each model wants, and how many of them the pod cannot give.

    A model wants the most of: its current workers; what the policy proposed (before the
    guards cut it to the bounds and budgets); one more in an emergency; and, when it is
    saturated (a queue, and arrivals above completions), ``workers x arrivals / completions``,
    the workers that would serve its arrival rate at the current per-worker throughput.
    The pod can run ``min(worker_budget, sum of max_workers)``; the shortfall is what is
    wanted beyond each model's ``max_workers`` plus what the rest exceeds the budget by.
    """
    asked = {a.model: a.workers for a in proposed if a.workers is not None}
    urgent = set(emergencies)
    wanted: dict[str, int] = {}
    inside = beyond = 0
    observed = {m.name for m in observation.models}
    for lim in config.models:
        if lim.name not in observed:  # configured but not registered (now): wants nothing
            continue
        m = observation.model(lim.name)
        w = m.settings.workers
        want = max(w, asked.get(lim.name, w), w + 1 if lim.name in urgent else w)
        arr, done = m.arrival_rate_rps, m.completion_rate_rps
        if m.queue_depth > 0 and done > 0 and arr > done and math.isfinite(arr):
            want = max(want, math.ceil(w * arr / done - 1e-9))
        wanted[lim.name] = want
        inside += min(want, lim.max_workers)
        beyond += max(0, want - lim.max_workers)
    capacity = min(config.worker_budget, sum(lim.max_workers for lim in config.models))
    return CapacityDemand(wanted, capacity, beyond + max(0, inside - config.worker_budget))


class MetricsExporter:
    """Holds the latest values and serves them; ``port=0`` picks a free port."""

    def __init__(
        self, port: int = 0, host: str = C.LOOPBACK, config: ControllerConfig | None = None
    ) -> None:
        self._lock = threading.Lock()
        self.host = host
        self.config = config
        self._pod: dict[str, float] = {}
        self._gauges: dict[tuple[str, str], float] = {}
        self._counters: dict[tuple[str, str], float] = {}
        self._ticks = 0
        self._server_up = 0
        self._last_tick = time.monotonic()
        #: the loop counts as stuck after this long without a tick
        self.stall_s = max(30.0, 10 * config.tick_s) if config is not None else 30.0
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?")[0]
                if path in ("/ready", "/live"):
                    ok, why = exporter.ready() if path == "/ready" else exporter.live()
                    body = (why + "\n").encode()
                    self.send_response(200 if ok else 503)
                elif path == "/metrics":
                    body = exporter.render().encode()
                    self.send_response(200)
                else:
                    self.send_error(404)
                    return
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer((host, port), Handler)
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(
            target=self._http.serve_forever, daemon=True, name="tsadapt-exporter"
        )
        self._thread.start()

    def ready(self) -> tuple[bool, str]:
        """Probe ``/ready``: the last tick reached TorchServe and every model it serves has
        a worker (a Kubernetes readiness probe keeps the pod out of the Service until then)."""
        with self._lock:
            if not self._server_up:
                return False, "TorchServe not reached at the last tick"
            idle = sorted(m for (k, m), v in self._gauges.items() if k == "workers" and v < 1)
        if idle:
            return False, f"no worker for {', '.join(idle)}"
        return True, "ready"

    def live(self) -> tuple[bool, str]:
        """Probe ``/live``: the control loop ticked within :attr:`stall_s` (a stuck loop is
        restarted by the liveness probe; a lost TorchServe is not a stuck loop)."""
        with self._lock:
            age = time.monotonic() - self._last_tick
        if age > self.stall_s:
            return False, f"no tick for {age:.0f} s"
        return True, "live"

    @property
    def url(self) -> str:
        shown = C.LOOPBACK if self.host in ("", "0.0.0.0", "::") else self.host
        return f"http://{shown}:{self.port}/metrics"

    def update(
        self,
        observation: Observation | None,
        overrides: dict[str, int],
        failures: dict[str, int],
        controlled: Iterable[str] | None = None,
        proposed: Iterable[Action] = (),
        emergencies: Iterable[str] = (),
        config: ControllerConfig | None = None,
    ) -> None:
        """Record one tick (``observation`` None when the server was unreachable);
        ``controlled`` names the models the controller may change (default: all observed).

        With a config (``config``, the one in force this tick, else the exporter's), also
        the pod's :func:`capacity_demand` from the observation and the policy's ``proposed``
        actions and the guards' ``emergencies`` of this tick.
        """
        demand = None
        cfg = config if config is not None else self.config
        if observation is not None and cfg is not None:
            demand = capacity_demand(observation, cfg, proposed, emergencies)
        with self._lock:
            self._last_tick = time.monotonic()
            if demand is not None:
                self._pod = {DEMAND_RATIO: demand.ratio, SHORTFALL: float(demand.shortfall)}
                for name, n in demand.wanted.items():
                    self._gauges[("wanted_workers", name)] = float(n)
            self._ticks += 1
            self._server_up = int(observation is not None)
            if observation is not None:
                names = {m.name for m in observation.models}
                mine = names if controlled is None else set(controlled)
                # a model unregistered since the last tick leaves no stale series
                self._gauges = {k: v for k, v in self._gauges.items() if k[1] in names}
                for m in observation.models:
                    values = {
                        "controlled": float(m.name in mine),
                        "slo_attainment": m.slo_attainment,
                        "p99_ms": m.p99_ms,
                        **{k: float(v) for k, v in m.settings.as_dict().items()},
                    }
                    for key, value in values.items():
                        self._gauges[(key, m.name)] = value
            for model, n in overrides.items():
                key = ("overrides_total", model)
                self._counters[key] = self._counters.get(key, 0) + n
            for model, n in failures.items():
                key = ("apply_failures_total", model)
                self._counters[key] = self._counters.get(key, 0) + n

    def render(self) -> str:
        with self._lock:
            series = {**self._gauges, **self._counters}
            lines = [
                f"# TYPE {PREFIX}_ticks_total counter",
                f"{PREFIX}_ticks_total {self._ticks}",
                f"# TYPE {PREFIX}_server_up gauge",
                f"{PREFIX}_server_up {self._server_up}",
            ]
            for name, value in sorted(self._pod.items()):
                lines += [
                    f"# HELP {name} {_POD_HELP[name]}",
                    f"# TYPE {name} gauge",
                    f"{name} {float(value)!r}",
                ]
        for metric, (kind, text) in _HELP.items():
            rows = sorted((m, v) for (k, m), v in series.items() if k == metric)
            if not rows:
                continue
            lines += [f"# HELP {PREFIX}_{metric} {text}", f"# TYPE {PREFIX}_{metric} {kind}"]
            for model, value in rows:
                shown = "NaN" if math.isnan(value) else repr(float(value))
                lines.append(f'{PREFIX}_{metric}{{model="{model}"}} {shown}')
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
