"""The learned policy: PPO training (Stable-Baselines3), the policy file, and ``PPOPolicy``.

A policy file is a zip with two members:

* ``metadata.json`` - format and version, observation layout (:data:`agent_view.OBS_LAYOUT`
  and the normalisation constants), action layout, network shape, training config, seed,
  wall-clock training time, the command that made it, and library versions;
* ``policy.pt`` - the actor-critic's ``state_dict`` (weights only: no optimiser, no pickle).

:func:`load_policy_file` checks every part against the running code and raises
:class:`PolicyFileError` with a message that says what does not fit.

:class:`PPOPolicy` has the rules' shape (``decide(observation, state) -> (actions, state)``),
applies the network to every configured model (own features + global context, see
:mod:`policy.agent_view`) and, like every policy, is wrapped by :mod:`policy.guards` by the
caller (``tsadapt simulate`` / ``tsadapt control``).
"""

from __future__ import annotations

import io
import json
import platform
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tsadapt.policy.agent_view import (
    FEATURE_CONSTANTS,
    OBS_LAYOUT,
    all_agent_features,
    decode_action,
)
from tsadapt.policy.controller_config import ControllerConfig
from tsadapt.policy.supervisor import (
    DIRECT,
    SUPERVISOR,
    ActionSpec,
    RuleSetPoints,
    action_spec,
    supervise,
)
from tsadapt.policy.types import Decision, Observation, PolicyState

FORMAT = "tsadapt-ppo-policy"
FORMAT_VERSION = 1
META_MEMBER, WEIGHTS_MEMBER = "metadata.json", "policy.pt"


class PolicyFileError(ValueError):
    """A policy file is missing, unreadable, or does not fit this code."""


def library_versions() -> dict[str, str]:
    import gymnasium
    import stable_baselines3
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": np.__version__,
    }


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


def save_policy_file(path: Path, net: Any, metadata: dict[str, Any]) -> Path:
    """Write ``net``'s weights and ``metadata`` (layout fields filled in here) to ``path``."""
    import torch

    meta = {**metadata, **_layout(metadata.get("action_design", DIRECT))}
    buf = io.BytesIO()
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    torch.save(state, buf)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, meta, buf.getvalue())
    return path


def copy_policy_file(src: Path, dst: Path, metadata: dict[str, Any]) -> Path:
    """Write ``src``'s weights to ``dst`` with ``metadata`` in place of its metadata (layout
    fields filled in as by :func:`save_policy_file`); ``src`` is checked to be ours first."""
    read_metadata(src)
    with zipfile.ZipFile(src) as z:
        weights = z.read(WEIGHTS_MEMBER)
    meta = {**metadata, **_layout()}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    _write(dst, meta, weights)
    return dst


def _layout(design: str = DIRECT) -> dict[str, Any]:
    spec = action_spec(design)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "observation_layout": list(OBS_LAYOUT),
        "feature_constants": FEATURE_CONSTANTS,
        "action_design": spec.design,
        "action_layout": spec.layout,
        "action_nvec": list(spec.nvec),
    }


def file_action_spec(path: Path, meta: dict[str, Any]) -> ActionSpec:
    """The action design a policy file names (files without one are ``direct``)."""
    try:
        return action_spec(meta.get("action_design", DIRECT))
    except ValueError as exc:
        raise PolicyFileError(f"policy file {path}: {exc}") from None


def _write(path: Path, meta: dict[str, Any], weights: bytes) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(META_MEMBER, json.dumps(meta, indent=2, sort_keys=True, default=str))
        z.writestr(WEIGHTS_MEMBER, weights)


