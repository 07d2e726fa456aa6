"""Opt-in for a user's own handler: batch metrics, per-request 400s and Packrat placement.

One line on an existing ``BaseHandler`` subclass, nothing else changes::

    from tsadapt.handlers.optin import AdaptMixin

    class MyHandler(AdaptMixin, MyExistingHandler):  # or: MyHandler = adaptive(MyExistingHandler)
        pass

What it adds (the controller works without it; these make it see more):

- per batch, the counters ``AdaptBatches``, ``AdaptBatchRequests`` and
  ``AdaptHandlerMilliseconds`` (the controller's batch fill rate; ``tsadapt profile``'s
  handler time) and the ``X-TSAdapt-Batch-*`` response headers, as our own handlers emit;
  declare the metrics with ``metrics_config`` (``configs/metrics.yaml``) or set
  ``model_metrics_auto_detect=true`` in config.properties;
- per-request errors: when the handler raises on a batch, each request is served alone and
  only those that still fail get HTTP 400 with the exception's message; the rest succeed;
- the Packrat placement hook: threads and cores written by ``tsadapt packrat apply`` are
  applied at the next batch boundary (needs ``TSADAPT_PLACEMENT_DIR`` in the workers' env).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from tsadapt.handlers.base import (
    BATCH_ID_HEADER,
    BATCH_SIZE_HEADER,
    BATCH_START_HEADER,
    METRIC_BATCH_REQUESTS,
    METRIC_BATCHES,
    METRIC_HANDLER_MS,
)
from tsadapt.packrat_cpu.placement import PLACEMENT_HEADER, WorkerPlacement

logger = logging.getLogger(__name__)


def _error_answer(message: str) -> dict[str, Any]:
    return {"code": 400, "type": "InvalidInput", "message": message}


class AdaptMixin:
    """Put first in the bases of a ``BaseHandler`` subclass (see the module docstring)."""

    placement: WorkerPlacement | None = None
    batches_served: int = 0

    def initialize(self, context: Any) -> None:
        self.placement = WorkerPlacement.from_env(context.model_name)
        if self.placement is not None:
            self.placement.maybe_apply()
        super().initialize(context)  # type: ignore[misc]
        self.batches_served = 0

    def handle(self, data: list[Any], context: Any) -> list[Any]:
        started, started_wall = time.perf_counter(), time.time()
        if self.placement is not None:
            self.placement.maybe_apply()
        try:
            answers = super().handle(data, context)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - isolate the requests that fail
            if len(data) == 1:
                answers = [self._refuse(context, 0, exc)]
            else:
                answers = [self._one(data, context, i) for i in range(len(data))]
        self._report(context, len(data), started, started_wall)
        return answers

    def _one(self, data: list[Any], context: Any, idx: int) -> Any:
        """Serve request ``idx`` alone; a failure becomes its 400."""
        try:
            return super().handle([data[idx]], context)[0]  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - this request's own error
            return self._refuse(context, idx, exc)

    @staticmethod
    def _refuse(context: Any, idx: int, exc: Exception) -> dict[str, Any]:
        message = str(exc) or type(exc).__name__
        context.set_response_status(400, message, idx)
        return _error_answer(message)

    def _report(self, context: Any, size: int, started: float, started_wall: float) -> None:
        self.batches_served += 1
        batch_id = f"{os.getpid()}-{self.batches_served}"
        placement = self.placement.header_value() if self.placement is not None else None
        for idx in range(size):
            context.set_response_header(idx, BATCH_SIZE_HEADER, str(size))
            context.set_response_header(idx, BATCH_ID_HEADER, batch_id)
            context.set_response_header(idx, BATCH_START_HEADER, f"{started_wall:.6f}")
            if placement is not None:
                context.set_response_header(idx, PLACEMENT_HEADER, placement)
        metrics = context.metrics
        metrics.add_counter(METRIC_BATCHES, 1)
        metrics.add_counter(METRIC_BATCH_REQUESTS, size)
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        metrics.add_metric(METRIC_HANDLER_MS, round(elapsed_ms, 3), "ms")


def adaptive(handler_class: type) -> type:
    """``handler_class`` with :class:`AdaptMixin` in front (same name, same module)."""
    return type(
        handler_class.__name__,
        (AdaptMixin, handler_class),
        {"__module__": handler_class.__module__, "__doc__": handler_class.__doc__},
    )
