"""The execution engine: applies guarded actions to TorchServe, idempotently, with retries.

Batch size and delay go through the plugin (``PUT /adapt/models/{name}``); workers through the
management API (``PUT /models/{name}?min_worker=N&max_worker=N&synchronous=true``), after the
plugin drained the leaving workers on a scale-down. Settings
that already hold are skipped. A call that still fails after the retries is reported in the
result; nothing here raises into the control loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from tsadapt import constants as C
from tsadapt.client import TorchServeClient, TorchServeError
from tsadapt.plugin.adapt_client import AdaptClient
from tsadapt.policy.loop import ApplyResult
from tsadapt.policy.types import Action, ModelSettings

logger = logging.getLogger(__name__)


class Actuator:
    """Applies :class:`Action` s; ``retries`` extra attempts with exponential backoff.

    The real server's half of :class:`tsadapt.policy.loop.Backend` (with the observer).
    """

    def __init__(
        self,
        client: TorchServeClient,
        retries: int = 2,
        backoff_s: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.adapt = AdaptClient(client, timeout_s=5.0, retries=0)
        self.retries = retries
        self.backoff_s = backoff_s
        self._sleep = sleep

    def _apply_once(self, model: str, changes: dict[str, int], current_workers: int) -> None:
        batching = {k: v for k, v in changes.items() if k != "workers"}
        if batching:
            self.adapt.set_batching(model, **batching)
        if "workers" in changes:
            if changes["workers"] < current_workers:
                self._drain(model, changes["workers"])
            self.client.scale_workers(model, changes["workers"], synchronous=True)

    def _drain(self, model: str, keep: int) -> None:
        """Let the leaving workers finish their batch (a plain scale-down can fail one)."""
        try:
            self.adapt.drain(model, keep, C.DRAIN_TIMEOUT_MS)
        except Exception as exc:  # noqa: BLE001 - the scale-down still goes ahead
            logger.warning(
                "drain %s to %d workers failed, scaling down anyway: %s", model, keep, exc
            )

    def apply_one(self, action: Action, current: ModelSettings) -> ApplyResult | None:
        """Apply one action; None when it changes nothing."""
        changes = action.changes(current)
        if not changes:
            return None
        error = None
        for attempt in range(1, self.retries + 2):
            try:
                self._apply_once(action.model, changes, current.workers)
                logger.info("applied %s %s", action.model, changes)
                return ApplyResult(action.model, changes, True, attempt)
            except Exception as exc:  # noqa: BLE001 - reported, never raised into the loop
                error = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "apply %s %s failed (try %d): %s", action.model, changes, attempt, error
                )
                if _refused(exc):  # the same call would be refused again (model gone, bad value)
                    return ApplyResult(action.model, changes, False, attempt, error)
                if attempt <= self.retries:
                    self._sleep(self.backoff_s * 2 ** (attempt - 1))
        return ApplyResult(action.model, changes, False, self.retries + 1, error)

    def apply(
        self, actions: tuple[Action, ...], current: Mapping[str, ModelSettings]
    ) -> tuple[ApplyResult, ...]:
        """Apply every action against the observed ``current`` settings."""
        results = []
        for action in actions:
            result = self.apply_one(action, current[action.model])
            if result is not None:
                results.append(result)
        return tuple(results)


def _refused(exc: Exception) -> bool:
    """A 4xx answer: the server understood the call and said no (not worth retrying)."""
    return isinstance(exc, TorchServeError) and 400 <= exc.status < 500


def restore_actions(
    desired: dict[str, ModelSettings], live: dict[str, ModelSettings]
) -> tuple[Action, ...]:
    """Actions that bring ``live`` back to ``desired`` (after a server restart)."""
    actions = []
    for name, want in desired.items():
        if name in live and live[name] != want:
            actions.append(Action(name, want.batch_size, want.max_batch_delay_ms, want.workers))
    return tuple(actions)
