"""Orchestration of ``tsadapt lab packrat bench``: profile (if needed), server, cells, report."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsadapt.experiments.packrat_bench import (
    BenchReport,
    bench_batches,
    host_facts,
    switch_run,
    write_report,
)
from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.handlers.placement import PLACEMENT_SUBDIR, usable_cores
from tsadapt.packrat_cpu.apply import ServingConfig, uniform_config
from tsadapt.packrat_cpu.profile_table import ProfileTable, load_profile

#: Quick profile when none is given: Packrat's warm-up, fewer timed repetitions.
QUICK_PROFILE_REPS = 30


class BenchInputError(ValueError):
    """A bad flag; the message starts with the flag."""


def _batches(text: str) -> tuple[int, ...]:
    from tsadapt.packrat_cpu.profiler_config import ProfilerConfigError, parse_ints, positive_ints

    try:
        return positive_ints(parse_ints(text, "batches"), "batches")
    except ProfilerConfigError as exc:
        raise BenchInputError(f"--batches: {exc.detail}") from None


def _profile(args: argparse.Namespace, cores: tuple[int, ...], batches: tuple[int, ...]) -> Path:
    """The profile to plan with: ``--profile``, else measured now on these cores."""
    if args.profile:
        return Path(args.profile)
    from tsadapt.packrat_cpu.profiler import run_with_progress
    from tsadapt.packrat_cpu.profiler_config import ProfilerConfig
    from tsadapt.packrat_cpu.profiler_output import prepare_out, write_csv

    sizes = sorted({1 << k for k in range(max(batches).bit_length())} | set(batches))
    config = ProfilerConfig(
        model=args.model,
        max_threads=len(cores),
        batches=tuple(sizes),
        cores=cores,
        reps=QUICK_PROFILE_REPS,
        out=Path(args.out) / f"packrat-{args.model}.profile.csv",  # kept beside the report
    )
    out = prepare_out(config.out)
    write_csv(run_with_progress(config), out)
    return out


def run(args: argparse.Namespace, command: str) -> int:
    """Run the bench described by ``args``; write the report; return the exit code."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from tsadapt.plugin.adapt_client import AdaptClient
    from tsadapt.serve.server import ServerConfig, start, stop

    if args.model not in DEMO_MODELS:
        raise BenchInputError(f"--model: unknown '{args.model}'; known: {', '.join(DEMO_MODELS)}")
    batches = _batches(args.batches)
    if args.rounds < 1:
        raise BenchInputError(f"--rounds: must be >= 1, got {args.rounds}")
    cores = usable_cores()
    profile_path = _profile(args, cores, batches)
    try:
        profile: ProfileTable = load_profile(profile_path)
        for batch in (*batches, args.switch_batch):
            uniform_config(profile, len(cores), batch)
    except FileNotFoundError:
        raise BenchInputError(f"--profile: no such file: {profile_path}") from None
    except ValueError as exc:  # PlanError included: a batch the profile cannot serve
        raise BenchInputError(f"--profile: {exc}") from None

    workdir = Path(args.workdir) / "server"
    config = ServerConfig.with_free_ports(workdir=workdir, models=(args.model,))
    server = start(config)
    try:
        client = server.client(timeout_s=120)
        adapt = AdaptClient(client)
        placement_dir = workdir / PLACEMENT_SUBDIR
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()
        ) as progress:
            task = progress.add_task("planned vs fat", total=len(batches))
            rows = bench_batches(
                client,
                adapt,
                placement_dir,
                args.model,
                profile,
                cores,
                batches,
                args.rounds,
                progress=lambda: progress.advance(task),
            )
        switch = None
        if not args.no_switch:
            plan, _ = uniform_config(profile, len(cores), args.switch_batch)
            fat = ServingConfig(1, len(cores), args.switch_batch)
            print(f"live switch {fat} <-> {plan} at {args.switch_rate:g} req/s ...")
            switch = switch_run(
                client,
                adapt,
                placement_dir,
                args.model,
                fat,
                plan,
                args.switch_rate,
                args.switch_period,
                DEMO_MODELS[args.model].max_batch_delay_ms,
            )
    finally:
        stop(config.workdir)
    report = BenchReport(
        args.model, cores, str(profile_path), tuple(rows), switch, command, host_facts()
    )
    md, js = write_report(report, Path(args.out))
    print(md.read_text())
    print(f"wrote {md} and {js}")
    return 0
