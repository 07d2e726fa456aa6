"""What every adapted handler does around a batch, written once for :class:`AdaptiveHandler`
(``handlers/base.py``) and :class:`AdaptMixin` (``handlers/optin.py``).

- :class:`BatchReporter`: the per-worker batch count, the Packrat placement applied at each
  batch boundary, and per batch the ``X-TSAdapt-Batch-*`` headers and the counters
  ``AdaptBatches``, ``AdaptBatchRequests`` and ``AdaptHandlerMilliseconds``.
- :func:`refuse`: one request's HTTP 400 with a JSON message; its batch-mates are unaffected.
- :func:`is_server_fault`: the errors that are the server's, not the request's (out of
  memory, a CUDA failure). They must fail the batch the way TorchServe fails it (507 for out
  of resources, 5xx otherwise), never be blamed on a request as a 400.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from tsadapt.constants import (
    BATCH_ID_HEADER,
    BATCH_SIZE_HEADER,
    BATCH_START_HEADER,
    METRIC_BATCH_REQUESTS,
    METRIC_BATCHES,
    METRIC_HANDLER_MS,
)
from tsadapt.handlers.placement import PLACEMENT_HEADER, WorkerPlacement

#: Exception types that are always the server's fault.
SERVER_FAULTS: tuple[type[BaseException], ...] = (MemoryError, torch.cuda.OutOfMemoryError)


def is_server_fault(exc: BaseException) -> bool:
    """True for out-of-memory and CUDA failures: the batch fails as a whole (TorchServe's
    own rule answers those 507 "Out of resources"), no request is to blame."""
    if isinstance(exc, SERVER_FAULTS):
        return True
    return isinstance(exc, RuntimeError) and "CUDA" in str(exc)


def error_answer(message: str) -> dict[str, Any]:
    """The JSON body of a refused request."""
    return {"code": 400, "type": "InvalidInput", "message": message}


def refuse(context: Any, idx: int, message: str) -> dict[str, Any]:
    """Answer request ``idx`` of the batch with HTTP 400 and ``message``."""
    context.set_response_status(400, message, idx)
    return error_answer(message)


@dataclass(frozen=True)
class BatchStart:
    """When a batch reached the handler."""

    started: float  # perf_counter()
    started_wall: float  # time.time() at the same moment


class BatchReporter:
    """One worker's batch bookkeeping: placement, batch ids, headers and metrics."""

    def __init__(self, model_name: str) -> None:
        self.placement: WorkerPlacement | None = WorkerPlacement.from_env(model_name)
        self.batches_served = 0
        self.apply_placement()

    def apply_placement(self) -> None:
        """Apply the Packrat placement if the reconfigurer changed it (a batch boundary)."""
        if self.placement is not None:
            self.placement.maybe_apply()

    def begin(self) -> BatchStart:
        """At the start of a batch: apply the placement, note the time."""
        started, started_wall = time.perf_counter(), time.time()
        self.apply_placement()
        return BatchStart(started, started_wall)

    def finish(self, context: Any, size: int, start: BatchStart) -> None:
        """At the end of a batch of ``size`` requests: headers on each, metrics once."""
        self.batches_served += 1
        batch_id = f"{os.getpid()}-{self.batches_served}"
        placement = self.placement.header_value() if self.placement is not None else None
        for idx in range(size):
            context.set_response_header(idx, BATCH_SIZE_HEADER, str(size))
            context.set_response_header(idx, BATCH_ID_HEADER, batch_id)
            context.set_response_header(idx, BATCH_START_HEADER, f"{start.started_wall:.6f}")
            if placement is not None:
                context.set_response_header(idx, PLACEMENT_HEADER, placement)
        metrics = context.metrics
        metrics.add_counter(METRIC_BATCHES, 1)
        metrics.add_counter(METRIC_BATCH_REQUESTS, size)
        elapsed_ms = (time.perf_counter() - start.started) * 1000.0
        metrics.add_metric(METRIC_HANDLER_MS, round(elapsed_ms, 3), "ms")
