"""Typed client for the ``/adapt`` endpoints of the tsadapt TorchServe plugin.

The plugin (``plugin/java``) lives on the management port::

    GET /adapt/models                 -> [ModelState, ...]  (default version of each model)
    GET /adapt/models/{name}          -> ModelState
    PUT /adapt/models/{name}?batch_size=B&max_batch_delay_ms=D  -> new ModelState

Latency telemetry is cumulative since the plugin started; difference two reads with
:meth:`Telemetry.minus` / :meth:`LatencyHistogram.minus` to get any window.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from tsadapt.client import TorchServeClient, TorchServeError

#: TorchServe's error type for a path no handler claims (404 on the management port).
_UNKNOWN_PATH_TYPES = frozenset({"ResourceNotFoundException", "MethodNotAllowedException"})


class AdaptError(TorchServeError):
    """The plugin answered an error (``type`` is the error body's ``type`` field)."""

    def __init__(self, status: int, message: str, url: str, type_: str = "") -> None:
        super().__init__(status, message, url)
        self.type = type_


class PluginNotLoadedError(AdaptError):
    """TorchServe answered as if ``/adapt`` did not exist: the plugin is not on ``plugins_path``."""


class ModelNotFoundError(AdaptError):
    """No model of that name is registered."""


class AdaptUnavailableError(AdaptError):
    """No answer (connection errors, timeouts or 5xx) after all retries."""


class CounterResetError(ValueError):
    """A newer read has smaller counters than an older one (the server restarted)."""


@dataclass(frozen=True)
class LatencyHistogram:
    """Per-bucket (not cumulative) latency counts; bucket ``i`` holds ``(upper[i-1], upper[i]]``.

    ``bucket_upper_ms`` ends with ``math.inf`` (the overflow bucket).
    """

    bucket_upper_ms: tuple[float, ...]
    counts: tuple[int, ...]
    sum_ms: float

    def __post_init__(self) -> None:
        if len(self.bucket_upper_ms) != len(self.counts):
            raise ValueError("bucket_upper_ms and counts differ in length")
        if not self.bucket_upper_ms or self.bucket_upper_ms[-1] != math.inf:
            raise ValueError("the last bucket must be +Inf")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyHistogram:
        """Parse the plugin's ``{"bucket_upper_ms": [...finite], "counts": [...+1], ...}``."""
        bounds = tuple(float(b) for b in data["bucket_upper_ms"]) + (math.inf,)
        return cls(bounds, tuple(int(c) for c in data["counts"]), float(data["sum_ms"]))

    @property
    def count(self) -> int:
        return sum(self.counts)

    @property
    def mean_ms(self) -> float:
        """Mean latency; NaN when empty."""
        return self.sum_ms / self.count if self.count else math.nan

    def minus(self, older: LatencyHistogram) -> LatencyHistogram:
        """The requests recorded between ``older`` and this read."""
        if older.bucket_upper_ms != self.bucket_upper_ms:
            raise ValueError("histograms have different buckets")
        counts = tuple(a - b for a, b in zip(self.counts, older.counts, strict=True))
        if any(c < 0 for c in counts) or self.sum_ms < older.sum_ms:
            raise CounterResetError("latency counters went backwards (server restarted?)")
        return LatencyHistogram(self.bucket_upper_ms, counts, self.sum_ms - older.sum_ms)

    def _lower(self, i: int) -> float:
        return 0.0 if i == 0 else self.bucket_upper_ms[i - 1]

    def quantile(self, q: float) -> float:
        """Latency at quantile ``q`` in [0, 1], interpolated linearly inside its bucket
        (like Prometheus' ``histogram_quantile``); NaN when empty. A quantile that lands in
        the +Inf bucket returns the largest finite bound."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        total = self.count
        if total == 0:
            return math.nan
        rank = q * total
        cumulative = 0
        for i, c in enumerate(self.counts):
            if c and cumulative + c >= rank:
                upper = self.bucket_upper_ms[i]
                if upper == math.inf:
                    return self._lower(i)
                lower = self._lower(i)
                return lower + (upper - lower) * max(0.0, rank - cumulative) / c
            cumulative += c
        return self._lower(len(self.counts) - 1)

    def fraction_within(self, slo_ms: float) -> float:
        """Fraction of requests with latency <= ``slo_ms`` (exact at a bucket bound, linearly
        interpolated inside a bucket); NaN when empty."""
        total = self.count
        if total == 0:
            return math.nan
        i = bisect.bisect_left(self.bucket_upper_ms, slo_ms)  # first bucket with upper >= slo
        within = sum(self.counts[:i])
        if i < len(self.counts) and self.bucket_upper_ms[i] != math.inf:
            lower, upper = self._lower(i), self.bucket_upper_ms[i]
            if slo_ms > lower:
                within += self.counts[i] * (slo_ms - lower) / (upper - lower)
        return within / total


@dataclass(frozen=True)
class Telemetry:
    """Request counters and 2xx latency of one model, cumulative since ``since_epoch_ms``."""

    access_log_attached: bool
    since_epoch_ms: int
    requests_total: int
    responses_2xx: int
    responses_4xx: int
    responses_5xx: int
    responses_other: int
    latency_2xx_ms: LatencyHistogram
    #: Batches the frontend got back from the workers (plugin's batch tap; 0 when absent).
    batches_total: int = 0
    batch_log_attached: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Telemetry:
        return cls(
            access_log_attached=bool(data["access_log_attached"]),
            since_epoch_ms=int(data["since_epoch_ms"]),
            requests_total=int(data["requests_total"]),
            responses_2xx=int(data["responses_2xx"]),
            responses_4xx=int(data["responses_4xx"]),
            responses_5xx=int(data["responses_5xx"]),
            responses_other=int(data["responses_other"]),
            latency_2xx_ms=LatencyHistogram.from_json(data["latency_2xx_ms"]),
            batches_total=int(data.get("batches_total", 0)),
            batch_log_attached=bool(data.get("batch_log_attached", False)),
        )

    def minus(self, older: Telemetry) -> Telemetry:
        """Counters for the window between ``older`` and this read."""
        if older.since_epoch_ms != self.since_epoch_ms:
            raise CounterResetError("telemetry was restarted between the two reads")
        fields = (
            "requests_total",
            "responses_2xx",
            "responses_4xx",
            "responses_5xx",
            "responses_other",
            "batches_total",
        )
        deltas = {f: getattr(self, f) - getattr(older, f) for f in fields}
        if any(v < 0 for v in deltas.values()):
            raise CounterResetError("request counters went backwards")
        return Telemetry(
            access_log_attached=self.access_log_attached,
            since_epoch_ms=self.since_epoch_ms,
            latency_2xx_ms=self.latency_2xx_ms.minus(older.latency_2xx_ms),
            batch_log_attached=self.batch_log_attached,
            **deltas,
        )

    @property
    def error_rate(self) -> float:
        """Non-2xx share of all requests; NaN when there were none."""
        if not self.requests_total:
            return math.nan
        return 1.0 - self.responses_2xx / self.requests_total

    @property
    def server_error_rate(self) -> float:
        """5xx share of all requests (a full job queue's 503s, a failing handler's 500s); a
        client's 4xx are the client's to mend, not the server's capacity. NaN when there were
        none."""
        if not self.requests_total:
            return math.nan
        return self.responses_5xx / self.requests_total

    def slo_attainment(self, slo_ms: float) -> float:
        """Share of *all* requests answered 2xx within ``slo_ms`` (errors count as misses)."""
        if not self.requests_total:
            return math.nan
        ok = self.latency_2xx_ms
        within = ok.fraction_within(slo_ms) * ok.count if ok.count else 0.0
        return within / self.requests_total


@dataclass(frozen=True)
class ModelState:
    """Live state of a model's default version as the frontend JVM sees it."""

    name: str
    version: str
    batch_size: int
    max_batch_delay_ms: int
    min_workers: int
    max_workers: int
    running_workers: int
    workers_total: int
    queue_depth: int
    queue_remaining_capacity: int
    queue_capacity: int
    oldest_queued_age_ms: float
    timestamp_ms: int
    telemetry: Telemetry

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelState:
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            batch_size=int(data["batch_size"]),
            max_batch_delay_ms=int(data["max_batch_delay_ms"]),
            min_workers=int(data["min_workers"]),
            max_workers=int(data["max_workers"]),
            running_workers=int(data["running_workers"]),
            workers_total=int(data["workers_total"]),
            queue_depth=int(data["queue_depth"]),
            queue_remaining_capacity=int(data["queue_remaining_capacity"]),
            queue_capacity=int(data["queue_capacity"]),
            oldest_queued_age_ms=float(data["oldest_queued_age_ms"]),
            timestamp_ms=int(data["timestamp_ms"]),
            telemetry=Telemetry.from_json(data["telemetry"]),
        )


