"""Per-worker intra-op threads and core pinning, applied by the handler at a batch boundary.

TorchServe's own way to pin workers (``cpu_launcher_enable``) restarts every worker of a
model on each scale call. Here the reconfigurer writes a *placement file* per model and
each worker applies it itself, between two batches, with no restart:

``<placement dir>/<model>.json``::

    {"generation": 7, "threads": 1, "core_sets": [[0], [1]]}

``core_sets[k]`` is the set of cores of worker slot ``k``. A worker owns one slot: an
``flock``-ed file ``<model>.slot-<k>.lock`` held while the worker process lives (the
kernel drops the lock when the process dies, so a killed worker frees its slot). At the
start of each batch, :meth:`WorkerPlacement.maybe_apply` stats the file (a few
microseconds); when it changed, or while the worker's slot is out of range after a
scale-down, the worker moves to the lowest free slot in range, calls
``torch.set_num_threads(threads)`` and pins every thread of its process
(``/proc/self/task``) to its core set.

The directory comes from ``TSADAPT_PLACEMENT_DIR`` (``tsadapt lab serve start`` sets it to
``<workdir>/placement``); without it, or without a file for the model, nothing changes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

#: Environment variable naming the placement directory (inherited by the backend workers).
PLACEMENT_DIR_ENV = "TSADAPT_PLACEMENT_DIR"
#: Sub-directory of a ``tsadapt lab serve`` work dir that holds the placement files.
PLACEMENT_SUBDIR = "placement"
#: Response header: the placement that served the request, "generation/slot/threads/cores".
PLACEMENT_HEADER = "X-TSAdapt-Placement"
#: Slots a worker may claim; far above any worker count one host runs.
MAX_SLOTS = 256


class PlacementError(ValueError):
    """A placement file or request that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Placement:
    """Threads per worker and the disjoint core set of each worker slot."""

    generation: int
    threads: int
    core_sets: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise PlacementError(f"threads must be >= 1, got {self.threads}")
        if not self.core_sets:
            raise PlacementError("core_sets must list at least one core set")
        seen: set[int] = set()
        for k, cores in enumerate(self.core_sets):
            if not cores:
                raise PlacementError(f"core_sets[{k}] is empty")
            if any(c < 0 for c in cores):
                raise PlacementError(f"core_sets[{k}] has a negative core id")
            if seen & set(cores):
                raise PlacementError(f"core_sets[{k}] overlaps an earlier core set")
            seen |= set(cores)

    @property
    def workers(self) -> int:
        return len(self.core_sets)

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "threads": self.threads,
            "core_sets": [list(c) for c in self.core_sets],
        }

    @classmethod
    def from_json(cls, data: Any) -> Placement:
        if not isinstance(data, dict):
            raise PlacementError("a placement must be a JSON object")
        try:
            return cls(
                generation=int(data["generation"]),
                threads=int(data["threads"]),
                core_sets=tuple(tuple(int(c) for c in cores) for cores in data["core_sets"]),
            )
        except KeyError as exc:
            raise PlacementError(f"placement lacks the field {exc}") from None
        except (TypeError, ValueError) as exc:
            raise PlacementError(f"placement has a malformed field: {exc}") from None


