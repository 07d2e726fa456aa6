"""The decision log: one JSON object per line per tick (observation, proposals, overrides,
applied changes, resulting settings). NaN and infinities are written as ``null``.

A log that cannot be written (disk full, file-size limit, read-only mount) never stops the
controller: the error is logged once, the records are dropped and counted until a write
succeeds again (which starts on a fresh line, so a torn record never merges with the next).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)


def to_jsonable(value: Any) -> Any:
    """Dataclasses, mappings, tuples and floats -> strict-JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class DecisionLog:
    """Appends records to ``path``, one ``write`` system call per record (unbuffered, so a
    killed sidecar loses at most a line)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = self.path.open("ab", buffering=0)
        #: Records not written since the last failure (0 while writes succeed).
        self.dropped = 0
        self.errors = 0

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(to_jsonable(record), allow_nan=False) + "\n").encode()
        if self.dropped:
            line = b"\n" + line  # a failed write may have left half a line
        try:
            view = memoryview(line)
            while view:
                view = view[self._file.write(view) :]
        except OSError as exc:
            self.errors += 1
            if not self.dropped:
                logger.error(
                    "decision log %s: write failed (%s); the controller keeps running and "
                    "drops records until writes succeed again",
                    self.path,
                    exc,
                )
            self.dropped += 1
            return
        if self.dropped:
            logger.warning("decision log %s: writing again (%d records dropped)", self.path,
                           self.dropped)  # fmt: skip
            self.dropped = 0

    def close(self) -> None:
        self._file.close()


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every complete record of a decision log (a torn last line is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
