"""The handler base every demo model uses: JSON in, JSON out, each request validated alone.

A batch from TorchServe is a list of requests. One malformed request must not fail the
others, so :meth:`AdaptiveHandler.preprocess` validates each request on its own and keeps
its error; :meth:`postprocess` answers the bad ones with HTTP 400 and a JSON message and
the good ones with the model's output. The work is sized from ``len(data)``: the batch
size the worker was loaded with goes stale once the plugin changes it live.

Each batch reports its actual size and handler time as model metrics (declared in
``configs/metrics.yaml``) and as a response header, so the controller can compute the
batch fill rate. At the start of each batch the worker applies its Packrat placement
(threads and pinned cores, ``handlers/placement.py``) if the reconfigurer changed it.
Both are :class:`~tsadapt.handlers.batch_reply.BatchReporter`'s, shared with the opt-in
mixin. Out of memory in the model fails the batch as TorchServe fails it (507).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from ts.torch_handler.base_handler import BaseHandler

from tsadapt import constants as C
from tsadapt.handlers.batch_reply import BatchReporter, BatchStart, refuse
from tsadapt.handlers.placement import WorkerPlacement

logger = logging.getLogger(__name__)

#: Warm-up passes per batch size at worker start (``handler: {warmup_rounds: N}`` overrides).
WARMUP_ROUNDS = 2


class InvalidRequest(ValueError):
    """A request that cannot be served; the message names the problem and goes to the client."""


@dataclass(frozen=True)
class PreparedBatch:
    """The valid requests of one batch, stacked, plus the errors of the invalid ones."""

    size: int
    valid_indices: tuple[int, ...]
    inputs: Any  # a tensor (or tensors) for the valid requests; None when none is valid
    errors: dict[int, str] = field(default_factory=dict)
    start: BatchStart = BatchStart(0.0, 0.0)  # when the batch reached the handler


def json_decoder(choice: str | None = None) -> Callable[[str], Any]:
    """The ``loads`` that decodes raw bodies: the standard library's, or orjson's when
    ``choice`` (default: the ``TSADAPT_JSON_DECODER`` environment variable) is "orjson".
    Both raise a ``json.JSONDecodeError`` on bad JSON (orjson's is a subclass). orjson won
    no capacity on a 2-core box (``docs/results/frontend-tuning.md``), so it is opt-in."""
    choice = (os.environ.get(C.JSON_DECODER_ENV, "") if choice is None else choice).lower()
    if choice not in ("", "orjson", "stdlib"):
        raise ValueError(f"{C.JSON_DECODER_ENV} must be orjson or stdlib, got {choice!r}")
    if choice == "orjson":
        import orjson

        return orjson.loads
    return json.loads


try:
    _loads = json_decoder()
except (ValueError, ImportError) as exc:  # a bad setting must not keep the model from loading
    logger.error("%s; decoding request bodies with the standard library", exc)
    _loads = json.loads


def decode_body(request: dict[str, Any]) -> dict[str, Any]:
    """The JSON object of one request, whatever form TorchServe passed it in."""
    body = request.get("data")
    if body is None:
        body = request.get("body")
    if body is None:
        raise InvalidRequest("empty request: send a JSON object as the request body")
    if isinstance(body, (bytes, bytearray)):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"request body is not UTF-8: {exc}") from None
    if isinstance(body, str):
        try:
            body = _loads(body)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def require_field(body: dict[str, Any], name: str) -> Any:
    """``body[name]``, or an :class:`InvalidRequest` naming the missing field."""
    if name not in body:
        raise InvalidRequest(f"missing field '{name}'")
    return body[name]


def may_hold_booleans(request: dict[str, Any]) -> bool:
    """Whether a request's JSON may hold a boolean: False only when its raw text (as the
    worker got it) has no ``true`` or ``false`` token, True when it came decoded.

    ``torch.tensor`` takes every JSON value but numbers and booleans with an error, and
    booleans silently as 1.0 / 0.0; so without a boolean token the per-number walk of
    :func:`numeric_tensor` can be skipped (about 2 ms of a 64x64x3 image's ~3.5 ms parse).
    """
    body = request.get("data")
    if body is None:
        body = request.get("body")
    if isinstance(body, (bytes, bytearray)):
        return b"true" in body or b"false" in body
    if isinstance(body, str):
        return "true" in body or "false" in body
    return True


def numeric_tensor(
    value: Any, field_name: str, shape: tuple[int, ...], check_booleans: bool = True
) -> torch.Tensor:
    """A float32 tensor of exactly ``shape`` from nested JSON lists of numbers
    (``check_booleans=False``: the caller knows the JSON holds no boolean)."""
    if not isinstance(value, list):
        raise InvalidRequest(f"field '{field_name}' must be a list of numbers")
    try:
        tensor = torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(
            f"field '{field_name}' must hold numbers only, in a regular nested list ({exc})"
        ) from None
    if check_booleans and _has_non_numbers(value):
        raise InvalidRequest(f"field '{field_name}' must hold numbers only (no booleans)")
    if tuple(tensor.shape) != shape:
        raise InvalidRequest(
            f"field '{field_name}' has shape {list(tensor.shape)}, expected {list(shape)}"
        )
    if not torch.isfinite(tensor).all():
        raise InvalidRequest(f"field '{field_name}' holds NaN or infinite values")
    return tensor


def _has_non_numbers(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_non_numbers(v) for v in value)
    return isinstance(value, bool) or not isinstance(value, (int, float))


def softmax_answer(logits: torch.Tensor) -> dict[str, Any]:
    """The standard classification answer: label and class probabilities."""
    probabilities = torch.softmax(logits.float(), dim=-1)
    return {
        "label": int(probabilities.argmax()),
        "probabilities": [round(p, 6) for p in probabilities.tolist()],
    }


class AdaptiveHandler(BaseHandler):
    """Base for the demo handlers; subclasses implement :meth:`parse_request` only."""

    reporter: BatchReporter
    #: Whether the request being parsed may hold a boolean (:func:`may_hold_booleans`; set
    #: by :meth:`preprocess` before each :meth:`parse_request`).
    check_booleans: bool = True

    @property
    def placement(self) -> WorkerPlacement | None:
        return self.reporter.placement

    @property
    def batches_served(self) -> int:
        return self.reporter.batches_served

    def initialize(self, context: Any) -> None:
        """Load the model as ``BaseHandler`` does, take the Packrat placement, warm up."""
        # Threads and cores first, so the model loads and warms up where it will run.
        self.reporter = BatchReporter(context.model_name)
        super().initialize(context)
        settings = (getattr(self, "model_yaml_config", None) or {}).get("handler", {})
        threads = settings.get("threads")
        if threads and (self.placement is None or self.placement.applied is None):
            torch.set_num_threads(int(threads))
        self.warm_up(context, int(settings.get("warmup_rounds", WARMUP_ROUNDS)))
        logger.info("handler ready: device=%s threads=%d", self.device, torch.get_num_threads())

    def warm_up(self, context: Any, rounds: int) -> None:
        """Run the model on synthetic batches so the first real batch is not a cold one.

        A fresh worker's first forward pass allocates and selects kernels (about 300 ms for
        the text model on 2 cores against 8 ms warm); without this, every scale-up made the
        requests of the new worker's first batch wait for it. It runs on the worker's device:
        the GPU TorchServe assigned (``gpu_id`` in the context; ``BaseHandler`` put the model
        there), else the CPU.
        """
        example = self.warmup_input()
        if example is None or rounds <= 0:
            return
        configured = int((context.system_properties or {}).get("batch_size") or 1)
        started = time.perf_counter()
        with torch.inference_mode():
            for size in sorted({1, max(1, configured)}):
                inputs = self.collate([example] * size).to(self.device)
                for _ in range(rounds):
                    self.model(inputs)
        on_gpu = self.device is not None and self.device.type == "cuda"
        if on_gpu:  # kernels run asynchronously: the warm-up ends when the GPU is done
            torch.cuda.synchronize(self.device)
        logger.info(
            "warm-up: %.1f ms%s",
            (time.perf_counter() - started) * 1000.0,
            f", {torch.cuda.memory_reserved(self.device) / 2**20:.0f} MiB reserved on {self.device}"
            if on_gpu
            else "",
        )

    # --- to implement ---------------------------------------------------------------
    def parse_request(self, body: dict[str, Any]) -> torch.Tensor:
        """Validate one request body and return its model input (no batch dimension)."""
        raise NotImplementedError

    def warmup_input(self) -> torch.Tensor | None:
        """One valid model input (no batch dimension) for the warm-up; None skips it."""
        return None

    def collate(self, items: list[torch.Tensor]) -> torch.Tensor:
        """Stack single inputs into a batch (override for variable-length inputs)."""
        return torch.stack(items)

    def answer(self, output_row: torch.Tensor) -> dict[str, Any]:
        """Turn one row of model output into the JSON answer."""
        return softmax_answer(output_row)

    # --- BaseHandler hooks ------------------------------------------------------------
    def preprocess(self, data: list[dict[str, Any]]) -> PreparedBatch:
        start = self.reporter.begin()
        items: list[torch.Tensor] = []
        valid: list[int] = []
        errors: dict[int, str] = {}
        for idx, request in enumerate(data):
            try:
                self.check_booleans = may_hold_booleans(request)
                items.append(self.parse_request(decode_body(request)))
                valid.append(idx)
            except InvalidRequest as exc:
                errors[idx] = str(exc)
        inputs = self.collate(items) if items else None
        return PreparedBatch(len(data), tuple(valid), inputs, errors, start)

    def inference(self, batch: PreparedBatch, *args: Any, **kwargs: Any) -> Any:
        if batch.inputs is None:
            return batch, None
        with torch.inference_mode():
            outputs = self.model(batch.inputs.to(self.device))
        return batch, outputs.cpu()

    def postprocess(self, result: tuple[PreparedBatch, torch.Tensor | None]) -> list[Any]:
        batch, outputs = result
        answers: list[Any] = [None] * batch.size
        for row, idx in enumerate(batch.valid_indices):
            answers[idx] = self.answer(outputs[row])
        for idx, message in batch.errors.items():
            answers[idx] = refuse(self.context, idx, message)
        self.reporter.finish(self.context, batch.size, batch.start)
        return answers
