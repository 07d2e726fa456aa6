"""Handler unit tests: the real handlers and models in-process, TorchServe's Context, no server."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tsadapt.constants import BATCH_SIZE_HEADER, METRIC_BATCH_REQUESTS, METRIC_BATCHES
from tsadapt.handlers.catalog import DEMO_MODELS, demo_model
from tsadapt.handlers.local import LocalHandler, load_local

NUM_CLASSES = {"image": 10, "text": 4, "tabular": 3}


@pytest.fixture(scope="module", params=list(DEMO_MODELS))
def local(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LocalHandler:
    return load_local(DEMO_MODELS[request.param], tmp_path_factory.mktemp(request.param))


def _name(local: LocalHandler) -> str:
    return local.context.model_name


@pytest.mark.parametrize("batch", [1, 3, 9])
def test_valid_batch_answers_every_request(local: LocalHandler, rng, batch: int) -> None:
    model = DEMO_MODELS[_name(local)]
    out = local.run([{"body": model.example(rng)} for _ in range(batch)])
    assert len(out) == batch
    for idx, answer in enumerate(out):
        assert local.status(idx) == 200
        assert len(answer["probabilities"]) == NUM_CLASSES[model.name]
        assert math.isclose(sum(answer["probabilities"]), 1.0, abs_tol=1e-4)
        assert answer["label"] == int(np.argmax(answer["probabilities"]))
        assert local.header(idx, BATCH_SIZE_HEADER) == str(batch)


def test_same_input_same_answer_alone_or_batched(local: LocalHandler, rng) -> None:
    model = DEMO_MODELS[_name(local)]
    body = model.example(rng)
    alone = local.run([{"body": body}])[0]
    batched = local.run([{"body": model.example(rng)}, {"body": body}])[1]
    assert alone["label"] == batched["label"]
    assert np.allclose(alone["probabilities"], batched["probabilities"], atol=1e-4)


def test_bodies_as_bytes_and_text_are_accepted(local: LocalHandler, rng) -> None:
    import json

    body = DEMO_MODELS[_name(local)].example(rng)
    out = local.run([{"body": json.dumps(body).encode()}, {"data": json.dumps(body)}])
    assert [local.status(i) for i in range(2)] == [200, 200]
    assert out[0]["label"] == out[1]["label"]


COMMON_BAD = [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    ([1, 2, 3], "must be a JSON object"),
    ({}, "missing field"),
]
MODEL_BAD = {
    "image": [
        ({"image": [[0.0] * 64] * 64}, "shape [64, 64], expected [3, 64, 64]"),
        ({"image": [[["x"] * 64] * 64] * 3}, "numbers only"),
        ({"image": [[[True] * 64] * 64] * 3}, "numbers only"),
        ({"image": [[[float("nan")] * 64] * 64] * 3}, "NaN"),
        ({"image": "pixels"}, "must be a list"),
    ],
    "text": [
        ({"tokens": list(range(1, 200))}, "too long: 199 tokens"),
        ({"tokens": []}, "empty"),
        ({"tokens": [1, 2.5]}, "list of integers"),
        ({"tokens": [1, 99999]}, "outside 1..4095"),
        ({"text": 42}, "'text' must be a string"),
        ({"text": "a", "tokens": [1]}, "exactly one of"),
        ({"text": "word " * 200}, "too long"),
    ],
    "tabular": [
        ({"features": [1.0] * 15}, "shape [15], expected [16]"),
        ({"features": [[1.0] * 16]}, "shape [1, 16], expected [16]"),
        ({"features": ["a"] * 16}, "numbers only"),
        ({"rows": [1.0] * 16}, "missing field 'features'"),
        ({"features": [1.0] * 15 + [float("inf")]}, "infinite"),
    ],
}


@pytest.mark.parametrize(
    ("model_name", "body", "expected"),
    [(m, b, e) for m in DEMO_MODELS for b, e in COMMON_BAD + MODEL_BAD[m]],
)
def test_malformed_request_gets_400_and_batch_mates_succeed(
    model_name: str, body, expected: str, tmp_path_factory, rng
) -> None:
    local = _cached_local(model_name, tmp_path_factory)
    good = DEMO_MODELS[model_name].example(rng)
    out = local.run([{"body": good}, {"body": body}, {"body": good}])
    assert local.status(1) == 400
    assert out[1]["code"] == 400 and expected in out[1]["message"], out[1]["message"]
    assert local.status(0) == local.status(2) == 200
    assert out[0] == out[2] and "label" in out[0]


_LOCALS: dict[str, LocalHandler] = {}


def _cached_local(name: str, tmp_path_factory: pytest.TempPathFactory) -> LocalHandler:
    if name not in _LOCALS:
        _LOCALS[name] = load_local(DEMO_MODELS[name], tmp_path_factory.mktemp(f"bad-{name}"))
    return _LOCALS[name]


def test_all_invalid_batch_runs_no_model(tmp_path_factory) -> None:
    local = _cached_local("tabular", tmp_path_factory)
    out = local.run([{"body": {}}, {"body": b"x"}])
    assert [local.status(i) for i in range(2)] == [400, 400]
    assert all(o["code"] == 400 for o in out)


def test_batch_metrics_count_actual_batch_size(tmp_path_factory, rng) -> None:
    local = _cached_local("tabular", tmp_path_factory)
    seen: list[tuple[str, float]] = []
    original = local.context.metrics.add_counter
    local.context.metrics.add_counter = lambda name, value, *a, **k: (  # type: ignore[method-assign]
        seen.append((name, value)),
        original(name, value, *a, **k),
    )
    try:
        local.run([{"body": DEMO_MODELS["tabular"].example(rng)} for _ in range(5)])
    finally:
        local.context.metrics.add_counter = original  # type: ignore[method-assign]
    assert (METRIC_BATCHES, 1) in seen and (METRIC_BATCH_REQUESTS, 5) in seen


def test_work_is_sized_from_the_data_not_the_loaded_batch_size(tmp_path_factory, rng) -> None:
    local = _cached_local("tabular", tmp_path_factory)
    loaded = local.context.system_properties["batch_size"]
    batch = loaded * 3 + 1
    out = local.run([{"body": DEMO_MODELS["tabular"].example(rng)} for _ in range(batch)])
    assert len(out) == batch and all("label" in o for o in out)


def test_seeded_weights_are_identical_across_builds() -> None:
    a, b = demo_model("image").build(), demo_model("image").build()
    assert all(
        (x == y).all()
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_unknown_model_is_named() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        demo_model("resnet")


def test_model_file_defines_exactly_one_class() -> None:
    """TorchServe's BaseHandler refuses a model file with more than one class of its own."""
    import importlib

    from ts.utils.util import list_classes_from_module

    for model in DEMO_MODELS.values():
        module = importlib.import_module(f"tsadapt.handlers.models.{model.model_module}")
        assert len(list_classes_from_module(module)) == 1, model.model_file
        assert Path(model.handler_file).exists()
