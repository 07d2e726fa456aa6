"""``tsadapt profile --model NAME``: batch latency of a *served* model vs batch size and workers.

For each worker count ``w`` (scaled with the management API) and batch size ``b`` (set live
through the plugin with a long ``max_batch_delay``, so a batch leaves only when full), the
profiler sends exactly ``w * b`` concurrent requests - one full batch per worker, all
sharing the device - and records per batch:

* ``handler_ms`` - handler time per batch from the Prometheus counters
  ``AdaptHandlerMilliseconds`` / ``AdaptBatches`` (difference before/after; NaN when the
  handler does not report them, i.e. any handler but ours);
* ``client_ms`` - wall time from sending the first request to the last answer;
* ``batch_sizes`` - the actual batch sizes the handler reported (``X-TSAdapt-Batch-Size``).

It fits seed 000's Eq. 1, ``latency(b) = alpha*b + beta`` (per worker count, on the median
handler time, or on the median client time where the handler reports none), restores the
model's previous batch size, delay and workers, and writes ``<out>.json`` (raw points + fits)
and ``<out>.csv`` (``batch,workers,latency_ms`` medians, readable as a scenario profile).
Any served model can be profiled: ``--payload FILE`` is the request body to send (the demo
models have a built-in one).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import requests

from tsadapt.constants import (
    BATCH_ID_HEADER,
    BATCH_SIZE_HEADER,
    METRIC_BATCHES,
    METRIC_HANDLER_MS,
)
from tsadapt.profile import fit_linear, medians_by_batch, timed_rounds, write_profiles

#: Batch delay while profiling: long enough that only a full batch leaves.
PROFILE_DELAY_MS = 5000
#: How long to wait for the handler counters of a round to show on /metrics.
COUNTER_WAIT_S = 3.0


class ProfileError(RuntimeError):
    """The server, the plugin or the model is not usable for profiling."""


@dataclass(frozen=True)
class Point:
    workers: int
    batch: int
    repeat: int
    handler_ms: float
    client_ms: float
    batch_sizes: list[int]

    @property
    def latency_ms(self) -> float:
        """The handler's time per batch where it reports one, else the client's."""
        return self.handler_ms if np.isfinite(self.handler_ms) else self.client_ms


def prometheus_sum(text: str, metric: str, model: str) -> float:
    """Sum of ``metric`` over the series labelled with ``model`` in a Prometheus text page."""
    total, found = 0.0, False
    pat = re.compile(rf"^{re.escape(metric)}(?:\{{(?P<labels>[^}}]*)\}})?\s+(?P<v>\S+)")
    for line in text.splitlines():
        m = pat.match(line)
        if not m:
            continue
        labels = m.group("labels") or ""
        if re.search(rf'(?i)model_?name="{re.escape(model)}"', labels):
            total += float(m.group("v"))
            found = True
    return total if found else 0.0


def _counters(metrics_url: str, model: str) -> tuple[float, float]:
    """The handler's batch counters (0, 0 when the metrics page is off or lacks them)."""
    try:
        text = requests.get(metrics_url, timeout=10).text
    except requests.RequestException:
        return 0.0, 0.0
    return (
        prometheus_sum(text, METRIC_BATCHES, model),
        prometheus_sum(text, METRIC_HANDLER_MS, model),
    )


def fit(points: list[Point]) -> dict[str, dict[str, float]]:
    """Per worker count: alpha_ms, beta_ms, r2 of the median handler time vs batch."""
    out = {}
    for w in sorted({p.workers for p in points}):
        med = medians(points, w)
        if len(med) >= 2:
            f = fit_linear(np.array(list(med)), np.array(list(med.values())))
            out[str(w)] = {"alpha_ms": f.alpha_ms, "beta_ms": f.beta_ms, "r2": f.r2}
    return out


def medians(points: list[Point], workers: int) -> dict[int, float]:
    """Median latency per batch size at ``workers`` (:attr:`Point.latency_ms`)."""
    return medians_by_batch([asdict(p) for p in points], workers)


def profiles_of(model: str, points: list[Point]) -> list[dict[str, Any]]:
    """One profile per worker count (the file format's ``profiles``)."""
    rows = []
    for w in sorted({p.workers for p in points}):
        med = medians(points, w)
        if med:
            rows.append(
                {
                    "model": model,
                    "workers": w,
                    "batch_sizes": list(med),
                    "median_ms": list(med.values()),
                }
            )
    return rows


