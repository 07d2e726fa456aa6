"""The PPO policy file: a zip with ``metadata.json`` (format, version, layouts, network
shape, training record) and ``policy.pt`` (the actor-critic's weights only). Written by
training, read by both loaders (:func:`tsadapt.policy.ppo_policy.load_policy_file`, with
torch, and :func:`tsadapt.policy.ppo_runtime.load_actor`, without): the format and its
checks live here, once, below both."""

from __future__ import annotations

import hashlib
import io
import json
import platform
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.policy.agent_view import FEATURE_CONSTANTS, OBS_LAYOUT
from tsadapt.policy.supervisor import DIRECT, ActionSpec, action_spec

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
    meta = {**metadata, **_layout(metadata.get("action_design", DIRECT))}
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


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex): which policy file is which in the logs."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


#: The state_dict entry whose columns are the observation the network takes.
FIRST_LAYER = "mlp_extractor.policy_net.0.weight"


def check_observation_size(path: Path, first_layer_shape: tuple[int, ...]) -> None:
    """Raise :class:`PolicyFileError` unless the network takes this code's observation size
    (the first layer's ``(out, in)`` shape), naming both sizes."""
    want = len(OBS_LAYOUT)
    have = int(first_layer_shape[1]) if len(first_layer_shape) == 2 else None
    _expect(
        have == want,
        path,
        f"the network takes an observation of {have} entries, this code gives {want} "
        f"({', '.join(OBS_LAYOUT)}); retrain with `tsadapt train`",
    )
