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

import json
import math
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsadapt.experiments.bench_run import RunResult, fmt
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
                res.label, sp.model, str(sp.requests), fmt(sp.client_ms), fmt(sp.server_ms),
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
        *handler_section(_models_of(runs)),
    ]


def _models_of(runs: Mapping[int, Sequence[RunResult]]) -> list[str]:
    for res in runs[min(runs)]:
        if res.per_model:
            return list(res.per_model)
    return []


def handler_section(models: Sequence[str]) -> list[str]:
    """Our handler's own steps, and the one change tried to win time back."""
    if not models:
        return []
    return [
        "### Inside our handler, and what was tried",
        "",
        f"One request of each model through our handler's steps, timed in the bench's "
        f"process after the runs (median of {PROFILE_ROUNDS}; the box was shared, so the "
        "absolute figures are inflated): the same code runs in TorchServe's workers, Ray's "
        "replicas and BentoML's workers (BentoML decodes the JSON itself before our code).",
        "",
        *table(PROFILE_HEADER, handler_profile(models)),
        "",
        "Tried here: the handler skips that walk (`torch.tensor` takes `true` as 1.0, so "
        "booleans are refused by a walk over every number) when it gets the raw JSON and the "
        "text has no `true`/`false` token (`handlers/base.py: may_hold_booleans`). Ray hands "
        "our code the raw bytes, so Ray's replicas skip it; TorchServe's worker decodes "
        "`application/json` bodies itself before the handler (`TS_DECODE_INPUT_REQUEST`, on "
        "by default) and BentoML hands decoded objects, so both still walk. Handing "
        "TorchServe's handler the raw bytes (decoded with the standard library or orjson) "
        "and other Netty thread counts are measured side by side, closed loop, by `tsadapt "
        "lab frontend-tuning` (`docs/results/frontend-tuning.md`). "
        "What only a different server can fix: TorchServe's frontend-worker round trip (a "
        "socket hop and a second encode/decode of every batch between the Java frontend and "
        "the Python worker), which Ray (in-process batching in the replica) and BentoML (HTTP "
        "and model in the same worker process) do not have.",
        "",
    ]


# --------------------------------------------------------------------------- handler profile

#: Timed repetitions of each step (the median is kept).
PROFILE_ROUNDS = 30
PROFILE_HEADER = [
    "model", "body bytes", "JSON decode ms", "validate + tensor ms",
    "of which the per-number boolean walk ms", "forward ms (batch of 1)", "answer + encode ms",
]  # fmt: skip


def _median_ms(f: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return 1000.0 * float(np.median(times))


def handler_profile(models: Sequence[str], rounds: int = PROFILE_ROUNDS) -> list[list[str]]:
    """Our handler's steps for one request of each model, timed in this process on the
    handler as a worker loads it (``load_local``, one intra-op thread): the JSON decode, the
    validation into a tensor (with and without the per-number boolean walk), the forward pass
    of a batch of one, and the answer with its JSON encoding."""
    import torch

    from tsadapt.handlers.catalog import DEMO_MODELS
    from tsadapt.handlers.local import load_local

    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="tsadapt-profile-") as tmp:
        for name in models:
            h = load_local(DEMO_MODELS[name], Path(tmp) / name).handler
            raw = json.dumps(DEMO_MODELS[name].example(rng)).encode()
            body = json.loads(raw)
            x = h.parse_request(body)

            def parse(check: bool, h=h, body=body) -> object:  # noqa: ANN001
                h.check_booleans = check
                return h.parse_request(body)

            with_walk = _median_ms(lambda: parse(True), rounds)
            without = _median_ms(lambda: parse(False), rounds)
            with torch.inference_mode():
                fwd = _median_ms(lambda h=h, x=x: h.model(x[None]), rounds)
                out = h.model(x[None])[0]
            enc = _median_ms(lambda h=h, out=out: json.dumps(h.answer(out)), rounds)
            dec = _median_ms(lambda raw=raw: json.loads(raw), rounds)
            rows.append([
                name, str(len(raw)), fmt(dec, ".2f"),
                fmt(with_walk, ".2f"), fmt(max(0.0, with_walk - without), ".2f"), fmt(fwd, ".2f"),
                fmt(enc, ".2f"),
            ])  # fmt: skip
    return rows
