"""Pure-Python parts of the plugin: histogram math, client error mapping, the jar build."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tsadapt.client import KeyFile, TorchServeClient
from tsadapt.plugin import build
from tsadapt.plugin.adapt_client import (
    AdaptClient,
    AdaptError,
    AdaptUnavailableError,
    CounterResetError,
    LatencyHistogram,
    ModelNotFoundError,
    PluginNotLoadedError,
    Telemetry,
)

#: The plugin's bucket bounds (LatencyHistogram.java), finite part.
BOUNDS = (
    list(range(1, 101))
    + list(range(110, 201, 10))
    + list(range(250, 1001, 50))
    + list(range(1500, 5001, 500))
    + [10_000, 30_000, 60_000]
)


def histogram_json(latencies_ms: list[int]) -> dict[str, Any]:
    """What the plugin would report after recording ``latencies_ms`` (le-buckets)."""
    counts = [0] * (len(BOUNDS) + 1)
    for ms in latencies_ms:
        counts[next((i for i, b in enumerate(BOUNDS) if b >= ms), len(BOUNDS))] += 1
    return {
        "bucket_upper_ms": BOUNDS,
        "counts": counts,
        "count": len(latencies_ms),
        "sum_ms": sum(latencies_ms),
    }


def hist(latencies_ms: list[int]) -> LatencyHistogram:
    return LatencyHistogram.from_json(histogram_json(latencies_ms))


def telemetry_json(ok_ms: list[int], n4xx: int = 0, n5xx: int = 0) -> dict[str, Any]:
    return {
        "access_log_attached": True,
        "since_epoch_ms": 1_700_000_000_000,
        "requests_total": len(ok_ms) + n4xx + n5xx,
        "responses_2xx": len(ok_ms),
        "responses_4xx": n4xx,
        "responses_5xx": n5xx,
        "responses_other": 0,
        "latency_2xx_ms": histogram_json(ok_ms),
    }


def state_json(name: str = "tabular", batch_size: int = 4, delay: int = 10) -> dict[str, Any]:
    return {
        "name": name,
        "version": "1.0",
        "batch_size": batch_size,
        "max_batch_delay_ms": delay,
        "min_workers": 1,
        "max_workers": 1,
        "running_workers": 1,
        "workers_total": 1,
        "queue_depth": 0,
        "queue_remaining_capacity": 100,
        "queue_capacity": 100,
        "oldest_queued_age_ms": 0.0,
        "timestamp_ms": 1_700_000_000_500,
        "telemetry": telemetry_json([5, 6, 7]),
    }


# --- histogram math -----------------------------------------------------------------------


def test_histogram_parses_plugin_json() -> None:
    h = hist([3, 3, 50, 70_000])
    assert h.bucket_upper_ms[-1] == math.inf
    assert len(h.bucket_upper_ms) == len(BOUNDS) + 1 == len(h.counts)
    assert h.count == 4
    assert h.counts[-1] == 1  # 70 s lands in +Inf
    assert h.mean_ms == pytest.approx((3 + 3 + 50 + 70_000) / 4)


def test_histogram_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        LatencyHistogram((1.0, math.inf), (1,), 0.0)


def test_quantiles_of_uniform_integer_latencies() -> None:
    h = hist(list(range(1, 101)))  # one request at each of 1..100 ms
    assert h.quantile(0.5) == pytest.approx(50.0)
    assert h.quantile(0.99) == pytest.approx(99.0)
    assert h.quantile(1.0) == pytest.approx(100.0)
    assert h.quantile(0.0) == pytest.approx(0.0)


def test_quantile_interpolates_inside_coarse_bucket() -> None:
    h = hist([120] * 10)  # all in (110, 120]
    assert h.quantile(0.5) == pytest.approx(115.0)
    assert 110.0 < h.quantile(0.99) <= 120.0


def test_quantile_in_overflow_bucket_returns_last_bound() -> None:
    assert hist([90_000]).quantile(0.5) == 60_000.0


def test_empty_histogram_gives_nan() -> None:
    h = hist([])
    assert math.isnan(h.quantile(0.5))
    assert math.isnan(h.fraction_within(100))
    assert math.isnan(h.mean_ms)


def test_quantile_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        hist([1]).quantile(1.5)


def test_fraction_within_exact_at_bounds_and_interpolated_between() -> None:
    h = hist([10, 20, 30, 140])
    assert h.fraction_within(10) == pytest.approx(0.25)
    assert h.fraction_within(30) == pytest.approx(0.75)
    assert h.fraction_within(29.5) == pytest.approx(0.5 + 0.25 * 0.5)
    assert h.fraction_within(135) == pytest.approx(0.75 + 0.25 * 0.5)  # (130, 140]
    assert h.fraction_within(60_000) == pytest.approx(1.0)
    assert h.fraction_within(0) == pytest.approx(0.0)


def test_minus_gives_the_window() -> None:
    older = hist([5, 5, 200])
    newer = hist([5, 5, 200, 7, 7, 7, 300])
    window = newer.minus(older)
    assert window.count == 4
    assert window.sum_ms == pytest.approx(7 * 3 + 300)
    assert window.quantile(0.5) == pytest.approx(6.0 + 2 / 3)


def test_minus_detects_counter_reset() -> None:
    with pytest.raises(CounterResetError):
        hist([5]).minus(hist([5, 6]))


def test_telemetry_window_and_slo_attainment() -> None:
    older = Telemetry.from_json(telemetry_json([10] * 10))
    newer = Telemetry.from_json(telemetry_json([10] * 10 + [20] * 6 + [300] * 2, n4xx=1, n5xx=1))
    window = newer.minus(older)
    assert window.requests_total == 10
    assert window.responses_2xx == 8
    assert window.error_rate == pytest.approx(0.2)
    assert window.server_error_rate == pytest.approx(0.1)  # the 4xx is the client's
    # 6 of 10 requests were answered 2xx within 100 ms; errors count as misses.
    assert window.slo_attainment(100) == pytest.approx(0.6)
    assert window.latency_2xx_ms.fraction_within(100) == pytest.approx(0.75)


def test_telemetry_restart_is_a_reset() -> None:
    a = telemetry_json([10])
    b = dict(telemetry_json([10, 10]), since_epoch_ms=a["since_epoch_ms"] + 1)
    with pytest.raises(CounterResetError):
        Telemetry.from_json(b).minus(Telemetry.from_json(a))


# --- client against a scripted local HTTP server ------------------------------------------

Reply = tuple[int, Any] | Callable[[], tuple[int, Any]]


class FakeTorchServe:
    """Answers queued replies in order on 127.0.0.1 and records each request."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                parts = urlsplit(self.path)
                fake.requests.append(
                    {
                        "method": self.command,
                        "path": parts.path,
                        "query": parse_qs(parts.query),
                        "auth": self.headers.get("Authorization"),
                    }
                )
                reply = fake.replies.pop(0) if fake.replies else (500, {"message": "no reply"})
                status, body = reply() if callable(reply) else reply
                data = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = _answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake() -> Iterator[FakeTorchServe]:
    server = FakeTorchServe()
    yield server
    server.close()