def core_sets(workers: int, threads: int, cores: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """``workers`` disjoint, contiguous sets of ``threads`` cores taken from ``cores``."""
    if workers < 1 or threads < 1:
        raise PlacementError(f"workers and threads must be >= 1, got {workers} and {threads}")
    ordered = sorted(set(cores))
    if workers * threads > len(ordered):
        raise PlacementError(
            f"{workers} workers x {threads} threads need {workers * threads} cores; "
            f"only {len(ordered)} are usable ({ordered})"
        )
    return tuple(tuple(ordered[k * threads : (k + 1) * threads]) for k in range(workers))


def usable_cores() -> tuple[int, ...]:
    """The cores this process may run on (its affinity mask, which honours cgroups)."""
    return tuple(sorted(os.sched_getaffinity(0)))


def placement_path(directory: Path, model: str) -> Path:
    return Path(directory) / f"{model}.json"


def read_placement(directory: Path, model: str) -> Placement | None:
    """The model's current placement, or None when there is no file."""
    path = placement_path(directory, model)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return Placement.from_json(json.loads(text))
    except json.JSONDecodeError as exc:
        raise PlacementError(f"{path} is not valid JSON: {exc}") from None


def write_placement(
    directory: Path, model: str, threads: int, sets: Sequence[Sequence[int]]
) -> Placement:
    """Write the next generation of ``model``'s placement atomically; return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    previous = read_placement(directory, model)
    placement = Placement(
        generation=(previous.generation + 1) if previous else 1,
        threads=threads,
        core_sets=tuple(tuple(int(c) for c in s) for s in sets),
    )
    path = placement_path(directory, model)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(placement.to_json()))
    os.replace(tmp, path)
    return placement


def pin_process(cores: Sequence[int]) -> int:
    """Pin every thread of this process to ``cores``; return how many threads were pinned."""
    pinned = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
            pinned += 1
        except (ProcessLookupError, FileNotFoundError):  # the thread ended meanwhile
            continue
    return pinned


class WorkerPlacement:
    """One worker's view of its model's placement; call :meth:`maybe_apply` per batch."""

    def __init__(self, directory: Path, model: str) -> None:
        self.directory = Path(directory)
        self.model = model
        self.path = placement_path(self.directory, model)
        self.slot: int | None = None
        self.applied: Placement | None = None
        self._slot_file: IO[str] | None = None
        self._stamp: tuple[int, int] | None = None
        self._header: str | None = None
        self.directory.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_env(cls, model: str) -> WorkerPlacement | None:
        directory = os.environ.get(PLACEMENT_DIR_ENV)
        return cls(Path(directory), model) if directory else None

    # --- slots ------------------------------------------------------------------------
    def _try_slot(self, k: int) -> bool:
        handle = open(self.directory / f"{self.model}.slot-{k}.lock", "a")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        previous, self._slot_file, self.slot = self._slot_file, handle, k
        if previous is not None:
            previous.close()  # releases the old slot's lock
        return True

    def _claim_slot_below(self, limit: int) -> bool:
        return any(self._try_slot(k) for k in range(limit))

    # --- per batch --------------------------------------------------------------------
    def maybe_apply(self) -> bool:
        """Apply the placement file if it changed (or our slot is out of range); cheap."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        stamp = (st.st_mtime_ns, st.st_ino)
        in_range = self.applied is None or (
            self.slot is not None and self.slot < self.applied.workers
        )
        if stamp == self._stamp and in_range:
            return False
        try:
            placement = read_placement(self.directory, self.model)
        except (OSError, PlacementError) as exc:
            logger.warning("placement for %s ignored: %s", self.model, exc)
            self._stamp = stamp
            return False
        if placement is None:
            return False
        self._stamp = stamp
        self._apply(placement)
        return True

    def _apply(self, placement: Placement) -> None:
        import torch

        started = time.perf_counter()
        if self.slot is None or self.slot >= placement.workers:
            if not self._claim_slot_below(placement.workers) and self.slot is None:
                self._claim_slot_below(MAX_SLOTS)
        slot = self.slot if self.slot is not None else 0
        cores = placement.core_sets[slot % placement.workers]
        torch.set_num_threads(placement.threads)
        try:
            pin_process(cores)
        except OSError as exc:  # a core outside this container's cpuset
            logger.warning("cannot pin %s worker to cores %s: %s", self.model, cores, exc)
        self.applied = placement
        # Read back what the worker now really runs (a failed pin leaves the old cores).
        really = ",".join(map(str, sorted(os.sched_getaffinity(0))))
        self._header = f"{placement.generation}/{self.slot}/{torch.get_num_threads()}/{really}"
        logger.info(
            "placement %d applied: slot %d, %d threads, cores %s (%.2f ms)",
            placement.generation,
            slot,
            placement.threads,
            list(cores),
            (time.perf_counter() - started) * 1000.0,
        )

    def header_value(self) -> str | None:
        """ "generation/slot/threads/cores" as this worker really runs (None before any)."""
        return self._header
