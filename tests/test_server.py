"""Integration tests on a real TorchServe (loopback ports, real .mar files, token auth on)."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests

from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.serve.server import ServerConfig, ServerError, start, status, stop

pytestmark = pytest.mark.server

NUM_CLASSES = {"image": 10, "text": 4, "tabular": 3}
MALFORMED = {
    "image": [
        (json.dumps({"image": [[[0.5] * 64] * 64] * 2}).encode(), "expected [3, 64, 64]"),
        (json.dumps({"image": [[["a"] * 64] * 64] * 3}).encode(), "numbers only"),
    ],
    "text": [
        (json.dumps({"tokens": list(range(1, 300))}).encode(), "too long"),
        (json.dumps({"tokens": ["a", "b"]}).encode(), "list of integers"),
    ],
    "tabular": [
        (b"{oops", "not valid JSON"),
        (json.dumps({"features": [1.0] * 3}).encode(), "expected [16]"),
        (json.dumps({"nothing": 1}).encode(), "missing field"),
    ],
}


def _worker_pids(client) -> dict[str, list[int]]:
    return {
        name: sorted(w["pid"] for w in client.describe(name)["workers"])
        for name in client.list_models()
    }


def test_models_registered_with_their_batch_settings(torchserve) -> None:
    for name, model in DEMO_MODELS.items():
        info = torchserve.client.describe(name)
        assert info["batchSize"] == model.batch_size
        assert info["maxBatchDelay"] == model.max_batch_delay_ms
        assert all(w["status"] == "READY" for w in info["workers"])


def test_fifty_concurrent_mixed_requests(torchserve, rng) -> None:
    """Valid -> 200 with the right shape; malformed -> 400 naming the problem; no restarts."""
    client = torchserve.client
    pids_before = _worker_pids(client)
    jobs = []
    for i in range(50):
        name = list(DEMO_MODELS)[i % 3]
        if i % 4 == 3:
            body, expected = MALFORMED[name][i % len(MALFORMED[name])]
            jobs.append((name, body, expected))
        else:
            jobs.append((name, json.dumps(DEMO_MODELS[name].example(rng)).encode(), None))

    def send(job):
        name, body, _ = job
        return client.request(
            "inference",
            "POST",
            f"predictions/{name}",
            data=body,
            headers={"Content-Type": "application/json"},
        )

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(send, jobs))
    for (name, _, expected), resp in zip(jobs, responses, strict=True):
        if expected is None:
            assert resp.status_code == 200, resp.text
            assert len(resp.json()["probabilities"]) == NUM_CLASSES[name]
        else:
            assert resp.status_code == 400, resp.text
            assert expected in resp.json()["message"]
    assert _worker_pids(client) == pids_before


def test_handler_reports_actual_batch_size(torchserve, rng) -> None:
    client = torchserve.client
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(
            pool.map(
                lambda _: client.predict("tabular", DEMO_MODELS["tabular"].example(rng)), range(64)
            )
        )
    sizes = [int(r.headers["X-TSAdapt-Batch-Size"]) for r in responses]
    assert all(1 <= s <= DEMO_MODELS["tabular"].batch_size for s in sizes)
    assert max(sizes) > 1, "16 requests in flight never formed a batch"


def test_custom_batch_metrics_reach_prometheus(torchserve, rng) -> None:
    torchserve.client.predict("text", DEMO_MODELS["text"].example(rng))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = requests.get(torchserve.metrics_url, timeout=10).text
        if re.search(r'AdaptBatchRequests\{.*ModelName="text"', text):
            break
        time.sleep(1)
    assert re.search(r'AdaptBatches\{.*ModelName="text"', text)
    assert re.search(r'AdaptHandlerMilliseconds\{.*ModelName="text"', text)


@pytest.mark.parametrize("api", ["inference", "management"])
def test_requests_without_token_are_refused(torchserve, api: str) -> None:
    url = (
        torchserve.inference_url + "/ping"
        if api == "inference"
        else torchserve.management_url + "/models"
    )
    if api == "inference":
        url = torchserve.inference_url + "/predictions/tabular"
        resp = requests.post(url, json={"features": [0.0] * 16}, timeout=10)
    else:
        resp = requests.get(url, timeout=10)
    assert resp.status_code in (400, 401)
    assert "InvalidKeyException" in resp.text


def test_client_rereads_rotated_management_key(torchserve) -> None:
    """TorchServe's token API issues a new key; the client re-reads key_file.json."""
    keys = torchserve.keys
    api_key = json.loads(Path(keys.path).read_text())["API"]["key"]
    old = keys.token("management")
    resp = requests.post(
        f"{torchserve.management_url}/token",
        params={"type": "management"},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    )
    assert resp.ok, resp.text
    assert json.loads(Path(keys.path).read_text())["management"]["key"] != old
    assert torchserve.client.list_models()  # old cached key fails once, then re-read
    assert keys.token("management") != old


def test_status_reports_models_workers_and_queue(torchserve) -> None:
    info = status(torchserve.workdir)
    names = {m["model"] for m in info["models"]}
    assert names == set(DEMO_MODELS)
    for m in info["models"]:
        assert m["queue_depth"] == 0 and m["workers"] and m["batch_size"] >= 1


def test_second_start_in_same_workdir_is_refused(torchserve) -> None:
    with pytest.raises(ServerError, match="already running"):
        start(ServerConfig.with_free_ports(workdir=torchserve.workdir))


def test_start_stop_leaves_no_process(tmp_path: Path, model_store: Path) -> None:
    config = ServerConfig.with_free_ports(
        workdir=tmp_path / "ts",
        model_store=model_store,
        models=("tabular",),
        auth=False,
        plugin=False,
    )
    server = start(config)
    try:
        root = psutil.Process(server.pid)
        tree = [root, *root.children(recursive=True)]
        assert any("org.pytorch.serve.ModelServer" in p.cmdline() for p in tree)  # frontend
        assert any("model_service_worker" in " ".join(p.cmdline()) for p in tree)  # worker
        assert requests.post(
            f"{server.inference_url}/predictions/tabular", json={"features": [0.1] * 16}, timeout=30
        ).ok  # auth off: no token needed
    finally:
        assert stop(config.workdir)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)
    assert not stop(config.workdir)
    with pytest.raises(ServerError, match="no server recorded"):
        status(config.workdir)