def make_client(url: str, keys: KeyFile | None = None, **kwargs: Any) -> AdaptClient:
    ts = TorchServeClient(url, url, keys or KeyFile(None))
    return AdaptClient(ts, backoff_s=0.0, **kwargs)


def test_model_parses_state_and_sends_token(fake: FakeTorchServe, tmp_path: Path) -> None:
    key_file = tmp_path / "key_file.json"
    key_file.write_text(json.dumps({"management": {"key": "mgmt"}, "inference": {"key": "inf"}}))
    fake.replies.append((200, state_json(batch_size=8)))
    state = make_client(fake.url, KeyFile(key_file)).model("tabular")
    assert state.name == "tabular" and state.batch_size == 8
    assert state.telemetry.latency_2xx_ms.count == 3
    assert fake.requests[0]["path"] == "/adapt/models/tabular"
    assert fake.requests[0]["auth"] == "Bearer mgmt"


def test_models_lists_states(fake: FakeTorchServe) -> None:
    fake.replies.append((200, [state_json("image"), state_json("text")]))
    assert [m.name for m in make_client(fake.url).models()] == ["image", "text"]


def test_set_batching_sends_only_given_params(fake: FakeTorchServe) -> None:
    fake.replies += [(200, state_json(batch_size=16)), (200, state_json(delay=0))]
    client = make_client(fake.url)
    assert client.set_batching("tabular", batch_size=16).batch_size == 16
    assert client.set_batching("tabular", max_batch_delay_ms=0).max_batch_delay_ms == 0
    assert fake.requests[0]["method"] == "PUT"
    assert fake.requests[0]["query"] == {"batch_size": ["16"]}
    assert fake.requests[1]["query"] == {"max_batch_delay_ms": ["0"]}


