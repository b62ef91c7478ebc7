"""The composition root: the one place that turns settings into a ledger, a flag reader, backends
and a controller. Nothing else in ``controller`` names an adapter.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from typing import Any

from controller.core.domain import ConversionRecord, ConversionState, Path
from controller.core.errors import ConfigError, LedgerError
from controller.core.ports import (
    Backend,
    FlagSource,
    Intake,
    Ledger,
    MetricSink,
    Notifier,
    ShadowStore,
    VersionStore,
)
from controller.core.routing import FallbackPolicy, RoutingPolicy, StalePolicy
from controller.core.transitions import RetryPolicy
from controller.engine.autoadvance import AutoAdvancer
from controller.engine.cycle import Controller, CycleConfig
from controller.engine.housekeeping import Housekeeping
from controller.engine.notify import LogMetrics, LogNotifier, Signals
from controller.engine.reconcile import Reconciler
from controller.engine.shadows import Shadows
from controller.plumbing.tally import ReconcileTally
from controller.service import Service
from controller.settings import Settings
from flags.lkg import FlagChange, LastKnownGood

log = logging.getLogger("cutover.bootstrap")


def make_ledger(settings: Settings) -> Ledger:
    """The ledger named by ``CUTOVER_LEDGER``."""
    sqlite_path = settings.sqlite_path
    if sqlite_path is not None:
        from controller.ledger.sqlite import SQLiteLedger

        try:
            return SQLiteLedger(sqlite_path)
        except LedgerError as exc:
            raise ConfigError(f"CUTOVER_LEDGER: {exc}") from exc
    table = settings.dynamodb_table
    if table is not None:
        from controller.ledger.dynamodb import DynamoDBLedger

        client = _aws_client(settings, "dynamodb")
        return DynamoDBLedger(client, table, retention_seconds=settings.ledger_retention_days * 86400)
    raise ConfigError(f"CUTOVER_LEDGER: {settings.ledger!r} is not supported by this build")


def _aws_client(settings: Settings, service: str) -> Any:
    """A boto3 client configured for the one retry policy; ``ConfigError`` when AWS is not set up."""
    from botocore.exceptions import BotoCoreError

    from controller.plumbing.aws import CLIENT_CONFIG, session

    try:
        return session().client(service, config=CLIENT_CONFIG)  # type: ignore[call-overload]
    except BotoCoreError as exc:
        raise ConfigError(f"AWS_REGION / credentials: cannot make a {service} client ({exc})") from exc


def make_flag_source(settings: Settings, clock: Callable[[], float]) -> FlagSource:
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


def make_version_store(settings: Settings, kind: str | None = None) -> VersionStore:
    """Where ``cutover flag`` and auto-advance write flag versions: ``file`` (beside
    ``CUTOVER_FLAG_FILE``) or ``appconfig``; by default file for ``CUTOVER_FLAG_SOURCE=file``."""
    if (kind or ("file" if settings.flag_source == "file" else "appconfig")) == "file":
        from flags.file_store import FileVersionStore

        # Absolute, so every answer names the file it read or wrote, wherever the command ran.
        return FileVersionStore(settings.flag_file.expanduser().resolve(), settings.flag_key)
    from flags.appconfig_store import AppConfigVersionStore, make_client

    return AppConfigVersionStore(
        make_client(),
        application=settings.appconfig_application,
        environment=settings.appconfig_environment,
        profile=settings.appconfig_profile,
        flag_key=settings.flag_key,
        strategy=settings.deployment_strategy,
    )


def make_backends(
    settings: Settings, clock: Callable[[], float], tally: ReconcileTally | None = None
) -> dict[Path, Backend]:
    """One backend per path, as ``CUTOVER_BACKEND`` says (``tally`` is what reconciliation found,
    for backends that report it)."""
    if settings.backend == "local":
        from controller.plumbing.localproc import worker_command
        from legacy_adapter.local import LocalBuildRunner
        from new_adapter.local import LocalParallelRunner

        command = worker_command(settings.local_worker)
        if shutil.which(command[0]) is None:
            raise ConfigError(f"CUTOVER_LOCAL_WORKER: {command[0]!r} is not an executable command")
        state = settings.local_state_dir.resolve()
        output = settings.output_dir.resolve()
        # Found now rather than by every conversion failing later.
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"CUTOVER_OUTPUT_DIR: cannot create {output} ({exc.strerror})") from exc
        try:
            return {
                Path.LEGACY: LocalBuildRunner(
                    state, command, output, build_timeout=settings.job_timeout * 32, clock=clock
                ),
                Path.NEW: LocalParallelRunner(
                    state, command, output, timeout=settings.job_timeout, clock=clock
                ),
            }
        except OSError as exc:
            raise ConfigError(f"CUTOVER_LOCAL_STATE_DIR: cannot use {state} ({exc.strerror})") from exc
    if settings.backend == "aws":
        return _aws_backends(settings, clock, tally)
    raise ConfigError(f"CUTOVER_BACKEND: {settings.backend!r} is not supported by this build")


def _aws_backends(
    settings: Settings, clock: Callable[[], float], tally: ReconcileTally | None
) -> dict[Path, Backend]:
    from controller.plumbing.aws import ManifestStore, Retrier
    from legacy_adapter.codebuild import CodeBuildBackend
    from new_adapter.batch import BatchBackend, fargate_quota_reader

    project, queue = settings.legacy_project, settings.batch_job_queue
    definition, bucket = settings.batch_job_definition, settings.manifest_bucket
    if not (project and queue and definition and bucket):
        required = {
            "CUTOVER_LEGACY_PROJECT": project,
            "CUTOVER_BATCH_JOB_QUEUE": queue,
            "CUTOVER_BATCH_JOB_DEFINITION": definition,
            "CUTOVER_MANIFEST_BUCKET": bucket,
        }
        missing = ", ".join(name for name, value in required.items() if not value)
        raise ConfigError(f"{missing}: required with CUTOVER_BACKEND=aws")
    retrier = Retrier()
    manifests = ManifestStore(_aws_client(settings, "s3"), bucket, settings.manifest_prefix, retrier)
    return {
        Path.LEGACY: CodeBuildBackend(
            _aws_client(settings, "codebuild"),
            manifests,
            project=project,
            retrier=retrier,
            clock=clock,
            lookback_seconds=settings.reconcile_hours * 3600,
            tally=tally,
        ),
        Path.NEW: BatchBackend(
            _aws_client(settings, "batch"),
            manifests,
            job_queue=queue,
            job_definition=definition,
            compute_environment=settings.batch_compute_environment,
            manage_max_vcpus=settings.manage_max_vcpus,
            vcpus_per_job=settings.batch_vcpus_per_job,
            budget=settings.budget,
            fargate_quota=settings.fargate_vcpu_quota,
            quota_reader=fargate_quota_reader(_aws_client(settings, "service-quotas"), retrier),
            retrier=retrier,
            clock=clock,
            tally=tally,
        ),
    }


def make_shadows(
    settings: Settings, ledger: Ledger, clock: Callable[[], float], holder: str
) -> Shadows | None:
    """Shadow runs, when something may sample them (``CUTOVER_SHADOW_RATE`` or a rollout plan, whose
    ``shadow:`` section is read as it changes) and the ledger keeps shadow records; None otherwise."""
    if settings.shadow_rate <= 0 and settings.rollout_file is None:
        return None
    if not isinstance(ledger, ShadowStore):
        log.warning("shadow.unsupported", extra={"reason": "this ledger keeps no shadow records"})
        return None
    if settings.backend != "local":
        log.warning("shadow.unsupported", extra={"reason": "shadow runs need the local runners for now"})
        return None
    from controller.core.parity import CompareOptions
    from controller.engine.shadows import PlanWatch, ShadowChecks, ShadowConfig, ShadowRunner
    from controller.shadow.judge import Judge, load_comparator
    from controller.shadow.outputs import Outputs

    quarantine = settings.shadow_quarantine or str((settings.local_state_dir / "quarantine").resolve())
    comparator = load_comparator(settings.shadow_comparator) if settings.shadow_comparator else None
    backends = _shadow_backends(settings, clock, quarantine)
    plan = PlanWatch(settings.rollout_file)
    config = ShadowConfig(
        global_rate=settings.shadow_rate,
        global_aa_rate=settings.shadow_aa_rate,
        intent_grace_seconds=settings.intent_grace_seconds,
        lease_seconds=cycle_config(settings).lease_seconds,
        pending_seconds=settings.shadow_pending_seconds,
        resubmits=settings.resubmits,
        routing=cycle_config(settings).routing,
    )
    outputs = Outputs(make_s3=lambda: _aws_client(settings, "s3"))
    judge = Judge(outputs, CompareOptions(), comparator=comparator, max_bytes=settings.shadow_max_bytes)
    return Shadows(
        runner=ShadowRunner(ledger, backends, config, plan=plan, clock=clock),
        checks=ShadowChecks(
            ledger,
            ledger,
            judge,
            outputs,
            quarantine=quarantine,
            retention_seconds=settings.shadow_retention_seconds,
            leases=ledger,
            holder=holder,
            plan=plan,
        ),
        plan=plan,
        backends=backends,
    )


def _shadow_backends(settings: Settings, clock: Callable[[], float], quarantine: str) -> dict[Path, Backend]:
    """Shadow runners of their own beside the real ones: their own state, every job a shadow."""
    from controller.plumbing.localproc import worker_command
    from legacy_adapter.local import LocalBuildRunner
    from new_adapter.local import LocalParallelRunner

    command = worker_command(settings.local_worker)
    state = settings.local_state_dir.resolve()
    scratch = state / "shadow-scratch"  # CUTOVER_OUTPUT_DIR of shadow jobs; a shadow writes nowhere else
    try:
        return {
            Path.LEGACY: LocalBuildRunner(
                state,
                command,
                scratch,
                build_timeout=settings.job_timeout * 32,
                clock=clock,
                quarantine=quarantine,
                name="shadow-legacy",
            ),
            Path.NEW: LocalParallelRunner(
                state,
                command,
                scratch,
                timeout=settings.job_timeout,
                clock=clock,
                quarantine=quarantine,
                name="shadow-new",
            ),
        }
    except OSError as exc:
        raise ConfigError(f"CUTOVER_LOCAL_STATE_DIR: cannot use {state} ({exc.strerror})") from exc


def make_signals(settings: Settings, clock: Callable[[], float]) -> Signals | None:
    """Messages (SNS when ``CUTOVER_SNS_TOPIC_ARN`` is set, else the log) and metrics (CloudWatch
    with ``CUTOVER_METRICS=cloudwatch``, or ``auto`` on AWS); None when there is nothing to send."""
    metrics_kind = settings.metrics
    if metrics_kind == "auto":
        metrics_kind = "cloudwatch" if settings.backend == "aws" else "off"
    if settings.sns_topic_arn is None and metrics_kind == "off":
        return None
    notifier: Notifier = LogNotifier()
    if settings.sns_topic_arn is not None:
        from controller.engine.notify_aws import SNSNotifier

        notifier = SNSNotifier(_aws_client(settings, "sns"), settings.sns_topic_arn)
    sink: MetricSink = LogMetrics()
    if metrics_kind == "cloudwatch":
        from controller.engine.notify_aws import CloudWatchMetrics

        sink = CloudWatchMetrics(_aws_client(settings, "cloudwatch"), settings.metric_namespace)
    return Signals(
        notifier,
        sink,
        clock,
        burst=settings.notify_burst,
        window_seconds=settings.notify_window_seconds,
    )


# Where an unreadable last-known-good record is kept for inspection (``ValueStore``), before a good
# flag is persisted over it.
UNREADABLE_FLAG_KEY = "flag:last_known_good:unreadable"


def cycle_config(settings: Settings) -> CycleConfig:
    """The cycle's knobs from the settings."""
    lease = max(30.0, settings.cycle_seconds * 6)
    return CycleConfig(
        budget=settings.budget,
        max_claims=settings.max_claims_per_cycle,
        max_batch_items=settings.max_batch_items,
        legacy_max_threads=settings.legacy_max_threads,
        # A submit ends within its lease; an intent younger than that may still have one under way.
        intent_grace_seconds=max(settings.intent_grace_seconds, lease),
        lease_seconds=lease,
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
    holder: str | None = None,
) -> Service:
    """Wire one controller process from its settings.

    ``holder`` is the replica's identity for the ledger's leases (``cutover run`` gives its host and
    listening address, stable across a restart); by default the host and process id.

    ``on_finished`` hears every outcome the cycle records; ``wrap_backend`` may decorate each
    backend (the service's metrics time the calls that way). A housekeeping thread starts too
    (working out the rollout gates, auto-advance with a rollout plan, sending signals, reconciling
    with an AWS backend); ``Service.close`` stops it.
    """
    ledger = make_ledger(settings)
    holder = holder or f"{socket.gethostname()}:{os.getpid()}"
    tally = ReconcileTally()
    try:
        signals = make_signals(settings, clock)
        changed = on_flag_change
        if signals is not None:
            changed = _both(on_flag_change, signals.flag_changed)
        flags = LastKnownGood(
            make_flag_source(settings, clock),
            ledger,
            clock,
            max_age_seconds=settings.max_flag_age,
            on_change=changed,
            keep_aside=lambda record: ledger.put_value(UNREADABLE_FLAG_KEY, record, clock()),
        )
        backends = make_backends(settings, clock, tally)
        if wrap_backend is not None:
            backends = {path: wrap_backend(backend) for path, backend in backends.items()}
    except BaseException:
        ledger.close()
        raise
    try:
        shadows = make_shadows(settings, ledger, clock, holder)
    except BaseException:
        for backend in backends.values():
            backend.close()
        ledger.close()
        raise
    controller = Controller(
        ledger=ledger,
        flags=flags,
        backends=backends,
        config=cycle_config(settings),
        clock=clock,
        holder=holder,
        on_finished=_all(on_finished, signals.conversion_finished if signals is not None else None),
        shadows=shadows.runner if shadows is not None else None,
    )
    service = Service(settings, ledger, flags, backends, controller, clock, shadows=shadows)
    if settings.flag_source == "file":
        from flags.holds import FileHolds

        service.held = FileHolds(settings.flag_file, settings.flag_key)
    try:
        service.intakes = make_intakes(settings, ledger, clock, holder)
    except BaseException:
        service.close()
        raise
    reconciler = Reconciler(
        ledger,
        backends,
        window_seconds=settings.reconcile_hours * 3600,
        interval_seconds=settings.reconcile_seconds,
        grace_seconds=settings.intent_grace_seconds,
        holder=holder,
        clock=clock,
        tally=tally,
        on_findings=(lambda f: signals.reconciled(len(f.duplicates), len(f.orphans))) if signals else None,
    )
    gates = service.gates

    def judge_gates(now: float) -> None:
        # Off the request path: /metrics, the signals and auto-advance read what this works out.
        gates.report()

    tasks: list[Callable[[float], None]] = [judge_gates]
    if settings.rollout_file is not None:
        service.auto = make_auto(settings, service, holder, signals)
        tasks.append(service.auto.tick)
    if signals is not None:
        signals.view = controller
        service.signals = signals
        tasks.append(lambda now: signals.gates_judged(gates.report()))
        tasks.append(signals.tick)
    if reconciler.enabled:
        service.reconciler = reconciler
        tasks.append(reconciler.tick)
    if shadows is not None:
        tasks.append(shadows.checks.tick)
    service.housekeeping = Housekeeping(
        tasks, interval=min(15.0, max(1.0, settings.cycle_seconds * 3)), clock=clock
    )
    service.housekeeping.start()
    return service


