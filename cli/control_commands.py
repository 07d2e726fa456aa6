"""``tsadapt control``: run the adaptive controller sidecar beside a running TorchServe.

``tsadapt control --config FILE ...`` runs the controller; ``tsadapt control init`` prints a
starting config for the models the server has registered (:mod:`.control_init`). Either
attaches to the server the attach options name (:mod:`tsadapt.serve.attach`). With neither
``--config`` nor ``--scenario`` it runs the demo: the shipped configs/controller.yaml with the
SLOs of the demo scenario, against the demo server.
"""

from __future__ import annotations

import argparse
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path

from tsadapt import constants as C
from tsadapt.client import TorchServeClient
from tsadapt.serve.attach import add_attach_args

#: The demo's controller config (shipped in the package as tsadapt/configs/controller.yaml).
DEFAULT_CONFIG = Path("configs/controller.yaml")
DEFAULT_METRICS_PORT = 9091

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "control",
        help="run the adaptive batching/worker controller beside a running TorchServe "
        "(`control init`: write a starting config)",
        description="Observe every tick, decide with a policy, guard, apply, and log decisions. "
        "`tsadapt control init` prints a controller config for the models the server serves. "
        f"With neither --config nor --scenario: the demo ({DEFAULT_CONFIG} with the SLOs of "
        f"scenario {C.DEMO_SCENARIO!r}).",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="controller YAML, e.g. from `tsadapt control init` (default: the demo's "
        f"{DEFAULT_CONFIG} with --scenario {C.DEMO_SCENARIO})",
    )
    p.add_argument(
        "--policy", default=None, help="static | aimd | queue | ppo (default: the config's)"
    )
    p.add_argument(
        "--policy-file",
        type=Path,
        default=None,
        help="trained PPO policy for --policy ppo (default: the shipped policy/trained/ppo.zip); "
        "SIGHUP re-reads it without a restart (a corrupt or mismatched file is refused and "
        "logged, and the running policy kept)",
    )
    add_attach_args(p)
    p.add_argument(
        "--scenario",
        default=None,
        help="scenario (a name under loadtests/scenarios or a YAML path) that states the models' "
        "SLOs and latency profiles; each max_batch is then capped by the profile rule",
    )
    p.add_argument(
        "--decision-log",
        type=Path,
        default=None,
        help="JSON-lines decision log (default: controller/decisions.jsonl in --workdir, "
        "or next to --ts-config)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help="sidecar /metrics port (0: any free; default %(default)s)",
    )
    p.add_argument(
        "--metrics-host",
        default=C.LOOPBACK,
        help="address the sidecar /metrics binds to (default %(default)s; 0.0.0.0 in a "
        "Kubernetes pod, so Prometheus can scrape it)",
    )
    p.add_argument("--tick-s", type=float, default=None, help="override the config's tick_s")
    p.add_argument("--max-ticks", type=int, default=None, help="stop after this many ticks")
    p.add_argument(
        "--wait-s",
        type=float,
        default=0.0,
        help="wait up to this long for the server (its key file, its management API) before "
        "attaching; in a Kubernetes pod the sidecar starts beside TorchServe (default: 0, "
        "fail at once)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        action="append",
        default=[],
        help="a `tsadapt profile` JSON (repeatable): lowers that model's max_batch to the "
        "largest batch whose profiled latency is at most half its SLO",
    )
    p.set_defaults(func=run_control)
    actions = p.add_subparsers(dest="control_action", metavar="ACTION")
    actions.default = "run"  # no action: run the controller
    from tsadapt.cli.control_init import add_init_arguments

    init = actions.add_parser(
        "init",
        help="print a starting controller config for the models the server serves",
        description="A controller config for every registered model: its current batch, "
        "delay and workers as the starting point, the SLO you give (--slo-ms, or "
        "--slo-from-profile with --profile), max_batch capped by the profile rule.",
    )
    add_attach_args(init)
    add_init_arguments(init)
    init.set_defaults(func=run_control)


def _shipped_config() -> Path:
    from tsadapt import configs

    return Path(configs.__file__).parent / DEFAULT_CONFIG.name


def attach_when_ready(args: argparse.Namespace, connect_checked: Callable) -> tuple:
    """``connect_checked(args)`` (client, metrics URL, registered models) once the server
    answers; retried for ``--wait-s`` seconds."""
    from tsadapt.serve.attach import AttachError

    if args.wait_s < 0:
        raise AttachError(f"--wait-s: must be >= 0, got {args.wait_s:g}")
    deadline, last = time.monotonic() + args.wait_s, ""
    while True:
        try:
            return connect_checked(args)
        except AttachError as exc:
            if time.monotonic() >= deadline:
                raise
            if str(exc) != last:  # once per reason, not once per second
                logger.info("waiting for the server: %s", exc)
                last = str(exc)
            time.sleep(1.0)


