"""The composition root: the one place that turns settings into a ledger, a flag reader, backends
and a controller. Nothing else in ``controller`` names an adapter.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from controller.cycle import Controller, CycleConfig
from controller.domain import ConversionRecord, ConversionState, Path
from controller.errors import ConfigError
from controller.ports import Backend, Ledger
from controller.routing import FallbackPolicy, RoutingPolicy, StalePolicy
from controller.service import Service
from controller.settings import Settings
from controller.transitions import RetryPolicy
from flags.lkg import FlagChange, LastKnownGood, Source


def make_ledger(settings: Settings) -> Ledger:
    """The ledger named by ``CUTOVER_LEDGER``."""
    sqlite_path = settings.sqlite_path
    if sqlite_path is not None:
        from controller.ledger_sqlite import SQLiteLedger

        return SQLiteLedger(sqlite_path)
    raise ConfigError(f"CUTOVER_LEDGER: {settings.ledger!r} is not supported by this build")


def make_flag_source(settings: Settings, clock: Callable[[], float]) -> Source:
    """The flag source named by ``CUTOVER_FLAG_SOURCE``."""
    if settings.flag_source == "file":
        from flags.file_source import FileFlagSource

        return FileFlagSource(settings.flag_file, settings.flag_key, clock)
    if settings.flag_source == "agent":
        from flags.agent import AgentFlagSource

        return AgentFlagSource(
            settings.agent_url,
            settings.appconfig_application,
            settings.appconfig_environment,
            settings.appconfig_profile,
            settings.flag_key,
            clock,
            token=settings.agent_token.get_secret_value() if settings.agent_token else None,
            connect_timeout=settings.agent_connect_timeout,
            read_timeout=settings.agent_read_timeout,
            startup_seconds=settings.agent_startup_seconds,
        )
    if settings.flag_source == "appconfigdata":
        from flags.appconfigdata import AppConfigDataSource, make_client

        return AppConfigDataSource(
            make_client(settings.agent_connect_timeout, settings.agent_read_timeout),
            settings.appconfig_application,
            settings.appconfig_environment,
            settings.appconfig_profile,
            settings.flag_key,
            clock,
        )
    raise ConfigError(f"CUTOVER_FLAG_SOURCE: {settings.flag_source!r} is not supported by this build")


def make_backends(settings: Settings, clock: Callable[[], float]) -> dict[Path, Backend]:
    """One backend per path, as ``CUTOVER_BACKEND`` says."""
    if settings.backend == "local":
        from controller.localproc import worker_command
        from legacy_adapter.local import LocalBuildRunner
        from new_adapter.local import LocalParallelRunner

        command = worker_command(settings.local_worker)
        state = settings.local_state_dir.resolve()
        output = settings.output_dir.resolve()
        return {
            Path.LEGACY: LocalBuildRunner(
                state, command, output, build_timeout=settings.job_timeout * 32, clock=clock
            ),
            Path.NEW: LocalParallelRunner(state, command, output, timeout=settings.job_timeout, clock=clock),
        }
    raise ConfigError(f"CUTOVER_BACKEND: {settings.backend!r} is not supported by this build")


def cycle_config(settings: Settings) -> CycleConfig:
    """The cycle's knobs from the settings."""
    return CycleConfig(
        budget=settings.budget,
        max_claims=settings.max_claims_per_cycle,
        max_batch_items=settings.max_batch_items,
        legacy_max_threads=settings.legacy_max_threads,
        intent_grace_seconds=settings.intent_grace_seconds,
        lease_seconds=max(30.0, settings.cycle_seconds * 6),
        routing=RoutingPolicy(
            on_flag_unavailable=FallbackPolicy(settings.on_flag_unavailable),
            on_stale_flag=StalePolicy(settings.on_stale_flag),
            max_flag_age_seconds=settings.max_flag_age,
        ),
        retry=RetryPolicy(resubmits=settings.resubmits),
    )


def build(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    on_flag_change: Callable[[FlagChange], None] | None = None,
    on_finished: Callable[[ConversionRecord, ConversionState, str], None] | None = None,
    wrap_backend: Callable[[Backend], Backend] | None = None,
) -> Service:
    """Wire one controller process from its settings.

    ``on_finished`` hears every outcome the cycle records; ``wrap_backend`` may decorate each
    backend (the service's metrics time the calls that way).
    """
    ledger = make_ledger(settings)
    try:
        flags = LastKnownGood(
            make_flag_source(settings, clock),
            ledger,
            clock,
            max_age_seconds=settings.max_flag_age,
            on_change=on_flag_change,
        )
        backends = make_backends(settings, clock)
        if wrap_backend is not None:
            backends = {path: wrap_backend(backend) for path, backend in backends.items()}
    except BaseException:
        ledger.close()
        raise
    controller = Controller(
        ledger=ledger,
        flags=flags,
        backends=backends,
        config=cycle_config(settings),
        clock=clock,
        holder=f"{socket.gethostname()}:{os.getpid()}",
        on_finished=on_finished,
    )
    return Service(settings, ledger, flags, backends, controller, clock)
