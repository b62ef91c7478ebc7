"""The new path on AWS Batch (Fargate): submit, track, find, cancel and cap conversion jobs.

Translates between the controller's values and the Batch API; it never decides which conversion
runs where or when. SubmitJob has no idempotency token, so everything is deterministic instead:
a batch's manifest lives at a key named by the batch key, and job names come from the batch key
and the conversion id, so reconciliation can find what a crashed controller submitted.

What a job receives (container environment overrides):

- every job: ``CUTOVER_PATH=new``, ``CUTOVER_BATCH`` (the batch key), ``CUTOVER_MANIFEST_URI``
  (``s3://`` JSON manifest of the whole batch: ``{"contract": 1, "batch", "path", "conversions":
  [{conversion_id, tenant_id, params, flag_version, fence}, ...]}``, built by
  ``cutover_job.contract.manifest_document``), ``CUTOVER_MANIFEST_OFFSET`` and
  ``CUTOVER_RESULTS_URI`` (prefix; the result of a conversion goes to
  ``<prefix><conversion_id>.json`` as the job contract's result document ``{"contract",
  "conversion_id", "status": "succeeded"|"failed", "reason", "output", "started_at",
  "finished_at", "fence", "job_id"}``, see ``cutover_job``);
- an array job's child works on manifest entry ``offset + AWS_BATCH_JOB_ARRAY_INDEX``;
- a single job also gets ``CUTOVER_CONVERSION_ID``, ``CUTOVER_TENANT_ID``,
  ``CUTOVER_FLAG_VERSION``, ``CUTOVER_FENCE``, ``CUTOVER_RESULT_URI`` and, when small enough,
  ``CUTOVER_PARAMS`` (JSON); otherwise it reads entry ``offset`` of the manifest.

Jobs take this up and write their results with ``cutover_job`` (the job contract, see the README).
The job's exit status is the outcome Batch reports; the result object says where the output went,
and a failed job's result object gives the first part of its failure reason.
Statuses: SUBMITTED, PENDING and RUNNABLE are QUEUED (waiting, no load on the database);
STARTING and RUNNING are RUNNING (they hold compute environment capacity).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from controller.core.domain import DispatchBatch, DispatchItem, JobRef, JobState, JobStatus, Path
from controller.core.errors import BackendUnavailableError, SubmitRejectedError
from controller.core.ports import QuotaClient, Run
from controller.plumbing.aws import (
    ManifestStore,
    Retrier,
    checked_key,
    describe,
    manifest_bytes,
    not_sent,
    throttled,
)
from controller.plumbing.awsbackend import AwsBackend
from controller.plumbing.localproc import result_state
from controller.plumbing.tally import ReconcileTally
from cutover_job.contract import manifest_document

if TYPE_CHECKING:
    from mypy_boto3_batch import BatchClient
    from mypy_boto3_batch.type_defs import KeyValuePairTypeDef

log = logging.getLogger("cutover.batch")

ARRAY_MAX = 10_000  # arrayProperties.size, documented maximum
DESCRIBE_MAX = 100  # DescribeJobs ids per call, documented maximum
LIST_MAX_WITH_FILTER = 100  # ListJobs maxResults with a filter
LIST_MAX = 1000  # ListJobs maxResults by status
INLINE_PARAMS_MAX = 8 * 1024  # SubmitJob's whole payload must stay under 30 KiB
JOB_NAME_MAX = 128
FARGATE_DEFAULT_QUOTA = 6.0  # vCPUs, the documented default Fargate On-Demand quota

_KEY = re.compile(r"[A-Za-z0-9]{1,64}")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_TAG_VALUE = re.compile(r"[\w .:/=+\-@]{0,256}")
_QUEUED = frozenset({"SUBMITTED", "PENDING", "RUNNABLE"})
_RUNNING = frozenset({"STARTING", "RUNNING"})


def single_job_name(key: str, conversion_id: str) -> str:
    """The job name of one conversion in batch ``key``: valid Batch characters, at most 128, and
    different for different conversion ids (a digest of the id keeps look-alikes apart)."""
    digest = hashlib.sha256(conversion_id.encode()).hexdigest()[:12]
    room = JOB_NAME_MAX - len(key) - len(digest) - 2
    slug = _NAME_CHARS.sub("_", conversion_id)[:room]
    return f"{key}-{slug}-{digest}"


def array_job_name(key: str, offset: int) -> str:
    """The job name of the array job that works manifest entries from ``offset`` on."""
    return f"{key}-array-{offset}"


def planned_jobs(key: str, conversion_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Job name → (manifest offset, size) of every job a batch of these conversions is split into."""
    out: dict[str, tuple[int, int]] = {}
    for offset in range(0, len(conversion_ids), ARRAY_MAX):
        chunk = conversion_ids[offset : offset + ARRAY_MAX]
        name = single_job_name(key, chunk[0]) if len(chunk) == 1 else array_job_name(key, offset)
        out[name] = (offset, len(chunk))
    return out


