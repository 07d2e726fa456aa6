"""The learned policy: PPO training (Stable-Baselines3), the policy file, and ``PPOPolicy``.

A policy file is a zip with two members:

* ``metadata.json`` - format and version, observation layout (:data:`agent_view.OBS_LAYOUT`
  and the normalisation constants), action layout, network shape, training config, seed,
  wall-clock training time, the command that made it, and library versions;
* ``policy.pt`` - the actor-critic's ``state_dict`` (weights only: no optimiser, no pickle).

:func:`load_policy_file` checks every part against the running code and raises
:class:`PolicyFileError` with a message that says what does not fit (the format and its
checks: :mod:`tsadapt.policy.policy_file`).

:class:`PPOPolicy` has the rules' shape (``decide(observation, state) -> (actions, state)``),
applies the network to every configured model (own features + global context, see
:mod:`policy.agent_view`) and, like every policy, is wrapped by :mod:`policy.guards` by the
caller (``tsadapt lab simulate`` / ``tsadapt control``).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tsadapt.policy.agent_view import (
    OBS_LAYOUT,
    all_agent_features,
)
from tsadapt.policy.controller_config import ControllerConfig
from tsadapt.policy.policy_file import (  # noqa: F401 - the file format's names, kept here too
    FIRST_LAYER,
    FORMAT,
    FORMAT_VERSION,
    META_MEMBER,
    WEIGHTS_MEMBER,
    PolicyFileError,
    check_metadata,
    check_observation_size,
    copy_policy_file,
    file_action_spec,
    file_sha256,
    library_versions,
    read_metadata,
    save_policy_file,
)
from tsadapt.policy.supervisor import (
    DIRECT,
    ActionSpec,
    RuleSetPoints,
    action_spec,
    decode,
)
from tsadapt.policy.types import Decision, Observation, PolicyState


def _spaces(spec: ActionSpec) -> tuple[Any, Any]:
    from gymnasium import spaces

    obs = spaces.Box(0.0, 1.0, shape=(len(OBS_LAYOUT),), dtype=np.float32)
    return obs, spaces.MultiDiscrete(np.array(spec.nvec, dtype=np.int64))


def _net(net_arch: list[int], spec: ActionSpec) -> Any:
    from stable_baselines3.common.policies import ActorCriticPolicy

    obs, act = _spaces(spec)
    return ActorCriticPolicy(
        obs, act, lambda _: 0.0, net_arch={"pi": list(net_arch), "vf": list(net_arch)}
    )


# ----------------------------------------------------------------------------- file


def load_policy_file(path: Path) -> tuple[Any, dict[str, Any]]:
    """(network in eval mode, metadata); :class:`PolicyFileError` if it does not fit."""
    import torch

    path = Path(path)
    meta = read_metadata(path)
    check_metadata(path, meta)
    net = _net(meta["net_arch"], file_action_spec(path, meta))
    with zipfile.ZipFile(path) as z:
        raw = z.read(WEIGHTS_MEMBER)
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling error is a bad file
        raise PolicyFileError(
            f"policy file {path}: weights do not fit net_arch {meta['net_arch']}: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    if isinstance(state, dict) and FIRST_LAYER in state:
        check_observation_size(path, tuple(state[FIRST_LAYER].shape))
    try:
        net.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any unpickling/shape error is a bad file
        raise PolicyFileError(
            f"policy file {path}: weights do not fit net_arch {meta['net_arch']}: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    net.set_training_mode(False)
    return net, meta


# ----------------------------------------------------------------------------- policy


class Actor(Protocol):
    """The trained actor: feature rows in, deterministic incremental actions out."""

    def act(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class TorchActor:
    """The Stable-Baselines3 network as an :class:`Actor` (needs torch; training, checks)."""

    net: Any = field(repr=False)

    def act(self, x: np.ndarray) -> np.ndarray:
        actions, _ = self.net.predict(x, deterministic=True)
        return np.asarray(actions, dtype=np.int64)


@dataclass(frozen=True)
class PPOPolicy:
    """A trained actor deciding each configured model's incremental action.

    :meth:`from_file` reads the actor with numpy alone (:mod:`tsadapt.policy.ppo_runtime`),
    so the sidecar never imports torch; ``torch=True`` runs the Stable-Baselines3 network
    instead (the two give the same actions: ``tests/test_ppo_runtime.py``).
    """

    config: ControllerConfig
    actor: Actor = field(repr=False)
    delay_step_ms: int
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)
    name: str = "ppo"

    @property
    def spec(self) -> ActionSpec:
        return action_spec(self.metadata.get("action_design", DIRECT))

    @classmethod
    def from_file(cls, path: Path, config: ControllerConfig, torch: bool = False) -> PPOPolicy:
        if torch:
            net, meta = load_policy_file(path)
            return cls(config, TorchActor(net), int(meta["delay_step_ms"]), meta)
        from tsadapt.policy.ppo_runtime import load_actor

        actor, meta = load_actor(path)
        return cls(config, actor, int(meta["delay_step_ms"]), meta)

    def act(self, observation: Observation) -> np.ndarray:
        """``(models, len(nvec))`` deterministic actions, rows in config order."""
        x = all_agent_features(observation, self.config)
        actions = self.actor.act(x)
        return np.asarray(actions, dtype=np.int64).reshape(len(x), len(self.spec.nvec))

    def decide(self, observation: Observation, state: PolicyState) -> Decision:
        spec, out = self.spec, []
        proposals, next_state = {}, state.next()
        if spec.uses_rules:
            proposals, next_state = RuleSetPoints.for_config(self.config).propose(
                observation, state
            )
        for name, a in zip(self.config.model_names, self.act(observation), strict=True):
            m, lim = observation.model(name), self.config.limits(name)
            action = decode(spec, a, m, lim, proposals.get(name, {}), self.delay_step_ms)
            if action is not None and not action.is_noop(m.settings):
                out.append(action)
        return tuple(out), next_state


#: The trained policy that ships with the package (regenerate: see its metadata).
SHIPPED_POLICY = Path(__file__).resolve().parent / "trained" / "ppo.zip"


def make_ppo_policy(policy_file: Path | None, config: ControllerConfig) -> PPOPolicy:
    """``--policy ppo --policy-file P`` for ``simulate`` and ``control``."""
    if policy_file is None:
        raise PolicyFileError("--policy ppo needs --policy-file PATH (e.g. policy/trained/ppo.zip)")
    return PPOPolicy.from_file(Path(policy_file), config)
