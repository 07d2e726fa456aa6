"""Measure what a live switch costs: the latency spike under steady load and how long it lasts.

Open-loop Poisson load runs on one model while :func:`apply_config` switches it between
configurations every ``period_s``. Requests are grouped by send time into windows of
``window_s``. For each switch the reference is the *settled* latency: the higher of the
steady state before it (the half-period before the call) and the steady state it leads to
(the last half-period before the next switch), so a configuration that is simply slower at
this load is not counted as a switching cost:

* ``spike_ratio``: the worst window's mean latency over the reference mean;
* ``p99_ratio``: the worst window's p99 over the reference p99;
* ``disturbed_s``: from the switch call to the end of the last window whose mean exceeds
  ``DISTURBED_FACTOR`` x the reference mean (0 when none does).

Packrat's active-passive switch took about 5 s at 2-3x latency (seed 001).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.client import TorchServeClient
from tsadapt.experiments.loadgen import open_loop
from tsadapt.handlers.catalog import demo_model
from tsadapt.packrat_cpu.apply import ServingConfig, SwitchReport, apply_config
from tsadapt.plugin.adapt_client import AdaptClient

WINDOW_S = 0.5
#: A window is "disturbed" while its mean latency exceeds this multiple of the baseline mean.
DISTURBED_FACTOR = 1.5


@dataclass(frozen=True)
class SwitchSpike:
    """The latency cost of one switch."""

    before: str
    after: str
    at_s: float  # when the switch call started, s after the load started
    apply_s: float  # how long the switch call took
    baseline_mean_ms: float  # the reference: max(steady before, steady after)
    baseline_p99_ms: float
    peak_mean_ms: float
    peak_p99_ms: float
    disturbed_s: float
    requests: int  # requests sent from the switch to the next one
    failed: int

    @property
    def spike_ratio(self) -> float:
        return self.peak_mean_ms / self.baseline_mean_ms if self.baseline_mean_ms else 0.0

    @property
    def p99_ratio(self) -> float:
        return self.peak_p99_ms / self.baseline_p99_ms if self.baseline_p99_ms else 0.0

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["spike_ratio"] = round(self.spike_ratio, 3)
        data["p99_ratio"] = round(self.p99_ratio, 3)
        return data


def _steady(records: np.ndarray, span: tuple[float, float]) -> tuple[float, float] | None:
    """(mean, p99) latency of the successful requests sent within ``span``."""
    sent, latency, status = records[:, 0], records[:, 1], records[:, 2]
    chosen = (status == 200) & (sent >= span[0]) & (sent < span[1])
    if not chosen.any():
        return None
    return float(latency[chosen].mean()), float(np.percentile(latency[chosen], 99))


def spike_of(
    records: np.ndarray,
    at_s: float,
    apply_s: float,
    baseline: tuple[float, float],
    until_s: float,
    before: str = "",
    after: str = "",
    window_s: float = WINDOW_S,
    settled: tuple[float, float] | None = None,
) -> SwitchSpike:
    """The spike of a switch at ``at_s`` from ``records`` rows (sent_s, latency_ms, status).

    ``baseline`` is the (start, end) send-time range of the steady state before the switch,
    ``settled`` the one after it (optional); windows run from ``at_s`` to ``until_s``.
    """
    reference = _steady(records, baseline)
    if reference is None:
        raise ValueError(f"no successful request in the baseline window {baseline}")
    after_state = _steady(records, settled) if settled is not None else None
    if after_state is not None:
        reference = (max(reference[0], after_state[0]), max(reference[1], after_state[1]))
    ref_mean, ref_p99 = reference
    sent, latency, status = records[:, 0], records[:, 1], records[:, 2]
    ok = status == 200
    peak_mean, peak_p99, disturbed_until = ref_mean, ref_p99, at_s
    for start in np.arange(at_s, until_s, window_s):
        window = ok & (sent >= start) & (sent < start + window_s)
        if not window.any():
            continue
        mean = float(latency[window].mean())
        peak_mean = max(peak_mean, mean)
        peak_p99 = max(peak_p99, float(np.percentile(latency[window], 99)))
        if mean > DISTURBED_FACTOR * ref_mean:
            disturbed_until = start + window_s
    span = (sent >= at_s) & (sent < until_s)
    return SwitchSpike(
        before,
        after,
        at_s,
        apply_s,
        ref_mean,
        ref_p99,
        peak_mean,
        peak_p99,
        disturbed_until - at_s,
        int(span.sum()),
        int((span & ~ok).sum()),
    )


@dataclass(frozen=True)
class SwitchRun:
    """One load run with switches: the raw records, each switch report and its spike."""

    model: str
    rate_rps: float
    period_s: float
    records: np.ndarray
    reports: tuple[SwitchReport, ...]
    spikes: tuple[SwitchSpike, ...]

    @property
    def sent(self) -> int:
        return len(self.records)

    @property
    def failed(self) -> int:
        return int((self.records[:, 2] != 200).sum())

    @property
    def statuses(self) -> dict[str, int]:
        """Requests per HTTP status (0 = no answer)."""
        codes, counts = np.unique(self.records[:, 2].astype(int), return_counts=True)
        return {str(c): int(n) for c, n in zip(codes, counts, strict=True)}


def run_switches(
    client: TorchServeClient,
    adapt: AdaptClient,
    placement_dir: Path,
    model: str,
    configs: Sequence[ServingConfig],
    rate_rps: float,
    period_s: float,
    seed: int = 0,
    max_batch_delay_ms: int | None = None,
) -> SwitchRun:
    """Set ``configs[0]``, then load for ``len(configs) * period_s`` switching every period."""
    if len(configs) < 2:
        raise ValueError("configs: give at least two configurations to switch between")

    def switch(config: ServingConfig) -> SwitchReport:
        return apply_config(
            client, adapt, placement_dir, model, config, max_batch_delay_ms=max_batch_delay_ms
        )

    switch(configs[0])
    rng = np.random.default_rng(seed)
    payload = demo_model(model).example(rng)
    reports: list[SwitchReport] = []
    switched_at: list[float] = []
    errors: list[BaseException] = []
    start = time.perf_counter()

    def switcher() -> None:
        try:
            for k, config in enumerate(configs[1:], start=1):
                time.sleep(max(0.0, start + k * period_s - time.perf_counter()))
                switched_at.append(time.perf_counter() - start)
                reports.append(switch(config))
        except BaseException as exc:  # surfaced after the load finishes
            errors.append(exc)

    thread = threading.Thread(target=switcher, daemon=True)
    thread.start()
    result = open_loop(client, model, payload, rate_rps, len(configs) * period_s, rng)
    thread.join()
    if errors:
        raise errors[0]
    records = np.array(result.records, dtype=float).reshape(-1, 3)
    # open_loop's clock starts within milliseconds of ``start``: far below a window.
    spikes = []
    for k, (report, at) in enumerate(zip(reports, switched_at, strict=True), start=1):
        until = min(at + period_s, len(configs) * period_s)
        spikes.append(
            spike_of(
                records,
                at,
                report.total_s,
                (at - period_s / 2, at),
                until,
                str(configs[k - 1]),
                str(configs[k]),
                settled=(until - period_s / 2, until),
            )
        )
    return SwitchRun(model, rate_rps, period_s, records, tuple(reports), tuple(spikes))
