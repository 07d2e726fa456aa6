"""Swapping the running policy for the one now in its file (``tsadapt control`` on SIGHUP).

:class:`PolicySource` knows the file a policy came from, its checksum, and how to build a
policy from it. :func:`reload_policy` builds the new policy from the file as it is now; a
file that is missing, corrupt or does not fit this code (:class:`PolicyFileError`) is
refused, so the caller keeps the old policy. The checksum is taken before and after the
load: a file rewritten during the load is refused too (send SIGHUP again once it is done).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsadapt.policy.controller_config import ControllerConfig
from tsadapt.policy.ppo_policy import PolicyFileError, file_sha256
from tsadapt.policy.types import Policy

#: Builds a policy from a policy file for a controller config.
PolicyLoader = Callable[[Path, ControllerConfig], Policy]


@dataclass(frozen=True)
class PolicySource:
    """The file the running policy was read from and its SHA-256 when it was read."""

    path: Path
    sha256: str
    load: PolicyLoader

    @classmethod
    def open(
        cls, path: Path, load: PolicyLoader, config: ControllerConfig
    ) -> tuple[Policy, PolicySource]:
        """The policy in ``path`` now, and its source (raises :class:`PolicyFileError`)."""
        path = Path(path)
        try:
            before = file_sha256(path)
        except OSError as exc:
            raise PolicyFileError(f"policy file {path}: cannot read: {exc}") from None
        policy = load(path, config)
        try:
            after = file_sha256(path)
        except OSError as exc:
            raise PolicyFileError(f"policy file {path}: cannot read: {exc}") from None
        if after != before:
            raise PolicyFileError(
                f"policy file {path}: changed while it was being loaded; send SIGHUP again "
                "once it is written"
            )
        return policy, cls(path, before, load)

    def as_dict(self) -> dict[str, Any]:
        return {"file": str(self.path), "sha256": self.sha256}


def reload_policy(
    source: PolicySource, config: ControllerConfig
) -> tuple[Policy | None, PolicySource, dict[str, Any]]:
    """``(new policy or None, its source, decision-log record)``: the file re-read, or the
    old source kept with the reason it was refused."""
    record: dict[str, Any] = {"old": source.as_dict()}
    try:
        policy, new = PolicySource.open(source.path, source.load, config)
    except (PolicyFileError, ValueError, OSError) as exc:
        record.update(event="policy_reload_refused", error=str(exc), kept=source.as_dict())
        return None, source, record
    record.update(event="policy_reload", new=new.as_dict(), unchanged=new.sha256 == source.sha256)
    return policy, new, record
