"""The sidecar: the one control step (:mod:`tsadapt.policy.loop`) against the real server.

Fail-safe by construction: the sidecar only ever *changes* TorchServe's settings, so if it dies
the server keeps serving with the last ones. On start it adopts the live settings; when the
server is lost it keeps ticking (recording ``unreachable``), re-reads the server's state file
to reconnect, and on the first answer re-applies the settings it last had (a restarted server
comes back with its registration defaults). :meth:`Sidecar.stop` (SIGTERM) ends the loop after
the current tick.

The models under control are the registered ones the config names or its ``default:`` entry
covers (:meth:`ControllerConfig.for_models`), re-read every tick: a model registered later is
adopted, one unregistered is dropped (and gets its last settings back if it returns, as after
a server restart that registers its models only after it answers), a configured one that is
missing is warned about and watched for. The policy and the guards see only the controlled
models; the others are observed and logged (``unmanaged``) and never changed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsadapt import constants as C
from tsadapt.client import TorchServeClient
from tsadapt.policy.controller_config import ControllerConfig
from tsadapt.policy.loop import ApplyResult, LoopState, control_step, settings_after
from tsadapt.policy.types import (
    Action,
    ModelObservation,
    ModelSettings,
    Observation,
    Policy,
    settings_of,
)
from tsadapt.sidecar.actuator import Actuator, restore_actions
from tsadapt.sidecar.decision_log import DecisionLog
from tsadapt.sidecar.exporter import MetricsExporter
from tsadapt.sidecar.observer import Observer
from tsadapt.sidecar.policy_reload import PolicySource, reload_policy

logger = logging.getLogger(__name__)

#: Returns a client and the Prometheus metrics URL of the server to control (re-called to
#: reconnect, so a server restarted on new ports is found again).
Connect = Callable[[], tuple[TorchServeClient, str]]
#: Builds the policy for a config (re-called when the set of controlled models changes).
PolicyFactory = Callable[[ControllerConfig], Policy]


def rebuild_policy(policy: Policy, config: ControllerConfig) -> Policy:
    """``policy`` for ``config``'s models: a policy dataclass holding the config (PPO) or the
    per-model limits (rules) gets them replaced; any other policy is kept as it is."""
    if dataclasses.is_dataclass(policy) and not isinstance(policy, type):
        names = {f.name for f in dataclasses.fields(policy)}
        if "config" in names:
            return dataclasses.replace(policy, config=config)
        if "limits" in names:
            return dataclasses.replace(policy, limits=config.models)
    return policy


@dataclass(frozen=True)
class ServerBackend:
    """The real server as the loop's backend: the observer reads it, the actuator changes it."""

    observer: Observer
    actuator: Actuator

    def observe(self) -> Observation:
        return self.observer.observe()

    def apply(
        self, actions: tuple[Action, ...], current: Mapping[str, ModelSettings]
    ) -> tuple[ApplyResult, ...]:
        return self.actuator.apply(actions, current)


