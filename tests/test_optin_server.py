"""The handler opt-in inside a real TorchServe: a user's ``BaseHandler`` with ``AdaptMixin``
archived as a ``.mar`` and registered on the session's server. A bad request gets its own
400 while its batch-mates succeed; out of memory fails the batch with TorchServe's own 507,
and the worker keeps serving."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tsadapt.constants import BATCH_ID_HEADER, BATCH_SIZE_HEADER

pytestmark = [pytest.mark.server, pytest.mark.slow]

MODEL = "optinmlp"
BATCH = 3
HANDLER_PY = """import json

import torch
from ts.torch_handler.base_handler import BaseHandler

from tsadapt.handlers.optin import AdaptMixin


class MyHandler(AdaptMixin, BaseHandler):
    def initialize(self, context):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 2).eval()
        self.initialized = True

    def preprocess(self, data):
        bodies = [r.get("body") or r.get("data") for r in data]
        bodies = [b if isinstance(b, dict) else json.loads(b) for b in bodies]
        if any(b.get("oom") for b in bodies):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return torch.stack([torch.tensor(b["x"], dtype=torch.float32) for b in bodies])

    def postprocess(self, data):
        return data.argmax(dim=1).tolist()
"""
GOOD = {"x": [1.0, 2.0, 3.0, 4.0]}


@pytest.fixture(scope="module")
def optin_model(torchserve_session, tmp_path_factory: pytest.TempPathFactory) -> str:
    torchserve = torchserve_session
    home = tmp_path_factory.mktemp("optin")
    (home / "handler.py").write_text(HANDLER_PY)
    subprocess.run(
        [
            str(Path(sys.executable).parent / "torch-model-archiver"),
            "--model-name", MODEL, "--version", "1.0",
            "--handler", str(home / "handler.py"),
            "--export-path", str(torchserve.config.model_store), "--force",
        ],
        check=True,
    )  # fmt: skip
    torchserve.client.checked(
        "management", "POST", "models",
        params={
            "url": f"{MODEL}.mar", "initial_workers": 1, "synchronous": "true",
            "batch_size": BATCH, "max_batch_delay": 3000,
        },
    )  # fmt: skip
    yield MODEL
    torchserve.client.checked("management", "DELETE", f"models/{MODEL}")


def batch_of(torchserve, bodies: list[dict]) -> list:
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(lambda b: torchserve.client.predict(MODEL, b), bodies))


def test_a_bad_request_gets_400_and_its_batch_mates_succeed(torchserve, optin_model) -> None:
    good, bad, good2 = batch_of(torchserve, [GOOD, {"y": 1}, GOOD])
    assert good.status_code == good2.status_code == 200, good.text
    assert bad.status_code == 400 and "'x'" in bad.json()["message"], bad.text
    assert good.headers[BATCH_SIZE_HEADER] == str(BATCH)
    assert good.headers[BATCH_ID_HEADER] == bad.headers[BATCH_ID_HEADER]


def test_out_of_memory_fails_the_batch_with_507(torchserve, optin_model) -> None:
    responses = batch_of(torchserve, [GOOD, {**GOOD, "oom": True}, GOOD])
    assert [r.status_code for r in responses] == [507] * BATCH, [r.text for r in responses]
    assert all(BATCH_ID_HEADER not in r.headers for r in responses)
    assert torchserve.client.predict(MODEL, GOOD).status_code == 200  # the worker lives on
