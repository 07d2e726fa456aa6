"""The ``/adapt`` plugin inside a real TorchServe (session fixture ``torchserve``)."""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from tsadapt.client import TorchServeClient
from tsadapt.constants import BATCH_ID_HEADER
from tsadapt.plugin.adapt_client import AdaptClient, AdaptError, ModelNotFoundError, ModelState

pytestmark = pytest.mark.server

MODEL = "tabular"


def tabular_payload() -> dict[str, Any]:
    """One valid request body for the ``tabular`` demo model (the only place that knows it)."""
    return {"features": [0.1 * i for i in range(16)]}


@contextmanager
def closed_loop_load(
    torchserve: Any, threads: int, record: Callable[[requests.Response], None]
) -> Iterator[None]:
    """``threads`` clients, each sending the next ``tabular`` request as soon as the last one
    is answered, for as long as the ``with`` block runs; ``record`` sees every response."""
    stop = threading.Event()
    lock = threading.Lock()

    def load() -> None:
        client = TorchServeClient(
            torchserve.inference_url, torchserve.management_url, torchserve.keys, timeout_s=30
        )
        while not stop.is_set():
            resp = client.predict(MODEL, tabular_payload())
            with lock:
                record(resp)

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(load) for _ in range(threads)]
        try:
            yield
        finally:
            stop.set()
            for f in futures:
                f.result()


@pytest.fixture(scope="module")
def adapt(torchserve_session: Any) -> AdaptClient:
    return AdaptClient(torchserve_session.client)


@pytest.fixture
def restore_batching(adapt: AdaptClient) -> Iterator[ModelState]:
    """The model's batching before the test; put back afterwards."""
    before = adapt.model(MODEL)
    yield before
    adapt.set_batching(MODEL, before.batch_size, before.max_batch_delay_ms)


def predict_ok(client: TorchServeClient) -> float:
    """One request; its client-side latency in ms (asserts a 200)."""
    start = time.perf_counter()
    resp = client.predict(MODEL, tabular_payload())
    elapsed = (time.perf_counter() - start) * 1000
    assert resp.status_code == 200, resp.text
    return elapsed


def wait_for_count(adapt: AdaptClient, older: ModelState, n: int) -> ModelState:
    """Re-read until the plugin has seen ``n`` more 2xx requests (the access log is async)."""
    deadline = time.monotonic() + 5
    while True:
        now = adapt.model(MODEL)
        seen = now.telemetry.responses_2xx - older.telemetry.responses_2xx
        if seen >= n or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


def test_lists_every_model_with_live_state(torchserve: Any, adapt: AdaptClient) -> None:
    states = {m.name: m for m in adapt.models()}
    assert set(torchserve.client.list_models()) == set(states)
    for state in states.values():
        assert state.running_workers >= 1
        assert state.queue_capacity == state.queue_depth + state.queue_remaining_capacity
        assert state.oldest_queued_age_ms >= 0
        assert state.telemetry.access_log_attached
        assert len(state.telemetry.latency_2xx_ms.counts) == 138


def test_put_changes_batching_live(
    torchserve: Any, adapt: AdaptClient, restore_batching: ModelState
) -> None:
    new = adapt.set_batching(MODEL, batch_size=7, max_batch_delay_ms=33)
    assert (new.batch_size, new.max_batch_delay_ms) == (7, 33)
    described = torchserve.client.describe(MODEL)
    assert (described["batchSize"], described["maxBatchDelay"]) == (7, 33)
    only_delay = adapt.set_batching(MODEL, max_batch_delay_ms=0)
    assert (only_delay.batch_size, only_delay.max_batch_delay_ms) == (7, 0)
    predict_ok(torchserve.client)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("", "batch_size"),
        ("batch_size=abc", "batch_size"),
        ("batch_size=-1", "batch_size"),
        ("batch_size=0", "batch_size"),
        ("batch_size=2.5", "batch_size"),
        ("batch_size=99999999999999999999", "batch_size"),
        ("batch_size=100000", "batch_size"),
        ("max_batch_delay_ms=-5", "max_batch_delay_ms"),
        ("max_batch_delay_ms=60001", "max_batch_delay_ms"),
        ("max_batch_delay_ms=1e3", "max_batch_delay_ms"),
        ("batch_size=4&max_batch_delay_ms=x", "max_batch_delay_ms"),
        ("batch_size=4&batch_size=5", "batch_size"),
        ("batchsize=4", "batchsize"),
    ],
)
def test_bad_parameters_are_400(
    torchserve: Any, adapt: AdaptClient, restore_batching: ModelState, query: str, param: str
) -> None:
    resp = torchserve.client.request("management", "PUT", f"adapt/models/{MODEL}?{query}")
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["code"] == 400 and body["type"] == "BadRequest"
    assert param in body["message"]
    after = adapt.model(MODEL)
    assert (after.batch_size, after.max_batch_delay_ms) == (
        restore_batching.batch_size,
        restore_batching.max_batch_delay_ms,
    )