def _status(status: str | None, reason: str, output: str | None = None) -> JobState:
    if status in _QUEUED:
        return JobState(JobStatus.QUEUED)
    if status in _RUNNING:
        return JobState(JobStatus.RUNNING)
    if status == "SUCCEEDED":
        return JobState(JobStatus.SUCCEEDED, "", output)
    if status == "FAILED":
        return JobState(JobStatus.FAILED, reason or "job failed")
    return JobState(JobStatus.UNKNOWN, f"unknown Batch status {status!r}")


def _failure_reason(summary: dict[str, Any]) -> str:
    """Why a job failed, from its status reason and its last attempt's container."""
    parts = [str(summary.get("statusReason") or "job failed")]
    attempts = summary.get("attempts") or []
    container = (attempts[-1].get("container") if attempts else None) or summary.get("container") or {}
    if container.get("reason"):
        parts.append(str(container["reason"]))
    if container.get("exitCode") is not None:
        parts.append(f"exit code {container['exitCode']}")
    if len(attempts) > 1:
        parts.append(f"after {len(attempts)} attempts")
    return "; ".join(parts)


def _env(detail: dict[str, Any], name: str) -> str | None:
    for pair in (detail.get("container") or {}).get("environment") or []:
        if pair.get("name") == name:
            return str(pair.get("value"))
    return None


@dataclass(slots=True)
class _Children:
    """What was last listed of an array job's children."""

    at: float
    summary: dict[str, int]
    states: dict[int, JobState]


@dataclass(slots=True)
class CapacityView:
    """What the adapter knows of the new path's capacity, for ``/status``."""

    vcpus_per_job: float | None = None
    compute_environment: str | None = None
    max_vcpus: int | None = None  # as last set or read
    cap_slots: int | None = None  # jobs that fit under max_vcpus
    running: int = 0  # jobs STARTING or RUNNING at the last poll
    quota_vcpus: float | None = None  # the account's Fargate On-Demand vCPU quota
    quota_source: str = ""
    budget_vcpus: float | None = None  # what the whole budget would need on this path
    problems: list[str] = field(default_factory=list)


