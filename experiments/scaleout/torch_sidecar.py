"""The sidecar loop with the torch PPO policy (``PPOPolicy``), for the memory comparison of
:mod:`.sidecar_rss`: ``python -m tsadapt.experiments.scaleout.torch_sidecar``."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from tsadapt.experiments.bench_schedule import resolve_scenario
    from tsadapt.policy.ppo_policy import SHIPPED_POLICY, PPOPolicy
    from tsadapt.policy.sim.control import scenario_config
    from tsadapt.serve.server import RunningServer
    from tsadapt.sidecar.runner import Sidecar

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--scenario", default="bursty", help="states the models' SLOs")
    p.add_argument("--decision-log", type=Path, required=True)
    args = p.parse_args(argv)
    config = scenario_config(args.config, resolve_scenario(args.scenario), policy="ppo")

    def connect():
        server = RunningServer.load(args.workdir)
        return server.client(timeout_s=30.0), server.metrics_url

    sidecar = Sidecar(config, PPOPolicy.from_file(SHIPPED_POLICY, config, torch=True), connect,
                      args.decision_log)  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: sidecar.stop())
    sidecar.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