def run_profile(args: argparse.Namespace) -> Path:
    """Profile ``args.model`` on the server the attach options name; return the JSON path."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tsadapt.client import TorchServeError
    from tsadapt.plugin.adapt_client import AdaptClient, AdaptError
    from tsadapt.serve.attach import AttachError, connect_checked
    from tsadapt.serve.server import ServerError

    try:
        client, metrics_url, registered = connect_checked(args, timeout_s=60.0)
    except (AttachError, ServerError) as exc:
        raise ProfileError(str(exc)) from None
    if args.model not in registered:
        raise ProfileError(
            f"--model: {args.model!r} is not registered on the server; "
            f"registered: {', '.join(registered) or 'none'}"
        )
    adapt = AdaptClient(client)
    try:
        before = adapt.model(args.model)
    except (AdaptError, TorchServeError, requests.RequestException) as exc:
        raise ProfileError(f"cannot read model {args.model!r} through the plugin: {exc}") from None
    payload = load_payload(getattr(args, "payload", None), args.model)
    check_payload(client, args.model, payload, getattr(args, "payload", None))
    points: list[Point] = []
    total = len(args.workers) * len(args.batch_sizes) * (args.warmup + args.repeats)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()) as prog:
            task = prog.add_task(f"profiling {args.model}", total=total)
            for w in args.workers:
                client.scale_workers(args.model, w, synchronous=True)
                for b in args.batch_sizes:
                    adapt.set_batching(
                        args.model, batch_size=b, max_batch_delay_ms=PROFILE_DELAY_MS
                    )
                    prog.update(task, description=f"{args.model}: {w} worker(s), batch {b}")
                    rounds = timed_rounds(
                        lambda w=w, b=b: _one_round(client, metrics_url, args.model, payload, w, b),
                        args.warmup,
                        args.repeats,
                        after_each=lambda: prog.advance(task),
                    )
                    points += [replace(p, repeat=r) for r, (_, p) in enumerate(rounds, args.warmup)]
    except (AdaptError, TorchServeError, requests.RequestException) as exc:
        raise ProfileError(f"profiling {args.model} failed: {exc}") from None
    finally:
        try:
            adapt.set_batching(
                args.model,
                batch_size=before.batch_size,
                max_batch_delay_ms=before.max_batch_delay_ms,
            )
            client.scale_workers(args.model, before.workers_total or 1, synchronous=True)
        except Exception:  # noqa: BLE001 - best effort restore; the error above matters more
            pass
    out = Path(args.out) if args.out else Path("docs/results/profiles") / f"{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_profiles(
        out,
        profiles_of(args.model, points),
        model=args.model,
        server=client.inference_url,
        created_unix=int(time.time()),
        method=__doc__.split("\n\n")[1].strip() if __doc__ else "",
        delay_ms_while_profiling=PROFILE_DELAY_MS,
        points=[asdict(p) for p in points],
        fit=fit(points),
    )
    with out.with_suffix(".csv").open("w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["batch", "workers", "latency_ms"])
        for w in args.workers:
            for b, ms in medians(points, w).items():
                wr.writerow([b, w, round(ms, 3)])
    return out


def _one_round(
    client: Any, metrics_url: str, model: str, payload: Any, workers: int, batch: int
) -> Point:
    n0, ms0 = _counters(metrics_url, model)
    n = workers * batch
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        resps = list(pool.map(lambda _: send(client, model, payload), range(n)))
    client_ms = (time.perf_counter() - t0) * 1000.0
    bad = [r.status_code for r in resps if r.status_code != 200]
    if bad:
        raise ProfileError(f"{model}: {len(bad)} of {n} requests failed (HTTP {bad[0]})")
    sizes = sorted(int(r.headers.get(BATCH_SIZE_HEADER, 0)) for r in resps)
    # the backend's counters reach the frontend's /metrics asynchronously: wait for them
    # (a handler that sends no batch ids reports no counters either: nothing to wait for)
    deadline = time.monotonic() + COUNTER_WAIT_S
    n1, ms1 = _counters(metrics_url, model)
    expected = len(set(_batch_ids(resps)))
    while n1 - n0 < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        n1, ms1 = _counters(metrics_url, model)
    batches = n1 - n0
    handler = (ms1 - ms0) / batches if batches > 0 else float("nan")
    return Point(workers, batch, 0, handler, client_ms, sizes)


def _batch_ids(resps: list[Any]) -> list[str]:
    return [r.headers[BATCH_ID_HEADER] for r in resps if BATCH_ID_HEADER in r.headers]


@dataclass(frozen=True)
class Payload:
    """One request body, sent as it is."""

    body: bytes
    content_type: str


def load_payload(path: Path | None, model: str) -> Payload:
    """The body in ``path`` (JSON if it parses, else bytes), or the demo model's example."""
    if path is None:
        return Payload(json.dumps(_example(model)).encode(), "application/json")
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"--payload: no such file: {path}")
    body = path.read_bytes()
    try:
        json.loads(body)
        kind = "application/json"
    except ValueError:
        kind = "application/octet-stream"
    return Payload(body, kind)


def send(client: Any, model: str, payload: Payload) -> requests.Response:
    return client.request(
        "inference",
        "POST",
        f"predictions/{model}",
        data=payload.body,
        headers={"Content-Type": payload.content_type},
    )


def check_payload(client: Any, model: str, payload: Payload, path: Path | None) -> None:
    """One request first: a payload the model refuses is named before any profiling."""
    resp = send(client, model, payload)
    if not resp.ok:
        where = f"the payload in {path}" if path else "the built-in example payload"
        raise ProfileError(
            f"--payload: {model} answered HTTP {resp.status_code} to {where}: {resp.text[:300]}"
        )


def _example(model: str) -> Any:
    from tsadapt.handlers.catalog import DEMO_MODELS

    if model not in DEMO_MODELS:
        raise ProfileError(
            f"--payload: no example request for {model!r} (the demo models have one: "
            f"{', '.join(DEMO_MODELS)}); give a request body with --payload FILE"
        )
    return DEMO_MODELS[model].example(np.random.default_rng(0))
