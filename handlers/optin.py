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
  only those that still fail get HTTP 400 with the exception's message; the rest succeed.
  Server faults are not the request's: out of memory (``MemoryError``,
  ``torch.cuda.OutOfMemoryError``) or a CUDA error fails the batch as TorchServe would
  (507 "Out of resources"), with no retry one by one;
- the Packrat placement hook: threads and cores written by ``tsadapt packrat apply`` are
  applied at the next batch boundary (needs ``TSADAPT_PLACEMENT_DIR`` in the workers' env).
"""

from __future__ import annotations

import logging
from typing import Any

from tsadapt.handlers.batch_reply import BatchReporter, is_server_fault, refuse
from tsadapt.handlers.placement import WorkerPlacement

logger = logging.getLogger(__name__)


class AdaptMixin:
    """Put first in the bases of a ``BaseHandler`` subclass (see the module docstring)."""

    reporter: BatchReporter | None = None

    @property
    def placement(self) -> WorkerPlacement | None:
        return self.reporter.placement if self.reporter is not None else None

    @property
    def batches_served(self) -> int:
        return self.reporter.batches_served if self.reporter is not None else 0

    def initialize(self, context: Any) -> None:
        self.reporter = BatchReporter(context.model_name)
        super().initialize(context)  # type: ignore[misc]

    def handle(self, data: list[Any], context: Any) -> list[Any]:
        if self.reporter is None:  # the handler's own initialize did not call super()'s
            self.reporter = BatchReporter(context.model_name)
        start = self.reporter.begin()
        try:
            answers = super().handle(data, context)  # type: ignore[misc]
        except Exception as exc:
            if is_server_fault(exc):
                raise  # the batch fails as TorchServe fails it; no request is to blame
            if len(data) == 1:
                answers = [self._refuse(context, 0, exc)]
            else:
                answers = [self._one(data, context, i) for i in range(len(data))]
        self.reporter.finish(context, len(data), start)
        return answers

    def _one(self, data: list[Any], context: Any, idx: int) -> Any:
        """Serve request ``idx`` alone; its own failure becomes its 400, a server fault
        fails the whole batch."""
        try:
            return super().handle([data[idx]], context)[0]  # type: ignore[misc]
        except Exception as exc:
            if is_server_fault(exc):
                raise
            return self._refuse(context, idx, exc)

    @staticmethod
    def _refuse(context: Any, idx: int, exc: Exception) -> dict[str, Any]:
        logger.info("request %d refused: %s: %s", idx, type(exc).__name__, exc)
        return refuse(context, idx, str(exc) or type(exc).__name__)


def adaptive(handler_class: type) -> type:
    """``handler_class`` with :class:`AdaptMixin` in front (same name, same module)."""
    return type(
        handler_class.__name__,
        (AdaptMixin, handler_class),
        {"__module__": handler_class.__module__, "__doc__": handler_class.__doc__},
    )