def test_set_batching_needs_a_parameter(fake: FakeTorchServe) -> None:
    with pytest.raises(ValueError):
        make_client(fake.url).set_batching("tabular")
    assert fake.requests == []


def test_unknown_path_means_plugin_not_loaded(fake: FakeTorchServe) -> None:
    body = {"code": 404, "type": "ResourceNotFoundException", "message": "Requested resource..."}
    fake.replies.append((404, body))
    with pytest.raises(PluginNotLoadedError, match="plugins_path"):
        make_client(fake.url).models()
    assert len(fake.requests) == 1


def test_unknown_model_is_model_not_found(fake: FakeTorchServe) -> None:
    fake.replies.append((404, {"code": 404, "type": "ModelNotFound", "message": "Model not found"}))
    with pytest.raises(ModelNotFoundError) as err:
        make_client(fake.url).model("nope")
    assert err.value.status == 404


def test_bad_request_is_not_retried(fake: FakeTorchServe) -> None:
    body = {"code": 400, "type": "BadRequest", "message": "parameter 'batch_size' ..."}
    fake.replies += [(400, body), (200, state_json())]
    with pytest.raises(AdaptError) as err:
        make_client(fake.url).set_batching("tabular", batch_size=10**6)
    assert err.value.status == 400 and err.value.type == "BadRequest"
    assert "batch_size" in err.value.message
    assert len(fake.requests) == 1


def test_5xx_is_retried_then_succeeds(fake: FakeTorchServe) -> None:
    fake.replies += [(503, {"message": "busy"}), (500, b"oops"), (200, state_json())]
    assert make_client(fake.url, retries=3).model("tabular").name == "tabular"
    assert len(fake.requests) == 3


def test_persistent_5xx_gives_unavailable(fake: FakeTorchServe) -> None:
    fake.replies += [(500, {"message": "boom"})] * 5
    with pytest.raises(AdaptUnavailableError, match="boom"):
        make_client(fake.url, retries=2).models()
    assert len(fake.requests) == 3


def test_timeout_is_retried(fake: FakeTorchServe) -> None:
    def slow() -> tuple[int, Any]:
        time.sleep(0.5)
        return 200, state_json()

    fake.replies += [slow, (200, state_json(batch_size=2))]
    state = make_client(fake.url, timeout_s=0.2, retries=1).model("tabular")
    assert state.batch_size == 2


def test_connection_refused_gives_unavailable() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the client connects
    with pytest.raises(AdaptUnavailableError, match="ConnectionError"):
        make_client(f"http://127.0.0.1:{port}", retries=1).models()


def test_non_json_answer_is_an_error(fake: FakeTorchServe) -> None:
    fake.replies.append((200, b"<html>"))
    with pytest.raises(AdaptError, match="not JSON"):
        make_client(fake.url).models()


# --- the jar build ------------------------------------------------------------------------