def _error_body(resp: requests.Response) -> tuple[str, str]:
    """(type, message) of a TorchServe/plugin JSON error; raw text otherwise."""
    try:
        body = resp.json()
    except ValueError:
        return "", resp.text.strip()
    if isinstance(body, dict):
        return str(body.get("type", "")), str(body.get("message", resp.text.strip()))
    return "", resp.text.strip()


def _raise_for(resp: requests.Response) -> None:
    """Map a non-2xx answer to the matching exception."""
    type_, message = _error_body(resp)
    status, url = resp.status_code, resp.url
    if type_ in _UNKNOWN_PATH_TYPES:
        raise PluginNotLoadedError(
            status,
            f"TorchServe does not know /adapt ({message}): is the tsadapt plugin jar in "
            "plugins_path, and is this the management address?",
            url,
            type_,
        )
    if status == 404 and type_ == "ModelNotFound":
        raise ModelNotFoundError(status, message, url, type_)
    raise AdaptError(status, message, url, type_)


def _model_path(name: str) -> str:
    return f"adapt/models/{quote(name, safe='')}"


class AdaptClient:
    """Calls the plugin through a token-aware :class:`TorchServeClient`.

    Connection errors, timeouts and 5xx answers are retried ``retries`` times with
    exponential backoff; 4xx answers are never retried.
    """

    def __init__(
        self,
        client: TorchServeClient,
        *,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._sleep = sleep

    def _call(self, method: str, path: str, params: dict[str, int] | None = None) -> Any:
        last: str = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self.client.request(
                    "management", method, path, params=params, timeout_s=self.timeout_s
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code >= 500:
                last = f"{resp.status_code}: {_error_body(resp)[1]}"
                continue
            if not resp.ok:
                _raise_for(resp)
            try:
                return resp.json()
            except ValueError as exc:
                detail = f"not JSON: {resp.text[:200]!r}"
                raise AdaptError(resp.status_code, detail, resp.url) from exc
        url = f"{self.client.management_url}/{path}"
        raise AdaptUnavailableError(0, f"gave up after {self.retries + 1} tries ({last})", url)

    def info(self) -> dict[str, Any]:
        """Plugin version, access-log tap status and the histogram bucket bounds."""
        return self._call("GET", "adapt")

    def models(self) -> list[ModelState]:
        """State of every registered model (default versions), sorted by name."""
        return [ModelState.from_json(d) for d in self._call("GET", "adapt/models")]

    def model(self, name: str) -> ModelState:
        return ModelState.from_json(self._call("GET", _model_path(name)))

    def drain(self, name: str, keep: int, timeout_ms: int = 5000) -> dict[str, Any]:
        """Let the workers a scale-down to ``keep`` would remove finish their batch and stop.

        Call right before scaling down to ``keep`` workers through the management API, so no
        request is interrupted mid-batch (see ``plugin/java/.../WorkerDrain.java``).
        """
        params = {"keep": int(keep), "timeout_ms": int(timeout_ms)}
        return self._call("POST", f"{_model_path(name)}/drain", params)

    def set_batching(
        self, name: str, batch_size: int | None = None, max_batch_delay_ms: int | None = None
    ) -> ModelState:
        """Change batch size and/or max batch delay live (effective at the next batch)."""
        params: dict[str, int] = {}
        if batch_size is not None:
            params["batch_size"] = int(batch_size)
        if max_batch_delay_ms is not None:
            params["max_batch_delay_ms"] = int(max_batch_delay_ms)
        if not params:
            raise ValueError("give batch_size and/or max_batch_delay_ms")
        return ModelState.from_json(self._call("PUT", _model_path(name), params))
