"""The learned policy at run time, in numpy alone: no torch, Stable-Baselines3 or Gymnasium.

The sidecar only needs the actor's forward pass (a 45 KiB MLP), so importing torch for it
(about 300 MB of resident memory) would make the sidecar too heavy for one container per
pod. :func:`load_runtime_policy` reads the *same* policy file as
:func:`policy.ppo_policy.load_policy_file` (metadata checked by the same functions) and
takes the actor's weights straight out of ``policy.pt``, the ``state_dict`` that
``torch.save`` wrote: a zip whose ``data.pkl`` names each tensor's storage, offset, shape
and stride, and whose ``data/<key>`` members hold the raw little-endian storages. A
restricted unpickler resolves only the handful of globals a plain ``state_dict`` uses and
refuses anything else, so a policy file cannot run code.

The forward pass is Stable-Baselines3's ``ActorCriticPolicy`` with a ``MultiDiscrete``
action space, deterministic: ``FlattenExtractor`` -> ``mlp_extractor.policy_net``
(Linear + Tanh per ``net_arch`` entry) -> ``action_net`` logits -> argmax per sub-space.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.policy.policy_file import (
    FIRST_LAYER,
    WEIGHTS_MEMBER,
    PolicyFileError,
    check_metadata,
    check_observation_size,
    file_action_spec,
    read_metadata,
)

#: torch storage class name -> numpy dtype (little-endian, as torch.save writes on x86/ARM).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


def _rebuild_tensor_v2(
    storage: np.ndarray,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2`` for a numpy storage: a strided copy."""
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
    )
    return np.array(view, copy=True)


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a ``torch.save``d ``state_dict`` into numpy arrays, nothing else."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a state_dict")

    def persistent_load(self, pid: Any) -> np.ndarray:
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        raw = self._archive.read(f"{self._prefix}data/{key}")
        return np.frombuffer(raw, dtype=storage_type.dtype, count=int(numel))


def read_state_dict(raw: bytes) -> dict[str, np.ndarray]:
    """The tensors of a ``torch.save``d ``state_dict`` (zip format) as numpy arrays."""
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"expected one data.pkl in the weights, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        order = (
            archive.read(f"{prefix}byteorder").decode().strip()
            if (f"{prefix}byteorder" in archive.namelist())
            else "little"
        )
        if order != "little":
            raise ValueError(f"weights saved {order}-endian; only little-endian is read")
        state = _StateDictUnpickler(archive.read(pickles[0]), archive, prefix).load()
    if not isinstance(state, dict):
        raise ValueError(f"weights are a {type(state).__name__}, not a state_dict")
    return dict(state)


@dataclass(frozen=True)
class ActorMLP:
    """The actor's layers: ``(weight, bias)`` pairs, Tanh between hidden layers."""

    hidden: tuple[tuple[np.ndarray, np.ndarray], ...]
    head: tuple[np.ndarray, np.ndarray]
    nvec: tuple[int, ...]

    @classmethod
    def from_state_dict(
        cls, state: dict[str, np.ndarray], net_arch: list[int], nvec: tuple[int, ...]
    ) -> ActorMLP:
        hidden = []
        for i in range(len(net_arch)):
            key = f"mlp_extractor.policy_net.{2 * i}"
            w, b = state[f"{key}.weight"], state[f"{key}.bias"]
            if w.shape[0] != net_arch[i] or b.shape != (net_arch[i],):
                raise ValueError(f"{key}: shape {w.shape} does not fit net_arch {net_arch}")
            hidden.append((w.astype(np.float32), b.astype(np.float32)))
        w, b = state["action_net.weight"], state["action_net.bias"]
        if w.shape[0] != sum(nvec):
            raise ValueError(f"action_net has {w.shape[0]} outputs, the actions need {sum(nvec)}")
        return cls(tuple(hidden), (w.astype(np.float32), b.astype(np.float32)), tuple(nvec))

    def logits(self, x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, dtype=np.float32)
        for w, b in self.hidden:
            h = np.tanh(h @ w.T + b)
        w, b = self.head
        return h @ w.T + b

    def act(self, x: np.ndarray) -> np.ndarray:
        """``(rows, len(nvec))`` deterministic actions: the argmax of each sub-space."""
        logits = self.logits(np.atleast_2d(x))
        bounds = np.cumsum((0, *self.nvec))
        cols = [logits[:, a:b].argmax(axis=1) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        return np.stack(cols, axis=1).astype(np.int64)


def load_actor(path: Path) -> tuple[ActorMLP, dict[str, Any]]:
    """(actor, metadata) of a policy file; :class:`PolicyFileError` if it does not fit."""
    path = Path(path)
    meta = read_metadata(path)
    check_metadata(path, meta)
    with zipfile.ZipFile(path) as z:
        raw = z.read(WEIGHTS_MEMBER)
    try:
        state = read_state_dict(raw)
    except (KeyError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise PolicyFileError(
            f"policy file {path}: weights do not fit net_arch {meta['net_arch']}: {exc}"
        ) from None
    if FIRST_LAYER in state:
        check_observation_size(path, tuple(state[FIRST_LAYER].shape))
    try:
        actor = ActorMLP.from_state_dict(state, meta["net_arch"], file_action_spec(path, meta).nvec)
    except (KeyError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise PolicyFileError(
            f"policy file {path}: weights do not fit net_arch {meta['net_arch']}: {exc}"
        ) from None
    return actor, meta