def make_auto(settings: Settings, service: Service, holder: str, signals: Signals | None) -> AutoAdvancer:
    """Auto-advance for the service; it acts only while the rollout plan opts in (``auto:``)."""
    controller = service.controller
    return AutoAdvancer(
        leases=service.ledger,
        values=service.ledger,
        store=lambda: make_version_store(settings),
        gates=service.gates,
        plan=service.gates.plan,
        notify=signals.announce if signals is not None else LogNotifier().publish,
        clock=service.clock,
        holder=holder,
        max_add=settings.max_add,
        flag_read=lambda: controller.last_report is not None,
        lease_seconds=max(60.0, settings.cycle_seconds * 12),
    )


def _all(
    *hooks: Callable[[ConversionRecord, ConversionState, str], None] | None,
) -> Callable[[ConversionRecord, ConversionState, str], None] | None:
    present = [h for h in hooks if h is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def call(record: ConversionRecord, state: ConversionState, reason: str) -> None:
        for hook in present:
            hook(record, state, reason)

    return call


def _both(
    first: Callable[[FlagChange], None] | None, second: Callable[[FlagChange], None]
) -> Callable[[FlagChange], None]:
    def call(change: FlagChange) -> None:
        if first is not None:
            first(change)
        second(change)

    return call


def make_intakes(settings: Settings, ledger: Ledger, clock: Callable[[], float], holder: str) -> list[Intake]:
    """The scheduled finder and the SQS queue, where configured."""
    from controller.intake.finder import finder_from_settings
    from controller.intake.sqs import sqs_from_settings

    found: list[Intake | None] = [
        finder_from_settings(settings, ledger, clock, holder),
        sqs_from_settings(settings, ledger, clock),
    ]
    return [intake for intake in found if intake is not None]
