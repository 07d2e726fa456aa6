"""Per-process time accounts of the peers' replicas and workers, for the report's "where the
time goes" (``breakdown``).

Each Ray replica and BentoML worker keeps, per model, sums over its requests: time from the
request reaching our code to its batch starting (Ray only: BentoML hands over whole batches),
the handler's time of the request's batch, and the request's time in our code; it rewrites
``<dir>/<model>-<pid>.json`` at most once a second (``TSADAPT_PEER_TIMING_DIR``; none: off).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ENV_DIR = "TSADAPT_PEER_TIMING_DIR"
WRITE_PERIOD_S = 1.0


@dataclass
class TimeAccount:
    """Sums over one model's requests in one process (ms)."""

    model: str
    requests: int = 0
    batches: int = 0
    wait_ms: float = 0.0  # reaching our code -> its batch starting (Ray)
    handler_ms: float = 0.0  # the handler's time of the request's batch
    inside_ms: float = 0.0  # reaching our code -> answer ready (Ray)
    written: float = 0.0

    def batch(self, size: int, handler_ms: float) -> None:
        self.batches += 1
        self.requests += size
        self.handler_ms += size * handler_ms
        self.maybe_write()

    def request(self, wait_ms: float, inside_ms: float) -> None:
        self.wait_ms += wait_ms
        self.inside_ms += inside_ms

    def maybe_write(self, force: bool = False) -> None:
        folder = os.environ.get(ENV_DIR)
        now = time.monotonic()
        if not folder or (not force and now - self.written < WRITE_PERIOD_S):
            return
        self.written = now
        path = Path(folder) / f"{self.model}-{os.getpid()}.json"
        data = {k: v for k, v in asdict(self).items() if k != "written"}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)


def read_accounts(folder: Path) -> dict[str, TimeAccount]:
    """Per model, the sums over every process's account in ``folder``."""
    out: dict[str, TimeAccount] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        d = json.loads(path.read_text())
        a = out.setdefault(d["model"], TimeAccount(d["model"]))
        a.requests += d["requests"]
        a.batches += d["batches"]
        a.wait_ms += d["wait_ms"]
        a.handler_ms += d["handler_ms"]
        a.inside_ms += d["inside_ms"]
    return out
