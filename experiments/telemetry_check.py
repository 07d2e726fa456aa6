"""Does the plugin's server-side latency telemetry agree with what clients measure?

Method (``tsadapt lab plugin check-telemetry``):

1. Start TorchServe with the plugin and the ``tabular`` model; read the plugin's cumulative
   telemetry for it.
2. Run the Locust ``step`` scenario (``loadtests/step.py``: open-loop Poisson arrivals,
   20..80 req/s) against that model only; its event hook writes every request's
   client-side latency (send to last byte) and status to a CSV.
3. Read the telemetry again once it has counted every request; the difference of the two
   reads is exactly this run (the histogram is cumulative).
4. Compare p50, p99 and the attainment of a 100 ms SLO: client side from the CSV (a
   request that failed counts as a miss), server side from the histogram (quantiles
   interpolated inside the 1 ms buckets; ``Telemetry.slo_attainment`` counts errors as
   misses).

What each side measures: the plugin reads TorchServe's access log, whose latency runs from
when the frontend has read the request to when it has written the response, in whole ms.
The client adds its own HTTP stack and the loopback hop; on this 2-core box Locust also
competes with the server for CPU. The report shows the raw differences and the mean
client-minus-server gap, which estimates that overhead; nothing is subtracted.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsadapt.constants import REPO_DIR
from tsadapt.experiments.bench_schedule import read_records
from tsadapt.plugin.adapt_client import AdaptClient, Telemetry
from tsadapt.serve.server import ServerConfig, start, stop

MODEL = "tabular"
SLO_MS = 100.0
LOCUSTFILE = REPO_DIR / "loadtests" / "step.py"


@dataclass(frozen=True)
class Agreement:
    """Client-side against plugin-side figures over the same requests."""

    requests_client: int
    requests_server: int
    client_p50_ms: float
    client_p99_ms: float
    server_p50_ms: float
    server_p99_ms: float
    client_attainment: float
    server_attainment: float
    mean_gap_ms: float  # mean client latency - mean server latency (2xx)

    @property
    def p50_diff_ms(self) -> float:
        return self.client_p50_ms - self.server_p50_ms

    @property
    def p99_diff_ms(self) -> float:
        return self.client_p99_ms - self.server_p99_ms

    @property
    def attainment_diff_points(self) -> float:
        return 100.0 * (self.client_attainment - self.server_attainment)


def compare(latencies_ms: np.ndarray, ok: np.ndarray, window: Telemetry) -> Agreement:
    """Agreement of per-request client records with a telemetry window."""
    good = latencies_ms[ok]
    hist = window.latency_2xx_ms
    return Agreement(
        requests_client=int(len(ok)),
        requests_server=window.requests_total,
        client_p50_ms=float(np.percentile(good, 50)),
        client_p99_ms=float(np.percentile(good, 99)),
        server_p50_ms=hist.quantile(0.5),
        server_p99_ms=hist.quantile(0.99),
        client_attainment=float(np.mean(ok & (np.nan_to_num(latencies_ms, nan=np.inf) <= SLO_MS))),
        server_attainment=window.slo_attainment(SLO_MS),
        mean_gap_ms=float(good.mean() - hist.mean_ms),
    )


def run(duration_s: float = 50.0, seed: int = 3, model_store: Path | None = None) -> Agreement:
    """Start a server, replay the step scenario with Locust, compare both sides."""
    with tempfile.TemporaryDirectory(prefix="tsadapt-telemetry-") as tmp:
        config = ServerConfig.with_free_ports(
            workdir=Path(tmp) / "server",
            model_store=model_store or Path(tmp) / "store",
            models=(MODEL,),
        )
        server = start(config)
        try:
            adapt = AdaptClient(server.client())
            before = adapt.model(MODEL).telemetry
            records_path = Path(tmp) / "requests.csv"
            cmd = [
                sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
                "--host", server.inference_url, "--key-file", str(server.key_file),
                "--records", str(records_path), "--weights", f"{MODEL}=1",
                "--duration", str(duration_s), "--seed", str(seed), "--only-summary",
            ]  # fmt: skip
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=duration_s + 120, check=False
            )
            if proc.returncode not in (0, 1) or not records_path.is_file():
                raise RuntimeError(f"locust failed ({proc.returncode}): {proc.stdout[-2000:]}")
            records = read_records(records_path)
            sent = len(records.status)
            deadline = time.monotonic() + 15
            while True:
                window = adapt.model(MODEL).telemetry.minus(before)
                if window.requests_total >= sent or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            stop(config.workdir)
    ok = np.asarray(records.status) == 200
    return compare(np.asarray(records.latency_ms, dtype=float), ok, window)


def report(a: Agreement, command: str) -> str:
    def verdict(diff: float, tolerance: float) -> str:
        return "yes" if abs(diff) <= tolerance else "**no**"

    rows = [
        ("p50 (ms)", a.client_p50_ms, a.server_p50_ms, a.p50_diff_ms, "within 5 ms",
         verdict(a.p50_diff_ms, 5)),
        ("p99 (ms)", a.client_p99_ms, a.server_p99_ms, a.p99_diff_ms, "within 5 ms",
         verdict(a.p99_diff_ms, 5)),
        (f"SLO attainment at {SLO_MS:g} ms (%)", 100 * a.client_attainment,
         100 * a.server_attainment, a.attainment_diff_points, "within 2 points",
         verdict(a.attainment_diff_points, 2)),
    ]  # fmt: skip
    lines = [
        "# Plugin latency telemetry against client-measured latency",
        "",
        f"Generated by `{command}`: TorchServe with the plugin and the `{MODEL}` model, the",
        "Locust `step` scenario (open-loop Poisson arrivals stepping through 20-80 req/s) on",
        "127.0.0.1. Method: see `experiments/telemetry_check.py` (the plugin's cumulative",
        "histogram read before and after the run; the difference is exactly this run).",
        "",
        f"Requests: {a.requests_client} sent by Locust, {a.requests_server} counted by the plugin.",
        "",
        "| metric | client (Locust) | server (plugin) | client - server | target | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name, c, s, d, target, met in rows:
        lines.append(f"| {name} | {c:.2f} | {s:.2f} | {d:+.2f} | {target} | {met} |")
    lines += [
        "",
        f"Mean client - server gap over 2xx answers: {a.mean_gap_ms:+.2f} ms. That is the",
        "client's own HTTP stack, the loopback hop and CPU contention between Locust and",
        "TorchServe on this machine; the plugin's figure starts when the frontend has read",
        "the request and ends when it has written the response (whole ms, from the access",
        "log). Nothing is subtracted from either side.",
    ]
    return "\n".join(lines) + "\n"
