"""The state observer: the only controller code that reads from the server over HTTP.

Each :meth:`Observer.observe` reads ``GET /adapt/models`` (plugin: batching, workers, queue,
cumulative latency histograms) and the Prometheus ``/metrics`` page (handler counters
``AdaptBatches`` / ``AdaptBatchRequests``; for any other handler the plugin's own per-model
batch count from the frontend), plus psutil and (optionally) NVML for the host, and
turns the difference against earlier reads into one frozen :class:`Observation`.

- p50/p99/SLO attainment/batch fill rate: over the last ``window_s``;
- completion rate: over the last tick; arrival rate = completion rate + queue growth rate.

Counters going backwards (or a new plugin start time) mean the server restarted: the history is
dropped and :attr:`Observer.restarts` counts it, so the sidecar can re-apply its configuration.

Every registered model is observed, configured or not (a model without limits has a NaN SLO
and SLO attainment); :attr:`Observer.registered` lists them, so models registered or
unregistered while the controller runs are seen at the next tick. The handler counters are
optional: for a handler that does not report them (any handler but ours) the mean batch size
is the plugin's requests per batch counted in the frontend, and NaN (unknown) when the
frontend's log level hides the batch lines; a server whose metrics page is off still gets
observed.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import requests

from tsadapt.client import TorchServeClient
from tsadapt.constants import METRIC_BATCH_REQUESTS, METRIC_BATCHES
from tsadapt.plugin.adapt_client import AdaptClient, CounterResetError, ModelState
from tsadapt.policy.controller_config import ControllerConfig
from tsadapt.policy.types import (
    GpuObservation,
    HostObservation,
    ModelObservation,
    ModelSettings,
    Observation,
)

logger = logging.getLogger(__name__)

_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\}\s+(\S+)")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


class ServerUnreachable(RuntimeError):
    """The server (or its plugin) did not answer; the message says what failed."""


def parse_handler_counters(text: str) -> dict[str, tuple[float, float]]:
    """``{model: (batches, batch_requests)}`` from a Prometheus text page."""
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) not in (METRIC_BATCHES, METRIC_BATCH_REQUESTS):
            continue
        labels = dict(_LABEL.findall(match.group(2)))
        model = labels.get("ModelName")
        if model is None:
            continue
        slot = out.setdefault(model, [0.0, 0.0])
        slot[0 if match.group(1) == METRIC_BATCHES else 1] += float(match.group(3))
    return {m: (v[0], v[1]) for m, v in out.items()}


@dataclass(frozen=True)
class Snapshot:
    """One raw read of the server."""

    time_s: float
    states: dict[str, ModelState]
    handler: dict[str, tuple[float, float]]


def settings_from_state(state: ModelState) -> ModelSettings:
    """The configured settings (``min_workers`` is what scale calls set; min == max)."""
    return ModelSettings(state.batch_size, state.max_batch_delay_ms, state.min_workers)


class GpuProbe:
    """Per-GPU utilisation and memory through NVML; no GPU (or no driver) is not an error."""

    def __init__(self) -> None:
        self._nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handles = [
                pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
            ]
            self._nvml = pynvml
        except Exception as exc:  # noqa: BLE001 - any NVML failure means "no GPU"
            logger.info("no GPU telemetry (%s)", exc)
            self._handles = []

    def read(self) -> tuple[GpuObservation, ...]:
        if self._nvml is None:
            return ()
        gpus = []
        for index, handle in enumerate(self._handles):
            try:
                util = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                mem = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception:  # noqa: BLE001 - a GPU that stops answering is skipped
                continue
            gpus.append(GpuObservation(index, float(util.gpu), mem.used / 2**20, mem.total / 2**20))
        return tuple(gpus)

    def process_memory_mb(self) -> dict[int, float]:
        """GPU memory (MiB) of each process with a CUDA context, by pid, summed over GPUs;
        empty without NVML or where the driver does not report processes (containers)."""
        if self._nvml is None:
            return {}
        used: dict[int, float] = {}
        for handle in self._handles:
            try:
                procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except Exception:  # noqa: BLE001 - not supported here: no per-process figures
                continue
            for proc in procs:
                if proc.usedGpuMemory is not None:
                    used[proc.pid] = used.get(proc.pid, 0.0) + proc.usedGpuMemory / 2**20
        return used


class Observer:
    """Reads the server every tick and keeps the history needed for windowed statistics."""

    def __init__(
        self,
        client: TorchServeClient,
        metrics_url: str,
        config: ControllerConfig,
        clock: Callable[[], float] = time.monotonic,
        gpus: GpuProbe | None = None,
    ) -> None:
        self.client = client
        self.adapt = AdaptClient(client, timeout_s=3.0, retries=1, backoff_s=0.1)
        self.metrics_url = metrics_url
        self.config = config
        self.clock = clock
        self.gpus = gpus if gpus is not None else GpuProbe()
        self.history: deque[Snapshot] = deque()
        self.since_epoch_ms: int | None = None
        self.restarts = 0
        #: Models registered at the last read, sorted by name.
        self.registered: tuple[str, ...] = ()
        self._metrics_warned = False
        psutil.cpu_percent(interval=None)  # prime the non-blocking CPU counter

    def _read(self) -> Snapshot:
        try:
            states = {s.name: s for s in self.adapt.models()}
        except (requests.RequestException, RuntimeError) as exc:
            raise ServerUnreachable(f"{type(exc).__name__}: {exc}") from exc
        self.registered = tuple(sorted(states))
        return Snapshot(self.clock(), states, self._handler_counters())

    def _handler_counters(self) -> dict[str, tuple[float, float]]:
        """The handler batch counters, or none when the metrics page does not answer."""
        try:
            page = self.client.session.get(self.metrics_url, timeout=3.0)
            page.raise_for_status()
        except requests.RequestException as exc:
            if not self._metrics_warned:
                logger.warning(
                    "no metrics page at %s (%s): batch fill rates unknown", self.metrics_url, exc
                )
                self._metrics_warned = True
            return {}
        return parse_handler_counters(page.text)

    def live_settings(self) -> dict[str, ModelSettings]:
        """The settings each registered model runs with right now."""
        snap = self._read()
        return {n: settings_from_state(s) for n, s in snap.states.items()}

    def _detect_restart(self, snap: Snapshot) -> bool:
        since = {s.telemetry.since_epoch_ms for s in snap.states.values()}
        epoch = min(since) if since else None
        restarted = self.since_epoch_ms is not None and epoch != self.since_epoch_ms
        self.since_epoch_ms = epoch
        return restarted

    def observe(self) -> Observation:
        """One observation; raises :class:`ServerUnreachable` when the server does not answer."""
        snap = self._read()
        if self._detect_restart(snap):
            self.restarts += 1
            self.history.clear()
            logger.warning("server restarted (plugin start time changed): history dropped")
        previous = self.history[-1] if self.history else None
        base = self._window_base(snap.time_s)
        models = []
        for name in sorted(snap.states):
            try:
                models.append(self._model(name, snap, previous, base))
            except CounterResetError:
                self.restarts += 1
                self.history.clear()
                return self.observe_after_reset(snap)
        self.history.append(snap)
        window = self.config.window_s
        while len(self.history) > 1 and snap.time_s - self.history[1].time_s >= window:
            self.history.popleft()
        return Observation(
            time_s=snap.time_s,
            window_s=snap.time_s - base.time_s if base else 0.0,
            models=tuple(models),
            host=self._host(),
        )

    def observe_after_reset(self, snap: Snapshot) -> Observation:
        """Counters went backwards: start a new history at ``snap`` (no windowed values yet)."""
        self.history.append(snap)
        models = tuple(self._model(n, snap, None, None) for n in sorted(snap.states))
        return Observation(snap.time_s, 0.0, models, self._host())

    def _window_base(self, now: float) -> Snapshot | None:
        """The newest earlier read at least ``window_s`` old, else the oldest one."""
        base = None
        for snap in self.history:
            if now - snap.time_s >= self.config.window_s or base is None:
                base = snap
        return base

    def _model(
        self, name: str, snap: Snapshot, previous: Snapshot | None, base: Snapshot | None
    ) -> ModelObservation:
        state = snap.states[name]
        nan = math.nan
        slo = self.config.limits(name).slo_ms if name in self.config.model_names else nan
        completion = arrival = nan
        if previous is not None and name in previous.states and snap.time_s > previous.time_s:
            dt = snap.time_s - previous.time_s
            done = state.telemetry.minus(previous.states[name].telemetry).requests_total
            completion = done / dt
            growth = (state.queue_depth - previous.states[name].queue_depth) / dt
            arrival = max(0.0, completion + growth)
        requests_n, attainment, p50, p99, mean, errors = 0, nan, nan, nan, nan, nan
        fill = mean_batch = nan
        if base is not None and name in base.states:
            window = state.telemetry.minus(base.states[name].telemetry)
            hist = window.latency_2xx_ms
            requests_n = window.requests_total
            attainment = window.slo_attainment(slo) if math.isfinite(slo) else nan
            p50, p99, mean = hist.quantile(0.5), hist.quantile(0.99), hist.mean_ms
            errors = window.server_error_rate
            now_b, now_r = snap.handler.get(name, (0.0, 0.0))
            old_b, old_r = base.handler.get(name, (0.0, 0.0))
            if now_b - old_b > 0 and now_r >= old_r:
                mean_batch = (now_r - old_r) / (now_b - old_b)
            elif window.batch_log_attached and window.batches_total > 0:
                # any handler: the frontend's own batch count (requests answered per batch)
                mean_batch = window.requests_total / window.batches_total
            if not math.isnan(mean_batch):
                fill = mean_batch / state.batch_size
        return ModelObservation(
            name=name,
            slo_ms=slo,
            settings=settings_from_state(state),
            arrival_rate_rps=arrival,
            completion_rate_rps=completion,
            queue_depth=state.queue_depth,
            oldest_queued_age_ms=state.oldest_queued_age_ms,
            requests_in_window=requests_n,
            slo_attainment=attainment,
            p50_ms=p50,
            p99_ms=p99,
            mean_latency_ms=mean,
            batch_fill_rate=fill,
            mean_batch_size=mean_batch,
            error_rate=errors,
        )

    def _host(self) -> HostObservation:
        return HostObservation(
            cpu_utilisation_pct=psutil.cpu_percent(interval=None),
            memory_used_pct=psutil.virtual_memory().percent,
            gpus=self.gpus.read(),
        )
