"""The handler opt-in on a plain ``BaseHandler`` subclass, run in-process with TorchServe's own
``Context`` (no server): batch metrics and headers, and per-request 400s."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
import torch
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.torch_handler.base_handler import BaseHandler

from tsadapt.constants import BATCH_SIZE_HEADER, METRIC_BATCH_REQUESTS, METRIC_BATCHES
from tsadapt.handlers.optin import AdaptMixin, adaptive


class PlainHandler(BaseHandler):
    """A user's handler: a 4-feature linear model; a request without "x" raises."""

    def initialize(self, context: Any) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 2).eval()
        self.initialized = True

    def preprocess(self, data: list[dict[str, Any]]) -> torch.Tensor:
        return torch.stack([torch.tensor(json.loads(r["body"])["x"]) for r in data])

    def postprocess(self, data: torch.Tensor) -> list[int]:
        return data.argmax(dim=1).tolist()


class OptedIn(AdaptMixin, PlainHandler):
    pass


@pytest.fixture(params=[OptedIn, adaptive(PlainHandler)], ids=["mixin", "wrapper"])
def handler(request: pytest.FixtureRequest) -> tuple[Any, Context]:
    metrics = MetricsCacheYamlImpl(
        config_file_path=str(resources.files("tsadapt.configs").joinpath("metrics.yaml"))
    )
    context = Context(
        "plain", ".", {"model": {}}, 8, None, "0.12.0", metrics=metrics, model_yaml_config={}
    )
    context.metrics.model_name = "plain"
    h = request.param()
    h.initialize(context)
    return h, context


def run(handler: Any, context: Context, bodies: list[dict[str, Any]]) -> list[Any]:
    context.request_processor = [RequestProcessor({}) for _ in bodies]
    context.metrics.request_ids = {i: f"req-{i}" for i in range(len(bodies))}
    return handler.handle([{"body": json.dumps(b).encode()} for b in bodies], context)


def test_batch_counters(handler: tuple[Any, Context], monkeypatch: pytest.MonkeyPatch) -> None:
    h, context = handler
    seen: list[tuple[str, float]] = []
    original = context.metrics.add_counter
    monkeypatch.setattr(
        context.metrics,
        "add_counter",
        lambda name, value, *a, **k: (seen.append((name, value)), original(name, value, *a, **k)),
    )
    run(h, context, [{"x": [0.0, 0.0, 0.0, 1.0]}] * 5)
    assert (METRIC_BATCHES, 1) in seen and (METRIC_BATCH_REQUESTS, 5) in seen
    assert h.batches_served == 1


def test_a_bad_request_gets_its_own_400(handler: tuple[Any, Context]) -> None:
    h, context = handler
    good = {"x": [1.0, 2.0, 3.0, 4.0]}
    answers = run(h, context, [good, {"y": 1}, good])
    expected = int(h.model(torch.tensor([good["x"]])).argmax())
    assert answers[0] == answers[2] == expected
    assert answers[1]["code"] == 400 and "'x'" in answers[1]["message"]
    assert context.get_response_status(1)[0] == 400
    assert context.get_response_status(0)[0] == 200
    assert context.get_response_headers(2)[BATCH_SIZE_HEADER] == "3"


def test_the_plain_handler_alone_fails_the_whole_batch() -> None:
    h = PlainHandler()
    h.initialize(None)
    with pytest.raises(KeyError):
        h.preprocess([{"body": b'{"x": [1, 2, 3, 4]}'}, {"body": b'{"y": 1}'}])


class FaultyHandler(PlainHandler):
    """Raises ``fault`` in the model whenever a request asks for it ("fault": true)."""

    fault: BaseException = MemoryError()

    def preprocess(self, data: list[dict[str, Any]]) -> torch.Tensor:
        self.seen = [*getattr(self, "seen", []), len(data)]
        self.faulty = any(json.loads(r["body"]).get("fault") for r in data)
        return super().preprocess(data)

    def inference(self, data: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.faulty:
            raise self.fault
        return super().inference(data, *args, **kwargs)


@pytest.mark.parametrize(
    "fault",
    [
        MemoryError(),
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: CUBLAS_STATUS_NOT_INITIALIZED"),
    ],
    ids=["memory", "cuda-oom", "cuda-error"],
)
@pytest.mark.parametrize("size", [1, 3])
def test_a_server_fault_fails_the_batch_not_a_request(
    handler: tuple[Any, Context], fault: BaseException, size: int
) -> None:
    """Out of memory is the server's fault: it reaches TorchServe (which answers 507 for the
    batch), no request gets a 400 and the batch is not re-run one request at a time."""
    context = handler[1]
    h = adaptive(FaultyHandler)()
    h.fault = fault
    h.initialize(context)
    bodies = [{"x": [1.0, 2.0, 3.0, 4.0], "fault": True}] * size
    with pytest.raises(type(fault)):
        run(h, context, bodies)
    assert h.seen == [size]  # not re-run one request at a time
    assert all(context.get_response_status(i)[0] == 200 for i in range(size))


def test_the_demo_handler_lets_out_of_memory_through(tmp_path, rng) -> None:
    """AdaptiveHandler: the model running out of memory fails the batch (TorchServe: 507)."""
    from tsadapt.handlers.catalog import DEMO_MODELS
    from tsadapt.handlers.local import load_local

    local = load_local(DEMO_MODELS["tabular"], tmp_path)

    def out_of_memory(*_: Any) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    local.handler.model.forward = out_of_memory
    with pytest.raises(torch.cuda.OutOfMemoryError):
        local.run([{"body": DEMO_MODELS["tabular"].example(rng)}] * 2)