def _expect(ok: bool, path: Path, message: str) -> None:
    if not ok:
        raise PolicyFileError(f"policy file {path}: {message}")


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata of a policy file (checked to be ours, not yet checked to fit)."""
    path = Path(path)
    _expect(path.is_file(), path, "no such file")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            _expect(
                META_MEMBER in names and WEIGHTS_MEMBER in names,
                path,
                f"not a {FORMAT} file (needs {META_MEMBER} and {WEIGHTS_MEMBER}; "
                f"has {sorted(names)})",
            )
            meta = json.loads(z.read(META_MEMBER))
    except zipfile.BadZipFile:
        raise PolicyFileError(
            f"policy file {path}: not a zip archive "
            f"(expected a {FORMAT} file written by `tsadapt train`)"
        ) from None
    except json.JSONDecodeError as exc:
        raise PolicyFileError(f"policy file {path}: {META_MEMBER} is not JSON: {exc}") from None
    _expect(
        isinstance(meta, dict) and meta.get("format") == FORMAT,
        path,
        f"format is {meta.get('format') if isinstance(meta, dict) else meta!r}, "
        f"expected {FORMAT!r}",
    )
    return meta


def check_metadata(path: Path, meta: dict[str, Any]) -> None:
    """Raise :class:`PolicyFileError` unless ``meta`` fits this code's layouts."""
    v = meta.get("format_version")
    _expect(
        v == FORMAT_VERSION,
        path,
        f"format_version {v!r}, this code reads version {FORMAT_VERSION}; retrain with "
        "`tsadapt train`",
    )
    layout = meta.get("observation_layout")
    if layout != list(OBS_LAYOUT):
        have, want = list(layout or []), list(OBS_LAYOUT)
        missing = [x for x in want if x not in have]
        extra = [x for x in have if x not in want]
        detail = (
            f"missing {missing}, unexpected {extra}"
            if missing or extra
            else "same entries in a different order"
        )
        raise PolicyFileError(
            f"policy file {path}: observation layout does not fit this code "
            f"({len(have)} entries in the file, {len(want)} here; {detail}); retrain with "
            "`tsadapt train`"
        )
    consts = meta.get("feature_constants")
    _expect(
        consts == FEATURE_CONSTANTS,
        path,
        f"feature normalisation constants {consts} differ from this code's "
        f"{FEATURE_CONSTANTS}; retrain with `tsadapt train`",
    )
    spec = file_action_spec(path, meta)
    _expect(
        meta.get("action_nvec") == list(spec.nvec) and meta.get("action_layout") == spec.layout,
        path,
        f"action layout {meta.get('action_layout')} differs from this code's {spec.layout} "
        f"(design {spec.design})",
    )
    arch = meta.get("net_arch")
    _expect(
        isinstance(arch, list) and arch and all(isinstance(x, int) and x > 0 for x in arch),
        path,
        f"net_arch must be a list of positive ints, got {arch!r}",
    )
    step = meta.get("delay_step_ms")
    _expect(
        isinstance(step, int) and step >= 1,
        path,
        f"delay_step_ms must be an int >= 1, got {step!r}",
    )


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
        if spec.design == SUPERVISOR:
            proposals, next_state = RuleSetPoints.for_config(self.config).propose(
                observation, state
            )
        for name, a in zip(self.config.model_names, self.act(observation), strict=True):
            if tuple(int(v) for v in a) == spec.noop:
                continue
            m, lim = observation.model(name), self.config.limits(name)
            if spec.design == SUPERVISOR:
                action = supervise(a, m, lim, proposals[name])
            else:
                action = decode_action(a, m, lim, self.delay_step_ms)
            if not action.is_noop(m.settings):
                out.append(action)
        return tuple(out), next_state


#: The trained policy that ships with the package (regenerate: see its metadata).
SHIPPED_POLICY = Path(__file__).resolve().parent / "trained" / "ppo.zip"


def make_ppo_policy(policy_file: Path | None, config: ControllerConfig) -> PPOPolicy:
    """``--policy ppo --policy-file P`` for ``simulate`` and ``control``."""
    if policy_file is None:
        raise PolicyFileError("--policy ppo needs --policy-file PATH (e.g. policy/trained/ppo.zip)")
    return PPOPolicy.from_file(Path(policy_file), config)