class Sidecar:
    """Runs one policy against one server until stopped or ``max_ticks`` ticks."""

    def __init__(
        self,
        config: ControllerConfig,
        policy: Policy,
        connect: Connect,
        decision_log: Path,
        metrics_port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        metrics_host: str = C.LOOPBACK,
        policy_factory: PolicyFactory | None = None,
        policy_source: PolicySource | None = None,
    ) -> None:
        #: The config as loaded; :attr:`config` is its version for the models served now.
        self.base_config = config
        self.config = config
        self.policy = policy
        self.policy_factory = policy_factory or (lambda cfg: rebuild_policy(self.policy, cfg))
        self.connect = connect
        self.clock = clock
        self.log = DecisionLog(decision_log)
        self.exporter = MetricsExporter(metrics_port, metrics_host, config)
        self.state = LoopState()
        self.desired: dict[str, ModelSettings] = {}
        self.tick_count = 0
        self._stop = threading.Event()
        self._observer: Observer | None = None
        self._actuator: Actuator | None = None
        self._lost = False
        self._restarts_seen = 0
        self._missing: tuple[str, ...] = ()
        self._synced = False
        #: Last settings of models that left (a server restart re-registers them later).
        self._remembered: dict[str, ModelSettings] = {}
        self._restore_pending = False
        self._left_alone: dict[str, str] = {}
        #: The file the policy was read from (None: a rule, nothing to reload).
        self.policy_source = policy_source
        self._reload = threading.Event()

    # --- connection -------------------------------------------------------------------
    def _reconnect(self) -> None:
        client, metrics_url = self.connect()
        self._observer = Observer(client, metrics_url, self.config, clock=self.clock)
        self._actuator = Actuator(client, self.config.retries, self.config.retry_backoff_s)
        self._restarts_seen = 0

    def start(self) -> None:
        """Connect, match the config to the registered models and adopt the live settings.

        Neither an unreachable server (the loop waits for it) nor a configured model the
        server does not serve (a warning; it is adopted once registered) is fatal.
        """
        logger.info("controller config: %s", self.config)
        logger.info(
            "policy %s, decision log %s, metrics %s",
            self.policy.name,
            self.log.path,
            self.exporter.url,
        )
        self.log.write(
            {
                "event": "start",
                "time_s": self.clock(),
                "wall_time": time.time(),
                "policy": self.policy.name,
                "config": self.config.as_dict(),
                "metrics_url": self.exporter.url,
            }
        )
        try:
            self._reconnect()
            assert self._observer is not None
            live = self._observer.live_settings()
        except Exception as exc:  # noqa: BLE001 - server down at start: wait for it
            logger.warning("server not reachable at start (%s); waiting for it", exc)
            self._lost = True
            return
        self._sync_models(live)
        self.desired = {n: live[n] for n in self.config.model_names}
        self.log.write({"event": "adopted", "time_s": self.clock(), "settings": self.desired})

    # --- the set of controlled models ------------------------------------------------------
    def _sync_models(self, live: dict[str, ModelSettings]) -> None:
        """Follow the registered models: adopt new ones, drop gone ones, warn about missing."""
        config, left = self.base_config.for_models(live)
        missing = tuple(n for n in self.base_config.model_names if n not in live)
        if missing != self._missing:
            for name in missing:
                logger.warning(
                    "models.%s: not registered on the server (registered: %s); watching for it",
                    name,
                    ", ".join(sorted(live)) or "none",
                )
            self._missing = missing
        if left != self._left_alone:
            for name, why in left.items():
                logger.warning("model %s is observed only, never changed: %s", name, why)
            self._left_alone = left
        if self._synced and config.model_names == self.config.model_names:
            return
        self._synced = True
        added = [n for n in config.model_names if n not in self.config.model_names]
        removed = [n for n in self.config.model_names if n not in config.model_names]
        self.config = config
        self.policy = self.policy_factory(config)
        if self._observer is not None:
            self._observer.config = config
        for name in removed:  # kept: a model that comes back gets its last settings again
            if name in self.desired:
                self._remembered[name] = self.desired[name]
        returning = [n for n in added if n in self._remembered]
        self._restore_pending = self._restore_pending or bool(returning)
        desired = {**{n: self._remembered.pop(n) for n in returning}, **self.desired}
        self.desired = {n: desired.get(n, live[n]) for n in config.model_names if n in live}
        if added or removed:
            logger.info("controlling %s (added %s, dropped %s)", config.model_names, added, removed)
        self.log.write(
            {
                "event": "models",
                "time_s": self.clock(),
                "controlled": config.model_names,
                "added": added,
                "removed": removed,
                "missing": missing,
                "left_alone": left,
            }
        )

    def stop(self) -> None:
        """Ask the loop to end after the current tick (safe from a signal handler)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Re-read the policy file before the next tick (safe from a signal handler: SIGHUP)."""
        self._reload.set()

    def _reload_policy(self) -> None:
        """The policy file as it is now replaces the running policy, or is refused and
        logged while the old policy keeps running; either way a decision-log record."""
        base = {"time_s": self.clock(), "wall_time": time.time(), "policy": self.policy.name}
        if self.policy_source is None:
            logger.warning(
                "SIGHUP: policy %s reads no policy file; nothing to reload", self.policy.name
            )
            self.log.write({**base, "event": "policy_reload_refused", "error": "no policy file"})
            return
        policy, source, record = reload_policy(self.policy_source, self.config)
        if policy is None:
            logger.error("policy reload refused, the old policy keeps running: %s", record["error"])
        else:
            self.policy, self.policy_source = policy, source
            logger.info(
                "policy reloaded from %s (sha256 %s -> %s)",
                source.path,
                record["old"]["sha256"][:12],
                source.sha256[:12],
            )
        self.log.write({**base, **record})

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # --- one tick ---------------------------------------------------------------------
    def tick(self) -> dict[str, Any]:
        """Observe, decide, guard, act and record once; never raises for server trouble."""
        if self._reload.is_set():
            self._reload.clear()
            self._reload_policy()
        self.tick_count += 1
        record: dict[str, Any] = {
            "tick": self.tick_count,
            "time_s": self.clock(),
            "wall_time": time.time(),
            "policy": self.policy.name,
        }
        try:
            if self._observer is None:
                self._reconnect()
            assert self._observer is not None and self._actuator is not None
            observation = self._observer.observe()
        except Exception as exc:  # noqa: BLE001 - lost the server: keep ticking
            self._lost = True
            self._observer = None
            record.update(event="unreachable", error=f"{type(exc).__name__}: {exc}")
            self.log.write(record)
            self.exporter.update(None, {}, {})
            return record
        restarted = self._observer.restarts > self._restarts_seen
        self._restarts_seen = self._observer.restarts
        self._sync_models(settings_of(observation))
        controlled, unmanaged = split_observation(observation, self.config.model_names)
        if not controlled.models:  # nothing to control (yet): observe and log only
            record.update(event="tick", observation=controlled, actions=(), applied=())
        elif self._lost or restarted or self._restore_pending:
            self._restore_pending = False
            record.update(self._reapply(controlled))
        else:
            record.update(self._control(controlled))
        if unmanaged:
            record["unmanaged"] = unmanaged
        self._lost = False
        self.log.write(record)
        overrides = Counter(o.model for o in record.get("overrides", ()))
        failures = Counter(r.model for r in record.get("applied", ()) if not r.ok)
        try:
            self.exporter.update(
                observation,
                dict(overrides),
                dict(failures),
                controlled=self.config.model_names,
                proposed=record.get("proposed", ()),
                emergencies=record.get("emergencies", ()),
                config=self.config,
            )
        except Exception:  # noqa: BLE001 - the metrics must never stop the control loop
            logger.exception("exporter update failed at tick %d", self.tick_count)
        return record

    def _control(self, observation: Observation) -> dict[str, Any]:
        assert self._observer is not None and self._actuator is not None
        backend = ServerBackend(self._observer, self._actuator)
        step = control_step(backend, self.policy, self.config, self.state, observation)
        self.state = step.state
        self.desired = step.settings
        for o in step.guarded.overrides:
            logger.info(
                "override %s %s: %s -> %s (%s: %s)",
                o.model,
                o.setting,
                o.proposed,
                o.applied,
                o.guard,
                o.reason,
            )
        return {
            "event": "tick",
            "observation": observation,
            "proposed": step.proposed,
            "actions": step.guarded.actions,
            "overrides": step.guarded.overrides,
            "emergencies": step.guarded.emergencies,
            "applied": step.applied,
            "settings": self.desired,
        }

    def _reapply(self, observation: Observation) -> dict[str, Any]:
        """The server is back (restarted or reachable again): restore the last settings."""
        assert self._actuator is not None
        live = settings_of(observation)
        if not self.desired:
            self.desired = dict(live)  # first contact: adopt what runs
        actions = restore_actions(self.desired, live)
        results = self._actuator.apply(actions, live)
        logger.warning("reconnected to the server; re-applied %d change(s)", len(results))
        self.desired = settings_after(live, results)
        return {
            "event": "reapply",
            "observation": observation,
            "actions": actions,
            "applied": results,
            "settings": self.desired,
        }

    # --- the loop ---------------------------------------------------------------------
    def run(self, max_ticks: int | None = None) -> int:
        """Tick every ``tick_s`` until stopped (or ``max_ticks``); return the ticks run."""
        self.start()
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                self.tick()
                if max_ticks is not None and self.tick_count >= max_ticks:
                    break
                next_at += self.config.tick_s
                delay = next_at - time.monotonic()
                if delay < 0:  # overran (slow scale call): do not try to catch up
                    next_at = time.monotonic()
                    delay = 0.0
                self._stop.wait(delay)
        finally:
            self.close()
        return self.tick_count

    def close(self) -> None:
        self.log.write(
            {
                "event": "stop",
                "time_s": self.clock(),
                "ticks": self.tick_count,
                "settings": self.desired,
            }
        )
        self.log.close()
        self.exporter.close()
        logger.info("sidecar stopped after %d tick(s)", self.tick_count)


def split_observation(
    observation: Observation, names: Iterable[str]
) -> tuple[Observation, tuple[ModelObservation, ...]]:
    """The observation of the ``names`` models only, and the other models' observations."""
    wanted = set(names)
    mine = tuple(m for m in observation.models if m.name in wanted)
    others = tuple(m for m in observation.models if m.name not in wanted)
    return dataclasses.replace(observation, models=mine), others
