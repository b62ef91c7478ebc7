"""The old path on AWS CodeBuild: one build per dispatch works through a manifest of conversions.

Translates between the controller's values and the CodeBuild API; it never decides which
conversion runs where or when. The manifest lives in the manifest bucket at a key named by the
batch key, and the build is started with an idempotency token derived from the manifest's bytes,
so a retried StartBuild cannot start a second build; the manifest's URI in the build's
environment is how reconciliation finds the build after a crash.

What a build receives (environment variable overrides): ``CUTOVER_PATH=legacy``,
``CUTOVER_BATCH`` (the batch key), ``CUTOVER_MANIFEST_URI`` (``s3://`` JSON manifest
``{"contract": 1, "batch", "path", "threads", "conversions": [{conversion_id, tenant_id, params,
flag_version, fence}, ...]}``, built by ``cutover_job.contract.manifest_document``),
``CUTOVER_MANIFEST_JSON`` (the same manifest inline, only when it is small),
``CUTOVER_RESULTS_URI`` (prefix; the result of a conversion goes to ``<prefix><id>.json`` as the
job contract's result document ``{"contract", "conversion_id", "status": "succeeded"|"failed",
"reason", "output", "started_at", "finished_at", "fence", "job_id"}``),
``CUTOVER_THREADS`` (worker threads it may use: its share of the budget) and
``CUTOVER_FLAG_VERSION`` (the flag versions its conversions were routed under). A build takes
this up and writes its results with ``cutover_job`` (the job contract, see the README).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from controller.core.domain import DispatchBatch, JobRef, JobState, JobStatus, Path
from controller.core.errors import BackendUnavailableError, SubmitRejectedError
from controller.core.ports import Run
from controller.plumbing.aws import (
    ManifestStore,
    Retrier,
    checked_key,
    describe,
    error_code,
    manifest_bytes,
    outcome_unknown,
    transient,
)
from controller.plumbing.awsbackend import AwsBackend
from controller.plumbing.localproc import result_state
from controller.plumbing.tally import ReconcileTally
from cutover_job.contract import manifest_document

if TYPE_CHECKING:
    from mypy_boto3_codebuild import CodeBuildClient
    from mypy_boto3_codebuild.type_defs import EnvironmentVariableTypeDef

log = logging.getLogger("cutover.codebuild")

BATCH_GET_MAX = 100  # BatchGetBuilds ids per call, documented maximum
STOP_AGAIN_SECONDS = 10.0  # a build's conversions cancelled together share one StopBuild
INLINE_MANIFEST_MAX = 3000  # characters; one environment variable is refused beyond about 4096
_QUEUED_PHASES = frozenset({"SUBMITTED", "QUEUED", "PROVISIONING"})
_ENDED = frozenset({"SUCCEEDED", "FAILED", "FAULT", "TIMED_OUT", "STOPPED"})


def idempotency_token(manifest: bytes) -> str:
    """The StartBuild token of a manifest: the same manifest always gives the same token."""
    return "cutover-" + hashlib.sha256(manifest).hexdigest()[:48]


@dataclass(frozen=True, slots=True)
class _Build:
    """What never changes about a build: its id, start time and manifest."""

    build_id: str
    started_at: float
    manifest_uri: str | None


def _env(build: dict[str, Any], name: str) -> str | None:
    for var in (build.get("environment") or {}).get("environmentVariables") or []:
        if var.get("name") == name:
            return str(var.get("value"))
    return None


def _started(build: dict[str, Any]) -> float:
    start: Any = build.get("startTime")
    return float(start.timestamp()) if isinstance(start, datetime) else 0.0


def _why(build: dict[str, Any]) -> str:
    """The build's end in words: its status and the first phase message CodeBuild gives."""
    status = str(build.get("buildStatus", "?"))
    for phase in build.get("phases") or []:
        for context in phase.get("contexts") or []:
            if context.get("message"):
                return f"{status} in {phase.get('phaseType', '?')}: {context['message']}"
    return status


