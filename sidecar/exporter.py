"""The sidecar's own Prometheus metrics, served as text on a loopback port (``/metrics``)."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tsadapt import constants as C
from tsadapt.policy.types import Observation

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
}


class MetricsExporter:
    """Holds the latest values and serves them; ``port=0`` picks a free port."""

    def __init__(self, port: int = 0, host: str = C.LOOPBACK) -> None:
        self._lock = threading.Lock()
        self._gauges: dict[tuple[str, str], float] = {}
        self._counters: dict[tuple[str, str], float] = {}
        self._ticks = 0
        self._server_up = 0
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.render().encode()
                self.send_response(200)
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

    @property
    def url(self) -> str:
        return f"http://{C.LOOPBACK}:{self.port}/metrics"

    def update(
        self,
        observation: Observation | None,
        overrides: dict[str, int],
        failures: dict[str, int],
        controlled: Iterable[str] | None = None,
    ) -> None:
        """Record one tick (``observation`` None when the server was unreachable);
        ``controlled`` names the models the controller may change (default: all observed)."""
        with self._lock:
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
