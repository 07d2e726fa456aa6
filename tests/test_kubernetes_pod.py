"""The pod of configs/kubernetes/base, run with podman from the rendered manifest
(``tests/k8s_pod.py``): the init container, TorchServe with the demo models and the plugin,
the sidecar with its probes, and a short loopback load the sidecar adapts to.

Needs podman and the images of ``make images`` (configs/kubernetes/build-images.sh);
skipped with the reason when either is missing. Ports are published on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import requests

from tests import k8s_pod
from tsadapt.client import KeyFile, TorchServeClient
from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.sidecar.exporter import DEMAND_RATIO

pytestmark = [pytest.mark.container, pytest.mark.slow]

POD = "tsadapt-test"
#: the load: requests per demo model, sent by this many threads (bounded in count)
REQUESTS, THREADS = 600, 16
#: generous: the box is shared, and a first request waits for a worker's first batch
TIMEOUT_S = 120.0


def _missing() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman runc)"
    for image in {k8s_pod.SIDECAR_IMAGE, k8s_pod.TORCHSERVE_IMAGE}:
        if subprocess.run(["podman", "image", "exists", image], check=False).returncode != 0:
            return f"{image} is not built (make images)"
    return None


@pytest.fixture(scope="module")
def pod() -> Iterator[k8s_pod.Pod]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    try:
        yield k8s_pod.up(POD)
    finally:
        k8s_pod.down(POD)


def in_container(pod: k8s_pod.Pod, container: str, *cmd: str) -> str:
    return k8s_pod.podman("exec", pod.container(container), *cmd)


@pytest.fixture(scope="module")
def client(pod: k8s_pod.Pod, tmp_path_factory: pytest.TempPathFactory) -> TorchServeClient:
    key_file = tmp_path_factory.mktemp("keys") / "key_file.json"
    key_file.write_text(in_container(pod, "tsadapt", "cat", "/var/run/torchserve/key_file.json"))
    # the management API listens on the pod's loopback only: not reachable from here
    return TorchServeClient(pod.url("inference"), "http://127.0.0.1:9", KeyFile(key_file))


def decisions(pod: k8s_pod.Pod) -> list[dict[str, Any]]:
    text = in_container(pod, "tsadapt", "cat", "/var/run/tsadapt/decisions.jsonl")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_init_container_copied_the_plugin_jar(pod: k8s_pod.Pod) -> None:
    jar = "/opt/tsadapt/plugins/tsadapt-plugin.jar"
    copied = in_container(pod, "torchserve", "sha256sum", jar).split()[0]
    shipped = in_container(pod, "tsadapt", "sha256sum", jar).split()[0]
    assert copied == shipped
    state = k8s_pod.podman("inspect", "--format", "{{.State.ExitCode}}", pod.container("plugin"))
    assert state.strip() == "0"


def test_torchserve_serves_the_demo_models_with_the_plugin(
    pod: k8s_pod.Pod, client: TorchServeClient
) -> None:
    rng = np.random.default_rng(0)
    for name, model in DEMO_MODELS.items():
        assert client.predict(name, model.example(rng), timeout_s=TIMEOUT_S).status_code == 200
    # the plugin's /adapt API answers on the management port, inside the pod, with the token
    script = (
        "from tsadapt.client import KeyFile, TorchServeClient; import json; "
        "c = TorchServeClient('http://127.0.0.1:8080', 'http://127.0.0.1:8081', "
        "KeyFile('/var/run/torchserve/key_file.json')); "
        "print(json.dumps(c.checked('management', 'GET', 'adapt/models')))"
    )
    models = json.loads(in_container(pod, "tsadapt", "python", "-c", script))
    assert {m["name"] for m in models} == set(DEMO_MODELS)


def test_sidecar_attached_and_probes_answer(pod: k8s_pod.Pod) -> None:
    # up() returned once the probes passed; they answer again (a probe is polled: on a busy
    # box a tick may miss TorchServe, which makes /ready 503 until the next one reaches it)
    for path in ("/ready", "/live"):
        deadline = time.monotonic() + TIMEOUT_S
        while requests.get(pod.url("tsadapt-metrics", path), timeout=30).status_code != 200:
            assert time.monotonic() < deadline, f"{path} did not answer 200"
            time.sleep(1)
    metrics = requests.get(pod.url("tsadapt-metrics", "/metrics"), timeout=30).text
    assert any(line.startswith(DEMAND_RATIO) for line in metrics.splitlines())
    assert any(r.get("event") == "tick" for r in decisions(pod))


def test_load_makes_the_sidecar_change_a_batch_size(
    pod: k8s_pod.Pod, client: TorchServeClient
) -> None:
    before = [r for r in decisions(pod) if r.get("event") == "tick"][-1]["settings"]
    rng = np.random.default_rng(1)
    bodies = {name: [m.example(rng) for _ in range(32)] for name, m in DEMO_MODELS.items()}

    def send(i: int) -> int:
        name = list(DEMO_MODELS)[i % len(DEMO_MODELS)]
        try:
            return client.predict(name, bodies[name][i % 32], timeout_s=TIMEOUT_S).status_code
        except requests.RequestException:
            return 0

    with ThreadPoolExecutor(THREADS) as pool:
        statuses = list(pool.map(send, range(REQUESTS * len(DEMO_MODELS))))
    time.sleep(3)  # two ticks after the load
    ticks = [r for r in decisions(pod) if r.get("event") == "tick"]
    start = next(i for i, r in enumerate(ticks) if r["settings"] == before)
    # a batch size set in a tick that saw that model's requests arrive
    changed = {
        name
        for prev, r in zip(ticks[start:], ticks[start + 1 :], strict=False)
        for m in r["observation"]["models"]
        if m["arrival_rate_rps"] and m["arrival_rate_rps"] > 0
        for name in [m["name"]]
        if r["settings"][name]["batch_size"] != prev["settings"][name]["batch_size"]
    }
    assert statuses.count(200) == len(statuses), {s: statuses.count(s) for s in set(statuses)}
    assert changed, "no batch size changed under load"