needs_jdk = pytest.mark.skipif(
    shutil.which("javac") is None or shutil.which("jar") is None, reason="needs a JDK"
)


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fresh build per module (javac over model-server.jar takes seconds)."""
    return build.build_plugin(tmp_path_factory.mktemp("plugin"), force=True)


@needs_jdk
def test_build_plugin_caches_and_packs_service_file(plugin_dir: Path) -> None:
    out = plugin_dir
    jar = out / build.JAR_NAME
    listing = subprocess.run(["jar", "tf", str(jar)], capture_output=True, text=True).stdout
    assert "META-INF/services/org.pytorch.serve.servingsdk.ModelServerEndpoint" in listing
    assert "org/tsadapt/plugin/AdaptEndpoint.class" in listing
    assert [p.name for p in out.glob("*.jar")] == [build.JAR_NAME]
    mtime = jar.stat().st_mtime_ns
    assert build.build_plugin(out) == out
    assert jar.stat().st_mtime_ns == mtime  # cached
    (out / build.STAMP_NAME).write_text("stale\n")
    build.build_plugin(out)
    assert jar.stat().st_mtime_ns != mtime  # rebuilt
    assert (out / build.STAMP_NAME).read_text().strip() == build.source_hash(
        build.model_server_jar()
    )


def test_missing_javac_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(build.PluginBuildError, match="javac.*JDK"):
        build.build_plugin(tmp_path / "out", force=True)


JAVA_HARNESS = """
package org.tsadapt.plugin;

import java.util.List;
import java.util.Map;

public class Harness {
    static String intParam(String raw) {
        try {
            return String.valueOf(AdaptEndpoint.intParam(Map.of("p", List.of(raw)), "p"));
        } catch (AdaptEndpoint.ApiError e) {
            return e.code + ":" + e.getMessage();
        }
    }

    public static void main(String[] args) {
        for (String uri : args[0].split(",")) {
            System.out.println("uri " + AccessLogTap.modelFromUri(uri));
        }
        String line = "/127.0.0.1:44026 \\"POST /predictions/mlp HTTP/1.1\\" 503 48";
        AccessLogTap.AccessLine l = AccessLogTap.AccessLine.parse(line);
        System.out.println("line " + l.model + " " + l.status + " " + l.latencyMs);
        System.out.println("bad " + AccessLogTap.AccessLine.parse("garbage"));
        for (long ms : new long[] {0, 1, 2, 100, 101, 110, 111, 60000, 60001}) {
            System.out.println("bucket " + LatencyHistogram.bucketIndex(ms));
        }
        for (String raw : args[1].split(",")) {
            System.out.println("param " + intParam(raw));
        }
    }
}
"""


@needs_jdk
def test_java_parsing_and_validation(tmp_path: Path, plugin_dir: Path) -> None:
    """Compile a harness against the plugin jar: URI/line parsing, buckets, int params."""
    jar = plugin_dir / build.JAR_NAME
    cp = f"{jar}:{build.model_server_jar()}"
    src = tmp_path / "org" / "tsadapt" / "plugin" / "Harness.java"
    src.parent.mkdir(parents=True)
    src.write_text(JAVA_HARNESS)
    classes = tmp_path / "classes"
    subprocess.run(
        ["javac", "--release", "17", "-cp", cp, "-d", str(classes), str(src)], check=True
    )
    uris = [
        "/predictions/mlp",
        "/predictions/mlp/2.0?x=1",
        "/explanations/mlp",
        "/v1/models/mlp:predict",
        "/v2/models/mlp/infer",
        "/v2/models/mlp/versions/1/infer",
        "/models/mlp",
        "/ping",
        "/predictions/my%2Dmodel",
    ]
    params = ["0", "16", "-3", "1.5", "abc", "", "99999999999999999999", "2147483648", "007"]
    out = subprocess.run(
        ["java", "-cp", f"{classes}:{cp}", "org.tsadapt.plugin.Harness", ",".join(uris),
         ",".join(params)],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert [line[4:] for line in out if line.startswith("uri ")] == [
        "mlp", "mlp", "mlp", "mlp", "mlp", "mlp", "null", "null", "my-model",
    ]  # fmt: skip
    assert "line mlp 503 48" in out
    assert "bad null" in out
    buckets = [int(line.split()[1]) for line in out if line.startswith("bucket ")]
    assert buckets == [0, 0, 1, 99, 100, 100, 101, len(BOUNDS) - 1, len(BOUNDS)]
    got = [line[6:] for line in out if line.startswith("param ")]
    assert got[0] == "0" and got[1] == "16" and got[8] == "7"
    assert got[2].startswith("400:") and "negative" in got[2]
    assert all(g.startswith("400:") and "'p'" in g for g in got[2:8])
    assert "too large" in got[6] and "too large" in got[7]