def require_plugin(client: TorchServeClient) -> None:
    """Refuse to start against a TorchServe without the tsadapt plugin: the controller reads
    and changes the batching through ``/adapt``, so without it it could do nothing."""
    from tsadapt.plugin.adapt_client import AdaptClient, PluginNotLoadedError
    from tsadapt.serve.attach import AttachError

    try:
        AdaptClient(client, timeout_s=5.0, retries=1).info()
    except PluginNotLoadedError:
        raise AttachError(
            f"the tsadapt plugin is not loaded by the TorchServe at {client.management_url} "
            "(it does not know /adapt): set plugins_path in its config.properties to the folder "
            "`tsadapt plugin path` prints and restart it; the controller changed nothing"
        ) from None


def run_control(args: argparse.Namespace) -> int:
    if args.control_action == "init":
        from tsadapt.cli.control_init import run_init

        return run_init(args)
    from tsadapt.cli.control_init import apply_profiles
    from tsadapt.policy.controller_config import ConfigError, load
    from tsadapt.policy.factory import make_policy
    from tsadapt.serve.attach import connect, connect_checked
    from tsadapt.sidecar.runner import Sidecar

    config_path, scenario = args.config, args.scenario
    if config_path is None:
        config_path = DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else _shipped_config()
        if scenario is None:
            scenario = C.DEMO_SCENARIO
            print(
                f"controller: the demo config {DEFAULT_CONFIG} with the SLOs of scenario "
                f"{scenario!r} (your own models: `tsadapt control init --slo-ms MS > "
                "controller.yaml`, then `tsadapt control --config controller.yaml`)",
                flush=True,
            )
    try:
        if scenario:
            from tsadapt.policy.sim.control import scenario_config
            from tsadapt.scenario_files import resolve_scenario

            config = scenario_config(
                config_path, resolve_scenario(scenario), policy=args.policy, tick_s=args.tick_s
            )
        else:
            config = load(config_path, policy=args.policy, tick_s=args.tick_s)
    except ConfigError as exc:
        if "slo_ms" in exc.path and not scenario:
            raise ConfigError(
                exc.path,
                f"{str(exc).split(': ', 1)[-1]} (write slo_ms in {config_path}, e.g. with "
                "`tsadapt control init --slo-ms MS`, or pass --scenario NAME|FILE whose "
                "models state their SLOs)",
            ) from None
        raise
    if args.profile:
        config = apply_profiles(config, args.profile)
    # names what is wrong before the loop starts
    client, _, registered = attach_when_ready(args, connect_checked)
    require_plugin(client)
    logger.info("attached: registered models %s", ", ".join(registered) or "none")

    def connect_again():
        return connect(args)  # re-resolved: a restarted server may have new keys or ports

    workdir = Path(args.workdir or C.DEFAULT_WORKDIR)
    base = workdir if args.ts_config is None else Path(args.ts_config).resolve().parent
    log_path = args.decision_log or base / "controller" / "decisions.jsonl"
    source = None
    if config.policy == "ppo":  # a policy file: SIGHUP re-reads it
        from tsadapt.policy.ppo_policy import SHIPPED_POLICY
        from tsadapt.sidecar.policy_reload import PolicySource

        policy, source = PolicySource.open(
            Path(args.policy_file or SHIPPED_POLICY),
            lambda path, cfg: make_policy("ppo", cfg, path),
            config,
        )
    else:
        policy = make_policy(config.policy, config, args.policy_file)
    sidecar = Sidecar(
        config,
        policy,
        connect_again,
        log_path,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        # a policy file is read once (and on SIGHUP); a change of the controlled models
        # rebuilds the policy in memory, so a bad file on disk never stops the loop
        policy_factory=None
        if source is not None
        else lambda cfg: make_policy(cfg.policy, cfg, args.policy_file),
        policy_source=source,
    )
    if source is not None:
        sidecar.log.write({"event": "policy_file", "time_s": sidecar.clock(), **source.as_dict()})
    previous = signal.signal(signal.SIGTERM, lambda *_: sidecar.stop())
    previous_hup = signal.signal(signal.SIGHUP, lambda *_: sidecar.request_reload())
    print(
        f"controller: policy {config.policy}, tick {config.tick_s} s, "
        f"decision log {log_path}, metrics {sidecar.exporter.url}",
        flush=True,
    )
    try:
        ticks = sidecar.run(max_ticks=args.max_ticks)
    except KeyboardInterrupt:
        sidecar.stop()
        ticks = sidecar.tick_count
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, previous_hup)
    print(f"controller stopped after {ticks} tick(s)", flush=True)
    return 0