def test_unknown_model_and_wrong_method(torchserve: Any, adapt: AdaptClient) -> None:
    with pytest.raises(ModelNotFoundError):
        adapt.model("no-such-model")
    with pytest.raises(ModelNotFoundError):
        adapt.set_batching("no-such-model", batch_size=2)
    for method in ("POST", "DELETE"):
        resp = torchserve.client.request("management", method, f"adapt/models/{MODEL}")
        assert resp.status_code == 405, resp.text
        assert resp.json()["code"] == 405
    with pytest.raises(AdaptError) as err:
        adapt.set_batching(MODEL, batch_size=10**9)
    assert err.value.status == 400


def test_requires_the_management_token(torchserve: Any) -> None:
    if torchserve.keys.path is None:
        pytest.skip("token auth is off")
    url = f"{torchserve.management_url}/adapt/models"
    assert 400 <= requests.get(url, timeout=10).status_code < 500
    bad = {"Authorization": "Bearer not-the-key"}
    assert 400 <= requests.get(url, headers=bad, timeout=10).status_code < 500
    inference_key = {"Authorization": f"Bearer {torchserve.keys.token('inference')}"}
    assert 400 <= requests.get(url, headers=inference_key, timeout=10).status_code < 500


@pytest.mark.slow
def test_changes_under_load_lose_no_request(
    torchserve: Any, adapt: AdaptClient, restore_batching: ModelState
) -> None:
    statuses: list[int] = []
    settings = [(1, 0), (16, 50), (4, 5)]
    with closed_loop_load(torchserve, 8, lambda resp: statuses.append(resp.status_code)):
        for _ in range(4):
            for batch, delay in settings:
                state = adapt.set_batching(MODEL, batch, delay)
                assert (state.batch_size, state.max_batch_delay_ms) == (batch, delay)
                time.sleep(0.25)
    assert len(statuses) > 50
    assert [s for s in statuses if s != 200] == []


def test_histogram_agrees_with_client_latency(torchserve: Any, adapt: AdaptClient) -> None:
    n = 60
    before = adapt.model(MODEL)
    client_ms = sorted(predict_ok(torchserve.client) for _ in range(n))
    after = wait_for_count(adapt, before, n)
    window = after.telemetry.minus(before.telemetry)
    hist = window.latency_2xx_ms
    assert window.responses_2xx == n
    assert window.requests_total == n
    client_p50 = statistics.median(client_ms)
    # Server-side time excludes the client's own overhead, so it is (a little) lower.
    assert hist.quantile(0.5) <= client_p50 + 1.0
    assert client_p50 - hist.quantile(0.5) < 25.0
    assert hist.mean_ms <= statistics.mean(client_ms) + 1.0
    # Every server-side latency is at most the slowest client latency; compare at the first
    # bucket bound above it (fraction_within interpolates inside a bucket).
    bound = min(b for b in hist.bucket_upper_ms if b >= client_ms[-1] + 1)
    assert hist.fraction_within(bound) == pytest.approx(1.0)


