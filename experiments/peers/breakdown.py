"""Where a request's time goes, per system and model, for ``peers.md``: from each system's
own figures at the end of the first seed's run (nothing is modelled).

* TorchServe (our controllers' server): its Prometheus counters (``ts_inference_latency``:
  the frontend's receive-to-reply time, ``ts_queue_latency``: time in the model's job
  queue, per request) and our handler's counters (``AdaptHandlerMilliseconds`` and
  ``AdaptBatches``/``AdaptBatchRequests``: handler time per batch, batch size).
* Ray Serve: our replica code's accounts (``timing``): a request's time in the replica,
  of which waiting for its batch to start (queue and batch wait) and its batch's handler time.
* BentoML: its own ``bentoml_service_request_duration_seconds`` (the service's receive-to-
  reply time per API) and our API code's accounts (handler time, batch size).
* Every system: the client's latency (Locust) of the 2xx answers; client minus server time
  is the client's HTTP stack, loopback and (Ray) the proxy and router.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tsadapt.experiments.bench_report import RunResult, fmt
from tsadapt.experiments.bench_schedule import read_records
from tsadapt.experiments.peers.timing import read_accounts
from tsadapt.markdown import table

_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of each sample line of a Prometheus text page."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m or line.startswith("#"):
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), value))
    return out


def metric_sum(samples: Sequence[tuple[str, dict[str, str], float]], name: str, model: str
               ) -> float:  # fmt: skip
    """Sum of ``name`` over the samples that belong to ``model`` (NaN if none)."""
    vals = [v for n, lab, v in samples if n == name and _model_of(lab) == model]
    return float(sum(vals)) if vals else math.nan


def _model_of(labels: Mapping[str, str]) -> str | None:
    for key in ("model_name", "ModelName"):
        if key in labels:
            return labels[key]
    ep = labels.get("endpoint", "")
    return ep.rsplit("/", 1)[-1] if ep.startswith("/predictions/") else None


@dataclass(frozen=True)
class Split:
    """Mean ms per request of one model on one system (NaN: not exposed)."""

    system: str
    model: str
    requests: int
    client_ms: float
    server_ms: float  # the server's receive-to-reply (Ray: time in the replica)
    wait_ms: float  # queue (+ batch wait where the system counts it there)
    handler_ms: float  # the handler's time of the request's batch
    mean_batch: float

    @property
    def other_ms(self) -> float:
        """Server time that is neither wait nor handler."""
        return self.server_ms - (0.0 if math.isnan(self.wait_ms) else self.wait_ms) - (
            self.handler_ms)  # fmt: skip

    @property
    def outside_ms(self) -> float:
        return self.client_ms - self.server_ms


def client_means(rundir: Path) -> dict[str, tuple[int, float]]:
    rec = read_records(rundir / "requests.csv")
    out = {}
    for m in sorted(set(rec.model.tolist())):
        r = rec.of(m)
        lat = r.latency_ms[r.ok]
        out[m] = (int(lat.size), float(lat.mean()) if lat.size else math.nan)
    return out


def splits_of(res: RunResult) -> list[Split]:
    """The splits of one ok run, from what its run folder holds ([] when nothing)."""
    if res.status != "ok" or res.rundir is None or not (res.rundir / "requests.csv").is_file():
        return []
    rd = res.rundir
    client = client_means(rd)
    out = []
    if (rd / "server-metrics.txt").is_file():
        s = prometheus((rd / "server-metrics.txt").read_text())
        for m, (n, c) in client.items():
            reqs = metric_sum(s, "ts_inference_requests_total", m)
            batches = metric_sum(s, "AdaptBatches", m)
            out.append(Split(
                res.controller, m, n, c,
                metric_sum(s, "ts_inference_latency_microseconds", m) / reqs / 1000.0,
                metric_sum(s, "ts_queue_latency_microseconds", m) / reqs / 1000.0,
                metric_sum(s, "AdaptHandlerMilliseconds", m) / batches,
                metric_sum(s, "AdaptBatchRequests", m) / batches,
            ))  # fmt: skip
        return out
    acc = read_accounts(rd / "timing")
    bento = rd / "bentoml-metrics.txt"
    s = prometheus(bento.read_text()) if bento.is_file() else []
    for m, (n, c) in client.items():
        a = acc.get(m)
        if a is None or a.requests == 0:
            continue
        handler = a.handler_ms / a.requests
        if s:
            dur = metric_sum(s, "bentoml_service_request_duration_seconds_sum", m)
            cnt = metric_sum(s, "bentoml_service_request_duration_seconds_count", m)
            out.append(Split(res.controller, m, n, c, 1000.0 * dur / cnt, math.nan, handler,
                             a.requests / a.batches))  # fmt: skip
        else:
            out.append(Split(res.controller, m, n, c, a.inside_ms / a.requests,
                             a.wait_ms / a.requests, handler, a.requests / a.batches))  # fmt: skip
    return out


HEADER = [
    "system", "model", "requests", "client ms", "server ms", "queue + batch wait ms",
    "handler ms (its batch)", "rest of server ms", "client - server ms", "mean batch",
]  # fmt: skip


def breakdown_rows(runs: Mapping[int, Sequence[RunResult]]) -> list[list[str]]:
    first = runs[min(runs)]
    rows = []
    for res in first:
        for sp in splits_of(res):
            rows.append([
                sp.system, sp.model, str(sp.requests), fmt(sp.client_ms), fmt(sp.server_ms),
                fmt(sp.wait_ms), fmt(sp.handler_ms), fmt(sp.other_ms), fmt(sp.outside_ms),
                fmt(sp.mean_batch, ".2f"),
            ])  # fmt: skip
    return rows


def breakdown_section(runs: Mapping[int, Sequence[RunResult]]) -> list[str]:
    """The report's "where the time goes" section."""
    rows = breakdown_rows(runs)
    return [
        "## Where the time goes",
        "",
        f"Mean ms per request, first seed (seed {min(runs)}), from each system's own "
        "figures (see `experiments/peers/breakdown.py`). server = TorchServe's frontend "
        "receive-to-reply (`ts_inference_latency`), BentoML's service receive-to-reply "
        "(`bentoml_service_request_duration_seconds`), Ray: the time in our replica code "
        "(Ray exposes no per-request proxy time here, so its proxy and router fall in "
        "client - server). queue + batch wait: TorchServe's `ts_queue_latency` (job queue "
        "only; the batch's gathering falls in the rest), Ray: reaching the replica to its "
        "batch starting; BentoML does not expose it (it falls in the rest). handler = our "
        "handler's time of the request's batch (decode, validate, forward, answer); for "
        "TorchServe the mean per batch (its counters do not weight by batch size). The rest "
        "of the server's time: TorchServe's frontend, batch gathering and the frontend-worker "
        "round trip; BentoML's HTTP, queue and batch wait.",
        "",
        *table(HEADER, rows),
        "",
    ]