class BatchBackend(AwsBackend):
    """The backend port on one Batch job queue and job definition (``CUTOVER_BACKEND=aws``)."""

    path = Path.NEW
    service = "Batch"

    def __init__(
        self,
        batch: BatchClient,
        manifests: ManifestStore,
        *,
        job_queue: str,
        job_definition: str,
        compute_environment: str | None = None,
        manage_max_vcpus: bool = True,
        vcpus_per_job: float | None = None,
        budget: int = 20,
        fargate_quota: float | None = None,
        quota_reader: Callable[[], float | None] | None = None,
        retrier: Retrier | None = None,
        clock: Callable[[], float] = time.time,
        tally: ReconcileTally | None = None,
        child_refresh_seconds: float = 30.0,
        capacity_refresh_seconds: float = 300.0,
    ) -> None:
        super().__init__(batch, retrier=retrier, tally=tally)
        self.batch = batch
        self.manifests = manifests
        self.job_queue = job_queue
        self.job_definition = job_definition
        self.manage_max_vcpus = manage_max_vcpus
        self.budget = budget
        self._clock = clock
        self._child_refresh = child_refresh_seconds
        self._capacity_refresh = capacity_refresh_seconds
        self._vcpus_setting = vcpus_per_job
        self._quota_setting = fargate_quota
        self._quota_reader = quota_reader
        self._ce_setting = compute_environment
        self._children: dict[str, _Children] = {}
        self._max_vcpus_at = -math.inf
        self._known_at = -math.inf
        self._quota_at = -math.inf
        self._definition_problems: list[str] = []
        self.capacity = CapacityView()

    # -- plumbing ----------------------------------------------------------------------------

    def _manifest_key(self, key: str) -> str:
        return self.manifests.key(Path.NEW.value, key)

    def _results_uri(self, key: str) -> str:
        return self.manifests.uri(self.manifests.key(Path.NEW.value, key, "results/"))

    # -- submit ------------------------------------------------------------------------------

    def submit(self, batch: DispatchBatch) -> list[JobRef]:
        """Write the batch's manifest, then one job per conversion alone, or array jobs of up to
        10,000 conversions; at most ``ceil(n / 10,000)`` SubmitJob calls for ``n`` conversions.
        Every call and retry within the batch's time limit."""
        with self._retrier.within(batch.time_limit):
            return self._submit_batch(batch)

    def _submit_batch(self, batch: DispatchBatch) -> list[JobRef]:
        key = checked_key(batch.key)
        if not batch.items:
            return []
        body = manifest_bytes(manifest_document(key, Path.NEW.value, batch.items))
        manifest_key = self._manifest_key(key)
        try:
            self.manifests.put(manifest_key, body)
        except (ClientError, BotoCoreError) as exc:
            raise SubmitRejectedError(f"manifest {manifest_key}: {describe(exc)}") from exc
        common = {
            "CUTOVER_PATH": Path.NEW.value,
            "CUTOVER_BATCH": key,
            "CUTOVER_MANIFEST_URI": self.manifests.uri(manifest_key),
            "CUTOVER_RESULTS_URI": self._results_uri(key),
        }
        refs: list[JobRef] = []
        submitted = 0
        for offset in range(0, len(batch.items), ARRAY_MAX):
            chunk = batch.items[offset : offset + ARRAY_MAX]
            try:
                if len(chunk) == 1:
                    job_id = self._submit_one(key, chunk[0], offset, common)
                    refs.append(JobRef(job_id, chunk[0].conversion_id))
                else:
                    job_id = self._submit_array(key, chunk, offset, common)
                    refs.extend(JobRef(f"{job_id}:{i}", item.conversion_id) for i, item in enumerate(chunk))
            except (ClientError, BotoCoreError) as exc:
                refused = isinstance(exc, ClientError) and not _server_side(exc)
                if submitted == 0 and (refused or not_sent(exc)):
                    raise SubmitRejectedError(f"Batch SubmitJob {batch.key}: {describe(exc)}") from exc
                raise BackendUnavailableError(
                    f"Batch SubmitJob {batch.key}: {describe(exc)} after {submitted} job(s) were "
                    "submitted; reconciliation will find them"
                ) from exc
            submitted += 1
        log.info("batch.submitted", extra={"batch": key, "conversions": len(refs), "jobs": submitted})
        return refs

    def _submit(self, **kwargs: Any) -> str:
        # No idempotency token: only a call that surely did nothing (throttled, never sent) is repeated.
        answer = self._retrier.call(
            partial(self.batch.submit_job, **kwargs), retry_if=lambda e: throttled(e) or not_sent(e)
        )
        return str(answer["jobId"])

    def _submit_one(self, key: str, item: DispatchItem, offset: int, common: dict[str, str]) -> str:
        env = {
            **common,
            "CUTOVER_MANIFEST_OFFSET": str(offset),
            "CUTOVER_CONVERSION_ID": item.conversion_id,
            "CUTOVER_TENANT_ID": str(item.tenant_id),
            "CUTOVER_FLAG_VERSION": item.flag_version,
            "CUTOVER_FENCE": str(item.fence),
            "CUTOVER_RESULT_URI": common["CUTOVER_RESULTS_URI"] + f"{item.conversion_id}.json",
        }
        params = manifest_bytes(item.params).decode()
        if len(params) <= INLINE_PARAMS_MAX:
            env["CUTOVER_PARAMS"] = params
        tags = {
            "cutover:batch": key,
            "cutover:conversion-id": item.conversion_id,
            "cutover:tenant-id": str(item.tenant_id),
            "cutover:flag-version": item.flag_version,
        }
        return self._submit(
            jobName=single_job_name(key, item.conversion_id),
            jobQueue=self.job_queue,
            jobDefinition=self.job_definition,
            containerOverrides={"environment": _pairs(env)},
            tags=_tags(tags),
        )

    def _submit_array(
        self, key: str, chunk: Sequence[DispatchItem], offset: int, common: dict[str, str]
    ) -> str:
        env = {**common, "CUTOVER_MANIFEST_OFFSET": str(offset)}
        versions = {i.flag_version for i in chunk}
        tags = {"cutover:batch": key, "cutover:conversions": str(len(chunk))}
        if len(versions) == 1:
            env["CUTOVER_FLAG_VERSION"] = tags["cutover:flag-version"] = next(iter(versions))
        return self._submit(
            jobName=array_job_name(key, offset),
            jobQueue=self.job_queue,
            jobDefinition=self.job_definition,
            arrayProperties={"size": len(chunk)},
            containerOverrides={"environment": _pairs(env)},
            tags=_tags(tags),
        )

    # -- poll --------------------------------------------------------------------------------

    def poll(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        """DescribeJobs in chunks of 100 for single jobs and array parents; an array's children
        are listed only when the parent's status summary says some have finished or run."""
        return self._poll(refs, track=True)

    def outcomes(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        """The state of each reference, as ``poll`` tells it, without touching what the cycle
        tracks (running jobs, listed children): for reconciliation on another thread."""
        return self._poll(refs, track=False)

    def _poll(self, refs: Sequence[JobRef], *, track: bool) -> dict[JobRef, JobState]:
        singles = [r for r in refs if ":" not in r.job_id]
        children: dict[str, list[JobRef]] = {}
        for r in refs:
            if ":" in r.job_id:
                children.setdefault(r.job_id.rsplit(":", 1)[0], []).append(r)
        with self._unknown("DescribeJobs"):
            details = self._describe([r.job_id for r in singles] + list(children))
            out: dict[JobRef, JobState] = {}
            running = 0
            for r in singles:
                detail = details.get(r.job_id)
                if detail is None:
                    out[r] = JobState(JobStatus.UNKNOWN, "no such job")
                    continue
                running += detail.get("status") in _RUNNING
                result_uri = _env(detail, "CUTOVER_RESULT_URI")
                out[r] = _status(detail.get("status"), _failure_reason(detail), result_uri)
                if out[r].status is JobStatus.FAILED and result_uri:
                    out[r] = self._failure_from_result(r, out[r], result_uri)
            polled: dict[str, _Children] = {}
            for parent, crefs in children.items():
                detail = details.get(parent)
                if detail is None:
                    out.update({r: JobState(JobStatus.UNKNOWN, "no such job") for r in crefs})
                    continue
                summary = {
                    k: int(v)
                    for k, v in (detail.get("arrayProperties") or {}).get("statusSummary", {}).items()
                }
                status = str(detail.get("status"))
                running += sum(summary.get(s, 0) for s in _RUNNING)
                results = _env(detail, "CUTOVER_RESULTS_URI")
                known = self._child_states(parent, status, summary)
                polled[parent] = known
                for r in crefs:
                    index = int(r.job_id.rsplit(":", 1)[1])
                    state = known.states.get(index)
                    if state is None:
                        if status in ("SUCCEEDED", "FAILED"):
                            # a finished array: every child not listed as failed succeeded
                            state = JobState(JobStatus.SUCCEEDED)
                        else:
                            state = JobState(JobStatus.QUEUED)
                    if state.status is JobStatus.SUCCEEDED and results:
                        state = JobState(JobStatus.SUCCEEDED, "", f"{results}{r.conversion_id}.json")
                    elif state.status is JobStatus.FAILED and results:
                        state = self._failure_from_result(r, state, f"{results}{r.conversion_id}.json")
                    out[r] = state
        if track:
            self._children = polled
            self._in_use = running  # jobs STARTING or RUNNING, array children from the summaries
            self.capacity.running = running
            self._refresh_capacity_view()
        return out

    def _failure_from_result(self, ref: JobRef, state: JobState, result_uri: str) -> JobState:
        """A failed job's state with the reason its result object gives first (the job's own
        account of the failure), then Batch's; Batch's alone when there is no readable result."""
        key = self.manifests.key_of(result_uri)
        if key is None:
            return state
        try:
            reported = result_state(self.manifests.get(key, cached=False), ref.conversion_id)
        except (ClientError, BotoCoreError) as exc:
            log.info("batch.result_unread", extra={"result": result_uri, "problem": describe(exc)})
            return state
        if reported is None or reported.status is not JobStatus.FAILED:
            return state  # the exit status has the last word on how the job ended
        return JobState(JobStatus.FAILED, f"{reported.reason} ({state.reason})", reported.output)

    def _describe(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(ids))
        for i in range(0, len(unique), DESCRIBE_MAX):
            chunk = unique[i : i + DESCRIBE_MAX]
            answer = self._read(partial(self.batch.describe_jobs, jobs=chunk))
            for job in answer.get("jobs", []):
                found[str(job["jobId"])] = dict(job)
        return found

    def _child_states(self, parent: str, status: str, summary: dict[str, int]) -> _Children:
        now = self._clock()
        cached = self._children.get(parent)
        finished = status in ("SUCCEEDED", "FAILED")
        if status == "SUCCEEDED":
            return _Children(now, summary, {})
        if cached is not None and (
            cached.summary == summary or (not finished and now - cached.at < self._child_refresh)
        ):
            return cached
        wanted = (
            ["FAILED"]
            if finished
            else [s for s in ("FAILED", "SUCCEEDED", "RUNNING", "STARTING") if summary.get(s)]
        )
        states: dict[int, JobState] = {}
        for listed_status in wanted:
            for job in self._list(arrayJobId=parent, jobStatus=listed_status, maxResults=LIST_MAX):
                index = int(str(job["jobId"]).rsplit(":", 1)[1])
                states[index] = _status(str(job.get("status", listed_status)), _failure_reason(job))
        return _Children(now, summary, states)

    def _list(self, **kwargs: Any) -> Iterable[dict[str, Any]]:
        token: str | None = None
        while True:
            request = dict(kwargs)
            if token:
                request["nextToken"] = token
            answer = self._read(partial(self.batch.list_jobs, **request))
            yield from (dict(j) for j in answer.get("jobSummaryList", []))
            token = answer.get("nextToken")
            if not token:
                return

    # -- find, inventory ---------------------------------------------------------------------

    def find(self, intents: Sequence[tuple[str, str]]) -> dict[str, JobRef]:
        """Jobs submitted under these intents: ListJobs filtered by the batch key as a job-name
        prefix, matched against the names the batch's manifest implies."""
        by_key: dict[str, set[str]] = {}
        for conversion_id, key in intents:
            if _KEY.fullmatch(key):
                by_key.setdefault(key, set()).add(conversion_id)
        found: dict[str, JobRef] = {}
        with self._unknown("ListJobs"):
            for key, wanted in by_key.items():
                listed = list(
                    self._list(
                        jobQueue=self.job_queue,
                        filters=[{"name": "JOB_NAME", "values": [f"{key}-*"]}],
                        maxResults=LIST_MAX_WITH_FILTER,
                    )
                )
                if not listed:
                    continue
                for ref in self._refs_of(key, listed):
                    if ref.ref.conversion_id in wanted and ref.ref.conversion_id not in found:
                        found[ref.ref.conversion_id] = ref.ref
        return found

    def _refs_of(self, key: str, jobs: Sequence[dict[str, Any]]) -> list[Run]:
        """The conversions in jobs of batch ``key``, oldest job first, read from its manifest."""
        manifest = self.manifests.get(self._manifest_key(key))
        if manifest is None:
            return []
        ids = [str(c["conversion_id"]) for c in manifest.get("conversions", [])]
        plan = planned_jobs(key, ids)
        out: list[Run] = []
        for job in sorted(jobs, key=lambda j: int(j.get("createdAt", 0))):
            job_id = str(job["jobId"])
            if ":" in job_id or job.get("jobName") not in plan:
                continue  # an array child (some listings include them) or not one of ours
            offset, size = plan[str(job["jobName"])]
            created = int(job.get("createdAt", 0)) / 1000
            status = str(job.get("status"))
            if size == 1:
                out.append(
                    Run(JobRef(job_id, ids[offset]), _status(status, _failure_reason(job)).status, created)
                )
                continue
            child = JobStatus.SUCCEEDED if status == "SUCCEEDED" else JobStatus.UNKNOWN
            if status in ("SUBMITTED", "RUNNABLE"):
                child = JobStatus.QUEUED
            out.extend(Run(JobRef(f"{job_id}:{i}", ids[offset + i]), child, created) for i in range(size))
        return out

    def inventory(self, since: float) -> list[Run]:
        """Every conversion in jobs of this queue created since ``since`` (one ListJobs page per
        100 jobs; manifests are read once and cached)."""
        with self._unknown("ListJobs"):
            jobs = list(
                self._list(
                    jobQueue=self.job_queue,
                    filters=[{"name": "AFTER_CREATED_AT", "values": [str(int(since * 1000))]}],
                    maxResults=LIST_MAX_WITH_FILTER,
                )
            )
            by_key: dict[str, list[dict[str, Any]]] = {}
            for job in jobs:
                key = str(job.get("jobName", "")).split("-", 1)[0]
                if _KEY.fullmatch(key):
                    by_key.setdefault(key, []).append(job)
            out: list[Run] = []
            for key, listed in by_key.items():
                out.extend(self._refs_of(key, listed))
        return out

    # -- cancel ------------------------------------------------------------------------------

    def cancel(self, ref: JobRef) -> None:
        """CancelJob while the job waits, TerminateJob once it starts; a finished job is left alone."""
        reason = f"cancelled by cutover: conversion {ref.conversion_id} is owned by another attempt"
        with self._unknown("CancelJob"):
            detail = self._describe([ref.job_id]).get(ref.job_id)
            if detail is None or detail.get("status") in ("SUCCEEDED", "FAILED"):
                return
            if detail.get("status") in _QUEUED:
                self._read(partial(self.batch.cancel_job, jobId=ref.job_id, reason=reason))
            else:
                self._read(partial(self.batch.terminate_job, jobId=ref.job_id, reason=reason))
        log.info("batch.cancelled", extra={"job_id": ref.job_id, "conversion_id": ref.conversion_id})

    # -- capacity ----------------------------------------------------------------------------

    def set_capacity(self, slots: int) -> int | None:
        """Set the compute environment's maxvCpus to ``slots`` times the vCPUs of a job (never below
        what runs, only when it changes); returns the slots in force, or None when it cannot cap
        exactly (not managed here, unreadable, or a share that is not a whole number of vCPUs)."""
        if not self.manage_max_vcpus:
            return None
        try:
            self._learn_capacity()
        except (ClientError, BotoCoreError) as exc:
            self._problem(f"cannot read the new path's capacity settings ({describe(exc)})")
            return None
        vcpus, ce = self.capacity.vcpus_per_job, self.capacity.compute_environment
        if vcpus is None or ce is None:
            return None
        want = max(slots, self._in_use)
        # maxvCpus is a whole number: when the share is not, round up and let the cycle hold back.
        max_vcpus = math.ceil(want * vcpus - 1e-9)
        exact = abs(max_vcpus - want * vcpus) < 1e-9
        now = self._clock()
        if max_vcpus != self.capacity.max_vcpus or now - self._max_vcpus_at >= self._capacity_refresh:
            try:
                if now - self._max_vcpus_at >= self._capacity_refresh:
                    self.capacity.max_vcpus = self._read_max_vcpus(ce)
                    self._max_vcpus_at = now
                if max_vcpus != self.capacity.max_vcpus:
                    self._read(
                        partial(
                            self.batch.update_compute_environment,
                            computeEnvironment=ce,
                            computeResources={"maxvCpus": max_vcpus},
                        )
                    )
                    log.info("batch.capacity", extra={"compute_environment": ce, "max_vcpus": max_vcpus})
                    self.capacity.max_vcpus = max_vcpus
                    self._max_vcpus_at = now
            except (ClientError, BotoCoreError) as exc:
                self._problem(f"cannot set maxvCpus of {ce} ({describe(exc)})")
                return None
        self.capacity.cap_slots = want if exact else None
        self._refresh_capacity_view()
        return self.capacity.cap_slots

    def _problem(self, text: str) -> None:
        log.warning("batch.capacity_problem", extra={"problem": text})
        self.capacity.problems = [text]

    def _read_max_vcpus(self, ce: str) -> int | None:
        answer = self._read(partial(self.batch.describe_compute_environments, computeEnvironments=[ce]))
        for env in answer.get("computeEnvironments", []):
            resources = env.get("computeResources") or {}
            if "maxvCpus" in resources:
                return int(resources["maxvCpus"])
        return None

    def _learn_capacity(self) -> None:
        """vCPUs per job (from the job definition) and the compute environment (from the queue),
        read once in a while; the capacity problems are recomputed with them."""
        now = self._clock()
        if now - self._known_at < self._capacity_refresh:
            return
        problems: list[str] = []
        definition = self._job_definition()
        if definition is None:
            problems.append(f"job definition {self.job_definition} is not active")
        else:
            problems.extend(_retry_problems(self.job_definition, definition))
        vcpus = self._vcpus_setting or (_vcpus_of(definition) if definition else None)
        if vcpus is None and definition is not None:
            problems.append(f"job definition {self.job_definition} names no VCPU resource requirement")
        ce = self._ce_setting
        if ce is None:
            answer = self._read(partial(self.batch.describe_job_queues, jobQueues=[self.job_queue]))
            order = [
                o["computeEnvironment"]
                for q in answer.get("jobQueues", [])
                for o in q.get("computeEnvironmentOrder", [])
            ]
            if len(order) == 1:
                ce = order[0]
            else:
                problems.append(
                    f"job queue {self.job_queue} has {len(order)} compute environments; set "
                    "CUTOVER_BATCH_COMPUTE_ENVIRONMENT to the one whose maxvCpus caps the new path"
                )
        self.capacity.vcpus_per_job = vcpus
        self.capacity.compute_environment = ce
        self._definition_problems = problems
        self.capacity.problems = []
        self._known_at = now

    def _job_definition(self) -> dict[str, Any] | None:
        name = self.job_definition
        if ":" in name:
            answer = self._read(partial(self.batch.describe_job_definitions, jobDefinitions=[name]))
        else:
            answer = self._read(
                partial(self.batch.describe_job_definitions, jobDefinitionName=name, status="ACTIVE")
            )
        defs = [dict(d) for d in answer.get("jobDefinitions", []) if d.get("status", "ACTIVE") == "ACTIVE"]
        return max(defs, key=lambda d: int(d.get("revision", 0)), default=None)

    def _refresh_capacity_view(self) -> None:
        now = self._clock()
        if now - self._quota_at >= self._capacity_refresh:
            self._quota_at = now
            quota, source = self._quota_setting, "CUTOVER_FARGATE_VCPU_QUOTA"
            if quota is None and self._quota_reader is not None:
                try:
                    quota, source = self._quota_reader(), "Service Quotas"
                except (ClientError, BotoCoreError) as exc:
                    log.info("batch.quota_unknown", extra={"problem": describe(exc)})
            if quota is None:
                quota, source = FARGATE_DEFAULT_QUOTA, "the AWS default (Service Quotas did not say)"
            self.capacity.quota_vcpus, self.capacity.quota_source = quota, source
        if self.capacity.vcpus_per_job is not None:
            self.capacity.budget_vcpus = self.budget * self.capacity.vcpus_per_job

    def warnings(self) -> list[str]:
        """What an operator should know about the new path's capacity (worked out during cycles)."""
        out = list(self._definition_problems) + list(self.capacity.problems)
        view = self.capacity
        if (
            view.quota_vcpus is not None
            and view.budget_vcpus is not None
            and view.vcpus_per_job
            and view.quota_vcpus < view.budget_vcpus
        ):
            fits = math.floor(view.quota_vcpus / view.vcpus_per_job + 1e-9)
            out.append(
                f"Fargate On-Demand vCPU quota is {view.quota_vcpus:g} ({view.quota_source}), below "
                f"the {view.budget_vcpus:g} vCPUs a budget of {self.budget} needs at "
                f"{view.vcpus_per_job:g} vCPUs per job: at most {fits} new-path jobs can run at once"
            )
        return out


def _server_side(exc: ClientError) -> bool:
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return status >= 500 and not throttled(exc)


def _pairs(env: dict[str, str]) -> list[KeyValuePairTypeDef]:
    return [{"name": k, "value": v} for k, v in env.items()]


def _tags(tags: dict[str, str]) -> dict[str, str]:
    """Tags whose values Batch accepts (small, plain characters); others are left out."""
    return {k: v for k, v in tags.items() if v and _TAG_VALUE.fullmatch(v)}


def _vcpus_of(definition: dict[str, Any]) -> float | None:
    container = definition.get("containerProperties") or {}
    for req in container.get("resourceRequirements") or []:
        if req.get("type") == "VCPU":
            return float(req["value"])
    total = 0.0
    for task in (definition.get("ecsProperties") or {}).get("taskProperties") or []:
        for c in task.get("containers") or []:
            for req in c.get("resourceRequirements") or []:
                if req.get("type") == "VCPU":
                    total += float(req["value"])
    if total:
        return total
    legacy = container.get("vcpus")
    return float(legacy) if legacy else None


def _retry_problems(name: str, definition: dict[str, Any]) -> list[str]:
    rules = (definition.get("retryStrategy") or {}).get("evaluateOnExit") or []
    for rule in rules:
        if str(rule.get("action", "")).upper() == "EXIT" and "*" in (
            rule.get("onReason"),
            rule.get("onStatusReason"),
            rule.get("onExitCode"),
        ):
            return []
    if not rules:
        return []
    return [
        f"job definition {name}'s retry strategy has no catch-all EXIT rule: a failure that "
        "matches no rule is retried"
    ]


FARGATE_VCPU_QUOTA_CODE = "L-3032A538"  # Service Quotas: "Fargate On-Demand vCPU resource count"


def fargate_quota_reader(client: QuotaClient, retrier: Retrier | None = None) -> Callable[[], float | None]:
    """A reader of the account's Fargate On-Demand vCPU quota, for ``BatchBackend(quota_reader=...)``."""
    retry = retrier or Retrier()

    def read() -> float | None:
        answer = retry.call(
            partial(client.get_service_quota, ServiceCode="fargate", QuotaCode=FARGATE_VCPU_QUOTA_CODE)
        )
        value = (answer.get("Quota") or {}).get("Value")
        return float(value) if value is not None else None

    return read