class CodeBuildBackend(AwsBackend):
    """The backend port on one CodeBuild project (``CUTOVER_BACKEND=aws``)."""

    path = Path.LEGACY
    service = "CodeBuild"

    def __init__(
        self,
        codebuild: CodeBuildClient,
        manifests: ManifestStore,
        *,
        project: str,
        retrier: Retrier | None = None,
        clock: Callable[[], float] = time.time,
        tally: ReconcileTally | None = None,
        lookback_seconds: float = 24 * 3600.0,
        results_refresh_seconds: float = 15.0,
    ) -> None:
        super().__init__(codebuild, retrier=retrier, tally=tally)
        self.codebuild = codebuild
        self.manifests = manifests
        self.project = project
        self.lookback_seconds = lookback_seconds
        self._clock = clock
        self._builds: dict[str, _Build] = {}
        self._results: dict[str, tuple[float, set[str]]] = {}
        self._results_refresh = results_refresh_seconds
        self._stopped: dict[str, float] = {}  # build id -> when StopBuild was last sent

    # -- submit ------------------------------------------------------------------------------

    def submit(self, batch: DispatchBatch) -> list[JobRef]:
        """Write the batch's manifest and start one build for it (StartBuild with a token), every
        call and retry within the batch's time limit."""
        with self._retrier.within(batch.time_limit):
            return self._start(batch)

    def _start(self, batch: DispatchBatch) -> list[JobRef]:
        key = checked_key(batch.key)
        if not batch.items:
            return []
        body = manifest_bytes(
            manifest_document(key, Path.LEGACY.value, batch.items, threads=batch.concurrency)
        )
        manifest_key = self.manifests.key(Path.LEGACY.value, key)
        try:
            self.manifests.put(manifest_key, body)
        except (ClientError, BotoCoreError) as exc:
            raise SubmitRejectedError(f"manifest {manifest_key}: {describe(exc)}") from exc
        env = {
            "CUTOVER_PATH": Path.LEGACY.value,
            "CUTOVER_BATCH": key,
            "CUTOVER_MANIFEST_URI": self.manifests.uri(manifest_key),
            "CUTOVER_RESULTS_URI": self.manifests.uri(self.manifests.key(Path.LEGACY.value, key, "results/")),
            "CUTOVER_THREADS": str(batch.concurrency),
            "CUTOVER_FLAG_VERSION": ",".join(sorted({i.flag_version for i in batch.items})),
        }
        if len(body) <= INLINE_MANIFEST_MAX:
            env["CUTOVER_MANIFEST_JSON"] = body.decode()
        variables: list[EnvironmentVariableTypeDef] = [
            {"name": k, "value": v, "type": "PLAINTEXT"} for k, v in env.items()
        ]
        try:
            # The token makes a repeated call start nothing new, so any transient failure is retried.
            answer = self._retrier.call(
                partial(
                    self.codebuild.start_build,
                    projectName=self.project,
                    environmentVariablesOverride=variables,
                    idempotencyToken=idempotency_token(body),
                ),
                retry_if=transient,
            )
        except (ClientError, BotoCoreError) as exc:
            if outcome_unknown(exc):
                raise BackendUnavailableError(f"CodeBuild StartBuild {key}: {describe(exc)}") from exc
            raise SubmitRejectedError(f"CodeBuild StartBuild {key}: {describe(exc)}") from exc
        build = dict(answer["build"])
        build_id = str(build["id"])
        self._builds[build_id] = _Build(
            build_id, _started(build) or self._clock(), env["CUTOVER_MANIFEST_URI"]
        )
        log.info(
            "codebuild.started", extra={"batch": key, "build_id": build_id, "conversions": len(batch.items)}
        )
        return [JobRef(build_id, i.conversion_id) for i in batch.items]

    # -- poll --------------------------------------------------------------------------------

    def poll(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        """BatchGetBuilds in chunks of 100; each conversion's outcome from its result object, and a
        build that ended without one fails that conversion with the build's reason."""
        return self._poll(refs, track=True)

    def outcomes(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        """The state of each reference, as ``poll`` tells it, without touching the threads the
        cycle counts: for reconciliation on another thread."""
        return self._poll(refs, track=False)

    def _poll(self, refs: Sequence[JobRef], *, track: bool) -> dict[JobRef, JobState]:
        by_build: dict[str, list[JobRef]] = {}
        for r in refs:
            by_build.setdefault(r.job_id, []).append(r)
        out: dict[JobRef, JobState] = {}
        held = 0
        with self._unknown("BatchGetBuilds"):
            builds = self._get_builds(list(by_build))
            for build_id, brefs in by_build.items():
                build = builds.get(build_id)
                if build is None:
                    out.update({r: JobState(JobStatus.UNKNOWN, "no such build") for r in brefs})
                    continue
                states, holding = self._states(build, brefs)
                out.update(states)
                held += holding
        if track:
            self._in_use = held  # each working build holds min(its threads, conversions left)
        return out

    def _get_builds(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), BATCH_GET_MAX):
            answer = self._read(
                partial(self.codebuild.batch_get_builds, ids=list(ids[i : i + BATCH_GET_MAX]))
            )
            for build in answer.get("builds", []):
                b = dict(build)
                found[str(b["id"])] = b
                self._builds.setdefault(
                    str(b["id"]), _Build(str(b["id"]), _started(b), _env(b, "CUTOVER_MANIFEST_URI"))
                )
        return found

    def _states(self, build: dict[str, Any], refs: Sequence[JobRef]) -> tuple[dict[JobRef, JobState], int]:
        """Each ref's state in one build, and the worker threads the build still holds."""
        build_id = str(build["id"])
        status = str(build.get("buildStatus", ""))
        manifest_uri = _env(build, "CUTOVER_MANIFEST_URI")
        manifest_key = self.manifests.key_of(manifest_uri or "")
        manifest = self.manifests.get(manifest_key) if manifest_key else None
        ended = status in _ENDED
        queued = status == "IN_PROGRESS" and str(build.get("currentPhase", "")) in _QUEUED_PHASES
        if manifest is None:
            return self._unread(
                build_id, refs, ended=ended, queued=queued, threads=_env(build, "CUTOVER_THREADS")
            )
        results_prefix = manifest_key.rsplit("/", 1)[0] + "/results/" if manifest_key else ""
        done = self._done(build_id, results_prefix, ended=ended, queued=queued)
        order = [str(c["conversion_id"]) for c in manifest.get("conversions", [])]
        threads = int(manifest.get("threads") or 1)
        left = [c for c in order if c not in done]
        working = set(left[:threads]) if not ended and not queued else set()
        out: dict[JobRef, JobState] = {}
        for r in refs:
            state: JobState | None = None
            if r.conversion_id in done:
                state = result_state(
                    self.manifests.get(f"{results_prefix}{r.conversion_id}.json", cached=False),
                    r.conversion_id,
                )
            if state is None and ended:
                state = JobState(
                    JobStatus.FAILED,
                    f"build {build_id} ended {_why(build)} without a result for this conversion",
                )
            elif state is None:
                state = JobState(JobStatus.RUNNING if r.conversion_id in working else JobStatus.QUEUED)
            out[r] = state
        holding = 0 if ended else min(threads, len(left))
        return out, holding

    @staticmethod
    def _unread(
        build_id: str, refs: Sequence[JobRef], *, ended: bool, queued: bool, threads: str | None
    ) -> tuple[dict[JobRef, JobState], int]:
        """A build whose manifest is out of reach (say the manifest bucket setting changed since it
        started): while CodeBuild says it works, it works, and holds the threads it was given;
        once it ended, what each conversion came to is unknown here."""
        why = f"build {build_id} has no readable manifest"
        if ended:
            return {r: JobState(JobStatus.UNKNOWN, why) for r in refs}, 0
        status = JobStatus.QUEUED if queued else JobStatus.RUNNING
        held = int(threads) if threads and threads.isdigit() else len(refs)
        return {r: JobState(status, why) for r in refs}, held

    def _done(self, build_id: str, prefix: str, *, ended: bool, queued: bool) -> set[str]:
        """Conversions of a build with a result object. A working build's results are listed at
        most every ``results_refresh_seconds``; an ended build's once more, in full."""
        now = self._clock()
        cached = self._results.get(build_id)
        if queued or (cached is not None and not ended and now - cached[0] < self._results_refresh):
            return cached[1] if cached is not None else set()
        done = {name.rsplit("/", 1)[1].removesuffix(".json") for name in self.manifests.names(prefix)}
        if ended:
            self._results.pop(build_id, None)
        else:
            self._results[build_id] = (now, done)
        return done

    # -- find, inventory ---------------------------------------------------------------------

    def _recent(self, since: float, looking_for: set[str] | None = None) -> list[_Build]:
        """The project's builds started since ``since``, newest first, from ListBuildsForProject
        (ids only) and BatchGetBuilds for the ids not seen before; with ``looking_for`` (manifest
        URIs), paging stops as soon as a build of each has been seen."""
        out: list[_Build] = []
        missing = set(looking_for) if looking_for is not None else None
        token: str | None = None
        while True:
            request: dict[str, Any] = {"projectName": self.project, "sortOrder": "DESCENDING"}
            if token:
                request["nextToken"] = token
            answer = self._read(partial(self.codebuild.list_builds_for_project, **request))
            ids = [str(i) for i in answer.get("ids", [])]
            self._get_builds([i for i in ids if i not in self._builds])
            page = [self._builds[i] for i in ids if i in self._builds]
            out.extend(b for b in page if b.started_at >= since)
            if missing is not None:
                missing -= {b.manifest_uri for b in page if b.manifest_uri}
            token = answer.get("nextToken")
            if not token or (page and all(b.started_at < since for b in page)) or missing == set():
                break
        for build_id in [b for b, info in self._builds.items() if info.started_at < since - 3600]:
            del self._builds[build_id]  # older than any window asked for: forget it
        return out

    def find(self, intents: Sequence[tuple[str, str]]) -> dict[str, JobRef]:
        """Builds started under these intents: the project's recent builds (newest first, until each
        intent's manifest has turned up) whose environment names the intent's manifest."""
        wanted: dict[str, set[str]] = {}
        for conversion_id, key in intents:
            wanted.setdefault(self.manifests.uri(self.manifests.key(Path.LEGACY.value, key)), set()).add(
                conversion_id
            )
        found: dict[str, JobRef] = {}
        with self._unknown("ListBuildsForProject"):
            builds = self._recent(self._clock() - self.lookback_seconds, set(wanted))
            for build in sorted(builds, key=lambda b: b.started_at):
                ids = wanted.get(build.manifest_uri or "")
                if not ids:
                    continue
                for cid in self._conversions(build):
                    if cid in ids and cid not in found:
                        found[cid] = JobRef(build.build_id, cid)
        return found

    def _conversions(self, build: _Build) -> list[str]:
        key = self.manifests.key_of(build.manifest_uri or "")
        manifest = self.manifests.get(key) if key else None
        return [str(c["conversion_id"]) for c in (manifest or {}).get("conversions", [])]

    def inventory(self, since: float) -> list[Run]:
        """Every conversion in the project's builds started since ``since``. A build's per-conversion
        outcomes are in its result objects, so they are UNKNOWN here (``poll`` reads them)."""
        with self._unknown("ListBuildsForProject"):
            return [
                Run(JobRef(b.build_id, cid), JobStatus.UNKNOWN, b.started_at)
                for b in self._recent(since)
                for cid in self._conversions(b)
            ]

    # -- cancel, capacity --------------------------------------------------------------------

    def cancel(self, ref: JobRef) -> None:
        """Stop the build (and so every conversion in it); a finished or stopped build is left alone.
        The conversions of one build share one StopBuild; asked again later (a stray stopped until
        it is seen stopped), it is sent again."""
        now = self._clock()
        if now - self._stopped.get(ref.job_id, float("-inf")) < STOP_AGAIN_SECONDS:
            return
        try:
            self._read(partial(self.codebuild.stop_build, id=ref.job_id))
        except ClientError as exc:
            if error_code(exc) not in ("ResourceNotFoundException", "InvalidInputException"):
                raise BackendUnavailableError(f"CodeBuild StopBuild {ref.job_id}: {describe(exc)}") from exc
        except BotoCoreError as exc:
            raise BackendUnavailableError(f"CodeBuild StopBuild {ref.job_id}: {describe(exc)}") from exc
        self._stopped[ref.job_id] = now
        for build_id in [b for b, at in self._stopped.items() if now - at > 3600]:
            del self._stopped[build_id]
        log.info("codebuild.stopped", extra={"build_id": ref.job_id, "conversion_id": ref.conversion_id})

    def set_capacity(self, slots: int) -> int | None:
        """A build's threads are fixed when it starts; there is no cap to set."""
        return None