@pytest.mark.slow
def test_handler_batch_sizes_follow_each_change_within_one_batch(
    torchserve: Any, adapt: AdaptClient, restore_batching: ModelState
) -> None:
    """Under steady load, batch size 1 -> 16 -> 4 and delay 0 -> 50 -> 5, three times over.

    Every response names its batch (``X-TSAdapt-Batch-Id``), that batch's size and when it
    reached the handler. Of the batches that reached the handler after a change returned,
    only the first (the one already being formed) may keep the old size; every later batch
    respects the new bound, and the stock describe API agrees with the change.
    """
    batches: dict[str, tuple[float, int]] = {}  # batch id -> (handler start, size)
    statuses: list[int] = []

    def record(resp: requests.Response) -> None:
        statuses.append(resp.status_code)
        batches[resp.headers["X-TSAdapt-Batch-Id"]] = (
            float(resp.headers["X-TSAdapt-Batch-Start"]),
            int(resp.headers["X-TSAdapt-Batch-Size"]),
        )

    settings = [(1, 0), (16, 50), (4, 5)] * 3
    # (wall time the change was sent, wall time it returned, new batch size)
    changes: list[tuple[float, float, int]] = []
    with closed_loop_load(torchserve, 24, record):
        time.sleep(1.0)
        for batch, delay in settings:
            sent = time.time()
            adapt.set_batching(MODEL, batch, delay)
            changes.append((sent, time.time(), batch))
            described = torchserve.client.describe(MODEL)
            assert (described["batchSize"], described["maxBatchDelay"]) == (batch, delay)
            time.sleep(1.5)

    assert statuses and set(statuses) == {200}
    # A phase runs from a change's return to the sending of the next change.
    ends = [sent for sent, _, _ in changes[1:]] + [math.inf]
    for (_, start, bound), end in zip(changes, ends, strict=True):
        sizes = [size for began, size in sorted(batches.values()) if start < began < end]
        assert len(sizes) >= 3, f"too few batches after the change to {bound}: {sizes}"
        assert all(s <= bound for s in sizes[1:]), (bound, [s for s in sizes if s > bound], sizes)
        assert max(sizes[1:]) == bound, (bound, sizes)  # 24 requests in flight fill a batch


@pytest.mark.slow
def test_zero_delay_caps_batches_at_two(
    torchserve: Any, adapt: AdaptClient, restore_batching: ModelState
) -> None:
    """TorchServe 0.12 quirk that the simulator and the guards rely on (see policy/guards.py)."""

    def batch_sizes(delay_ms: int) -> list[int]:
        adapt.set_batching(MODEL, 16, delay_ms)
        sizes: dict[str, int] = {}

        def record(resp: requests.Response) -> None:
            sizes[resp.headers["X-TSAdapt-Batch-Id"]] = int(resp.headers["X-TSAdapt-Batch-Size"])

        with closed_loop_load(torchserve, 24, record):
            time.sleep(2.0)
        # The first batch may be formed under the previous delay (a worker reads the delay
        # when it starts waiting for a batch): skip it.
        in_order = sorted(sizes.items(), key=lambda kv: int(kv[0].rsplit("-", 1)[1]))
        return [size for _, size in in_order[1:]]

    assert max(batch_sizes(0)) <= 2
    assert max(batch_sizes(1)) > 2


def test_the_frontend_counts_batches_as_the_handler_does(
    torchserve: Any, adapt: AdaptClient, restore_batching: ModelState
) -> None:
    """The batch tap (any handler) against our handler's batch ids: one batch each."""
    adapt.set_batching(MODEL, batch_size=8, max_batch_delay_ms=50)
    before = adapt.model(MODEL)
    with ThreadPoolExecutor(max_workers=16) as pool:
        resps = list(
            pool.map(lambda _: torchserve.client.predict(MODEL, tabular_payload()), range(64))
        )
    assert all(r.status_code == 200 for r in resps)
    batches = len({r.headers[BATCH_ID_HEADER] for r in resps})
    deadline = time.monotonic() + 5
    now = wait_for_count(adapt, before, 64)
    while now.telemetry.batches_total - before.telemetry.batches_total < batches:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
        now = adapt.model(MODEL)
    assert now.telemetry.batch_log_attached
    assert now.telemetry.batches_total - before.telemetry.batches_total == batches
