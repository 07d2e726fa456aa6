"""The decision log: one JSON object per line per tick (observation, proposals, overrides,
applied changes, resulting settings). NaN and infinities are written as ``null``."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import IO, Any


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
    """Appends records to ``path`` (line-buffered, so a killed sidecar loses at most a line)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = self.path.open("a", buffering=1)

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(to_jsonable(record), allow_nan=False) + "\n")

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
