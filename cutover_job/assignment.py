"""A job's assignment, read from its environment (and its manifest), and the writing of its results.

Three shapes, told apart by the variables present:

- one conversion (``CUTOVER_CONVERSION_ID`` set): a new-path single job. Its fields come from the
  environment; when ``CUTOVER_PARAMS`` is absent they come from manifest entry
  ``CUTOVER_MANIFEST_OFFSET``, which must be that conversion.
- an array child (``AWS_BATCH_JOB_ARRAY_INDEX`` set): manifest entry
  ``CUTOVER_MANIFEST_OFFSET + AWS_BATCH_JOB_ARRAY_INDEX``.
- a whole manifest (neither): an old-path build works every conversion in it with up to
  ``CUTOVER_THREADS`` at once.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cutover_job.contract import (
    CONTRACT_VERSION,
    PATHS,
    RESULT_SUFFIX,
    Env,
    Result,
    Shape,
    Status,
    valid_conversion_id,
    within_quarantine,
)
from cutover_job.errors import (
    ArrayIndexError,
    AssignmentError,
    ManifestError,
    NotAssignedError,
    QuarantineError,
    ResultWriteError,
)
from cutover_job.storage import Storage, is_s3, split_s3


@dataclass(frozen=True, slots=True)
class Conversion:
    """One conversion a job owns."""

    conversion_id: str
    tenant_id: int
    params: Mapping[str, str]
    flag_version: str
    fence: int | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a piece of conversion work reports to ``Assignment.work``."""

    status: Status
    reason: str = ""
    output: str | None = None

    @classmethod
    def succeeded(cls, output: str | None = None) -> Outcome:
        return cls(Status.SUCCEEDED, "", output)

    @classmethod
    def failed(cls, reason: str, output: str | None = None) -> Outcome:
        return cls(Status.FAILED, reason, output)


@dataclass(frozen=True)
class Assignment:
    """What one job was given: the conversions it owns and where each one's result goes."""

    shape: Shape
    path: str  # "new" | "legacy"
    batch: str  # the batch key ("" when not given)
    job_id: str  # CUTOVER_JOB_ID, AWS_BATCH_JOB_ID or CODEBUILD_BUILD_ID ("" when none)
    flag_version: str
    threads: int  # conversions the job may work on at once
    conversions: tuple[Conversion, ...]
    result_locations: Mapping[str, str]  # conversion id -> s3:// URI or file path of its result
    fence: int | None = None  # a single job's fence
    manifest_uri: str | None = None
    array_index: int | None = None
    deadline: float | None = None  # epoch seconds, when the runner set one
    contract: int = CONTRACT_VERSION
    shadow: bool = False  # a shadow run: same work, outputs only into the quarantine, no side effects
    quarantine: str | None = None  # where a shadow's outputs must go (s3:// prefix or absolute directory)
    storage: Storage = field(default_factory=lambda: Storage(os.environ), repr=False, compare=False)
    _by_id: dict[str, Conversion] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {c.conversion_id: c for c in self.conversions})
        missing = [c for c in self._by_id if c not in self.result_locations]
        if missing:
            raise AssignmentError(f"no result location for {', '.join(missing[:5])}")
        if self.shadow and not self.quarantine:
            raise AssignmentError(
                f"{Env.SHADOW}=1 without {Env.QUARANTINE_URI}: a shadow needs its quarantine"
            )

    def quarantined(self, *parts: str) -> str:
        """A location inside this shadow's quarantine (``parts`` are names, never ``..``)."""
        if not self.shadow or self.quarantine is None:
            raise QuarantineError("not a shadow run: it has no quarantine")
        for part in parts:
            if not part or part in (".", "..") or "/" in part or "\\" in part:
                raise QuarantineError(f"{part!r} is not a name inside the quarantine")
        separator = "" if self.quarantine.endswith("/") else "/"
        return self.quarantine + separator + "/".join(parts)

    def check_output(self, location: str | os.PathLike[str]) -> None:
        """Refuse, for a shadow, an output that is not inside its quarantine (``QuarantineError``)."""
        if not self.shadow or self.quarantine is None:
            return
        where = os.fspath(location)
        absolute = where if is_s3(where) else os.path.abspath(where)
        if not within_quarantine(absolute, self.quarantine):
            raise QuarantineError(
                f"shadow output {where} is outside the quarantine {self.quarantine}; nothing was written"
            )

    def conversion(self, conversion_id: str) -> Conversion:
        """The owned conversion with this id; NotAssignedError for any other."""
        found = self._by_id.get(conversion_id)
        if found is not None:
            return found
        owned = ", ".join(c.conversion_id for c in self.conversions[:5])
        more = f" and {len(self.conversions) - 5} more" if len(self.conversions) > 5 else ""
        raise NotAssignedError(
            f"conversion {conversion_id!r} is not assigned to this job (it owns {owned}{more}); "
            "nothing was written"
        )

    def write_result(
        self,
        conversion_id: str,
        status: Status | str,
        *,
        reason: str = "",
        output: str | os.PathLike[str] | None = None,
        started_at: float | None = None,
        finished_at: float | None = None,
    ) -> Result:
        """Write the result of one owned conversion, replacing whole any earlier one of the same
        conversion (a retried attempt overwrites its own result). A conversion this job does not
        own is refused with NotAssignedError before anything is written."""
        conversion = self.conversion(conversion_id)
        if output is not None:
            self.check_output(output)
        try:
            state = Status(status)
        except ValueError as exc:
            raise ResultWriteError(f"status {status!r} is not one of {[s.value for s in Status]}") from exc
        for name, value in (("started_at", started_at), ("finished_at", finished_at)):
            if value is not None and not math.isfinite(value):
                raise ResultWriteError(f"{name} of {conversion_id} is not a finite number of seconds")
        result = Result(
            conversion_id=conversion_id,
            status=state,
            reason=reason or ("failed" if state is Status.FAILED else ""),
            output=os.fspath(output) if output is not None else None,
            started_at=started_at,
            finished_at=finished_at,
            fence=conversion.fence,
            job_id=self.job_id,
        )
        body = json.dumps(result.document(), separators=(",", ":"), sort_keys=True).encode()
        self.storage.write(self.result_locations[conversion_id], body)
        return result

    def work(self, fn: Callable[[Conversion], Outcome], *, threads: int | None = None) -> list[Result]:
        """Run ``fn`` on every owned conversion, up to ``threads`` (default: the assignment's) at
        once, and write each result as it ends, timed; an exception is a failure with its message,
        and so is a shadow's output outside its quarantine."""

        def one(conversion: Conversion) -> Result:
            started = time.time()
            try:
                outcome = fn(conversion)
            except Exception as exc:
                outcome = Outcome.failed(f"{type(exc).__name__}: {exc}")
            try:
                if outcome.output is not None:
                    self.check_output(outcome.output)
            except QuarantineError as exc:
                # A shadow must not publish: the attempt fails, and its output is not named.
                outcome = Outcome.failed(str(exc))
            return self.write_result(
                conversion.conversion_id,
                outcome.status,
                reason=outcome.reason,
                output=outcome.output,
                started_at=started,
                finished_at=time.time(),
            )

        workers = max(1, min(threads or self.threads, len(self.conversions) or 1))
        if workers == 1:
            return [one(c) for c in self.conversions]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cutover-job") as pool:
            return list(pool.map(one, self.conversions))


def from_env(environ: Mapping[str, str] | None = None, *, s3_client: Any | None = None) -> Assignment:
    """The assignment the environment describes (``os.environ`` by default); reads the manifest
    when one is needed. Raises an AssignmentError subclass naming the variable or URI at fault."""
    env = dict(os.environ if environ is None else environ)
    storage = Storage(env, s3_client)
    single = _get(env, Env.CONVERSION_ID)
    index = _int(env, Env.ARRAY_INDEX, minimum=0)
    offset = _int(env, Env.MANIFEST_OFFSET, minimum=0) or 0
    manifest_var, manifest_uri = _manifest_source(env)

    def manifest() -> dict[str, Any]:
        if manifest_var is None:
            raise AssignmentError(
                f"no manifest: set {Env.MANIFEST_URI} (or {Env.MANIFEST_JSON}, or {Env.MANIFEST})"
            )
        if manifest_var == Env.MANIFEST_JSON:
            return _manifest_doc(env[Env.MANIFEST_JSON].encode(), Env.MANIFEST_JSON)
        assert manifest_uri is not None
        storage.prepare(manifest_uri)
        return _manifest_doc(
            storage.read(manifest_uri, named_by=manifest_var), f"{manifest_var} {manifest_uri}"
        )

    doc: dict[str, Any] = {}
    whole = single is None and index is None
    conversions: tuple[Conversion, ...]
    if single is not None:
        conversions = (_single(env, single, offset, manifest),)
    elif index is not None:
        doc = manifest()
        entries = doc["conversions"]
        position = offset + index
        if position >= len(entries):
            raise ArrayIndexError(
                f"{Env.ARRAY_INDEX}={index} with {Env.MANIFEST_OFFSET}={offset} is entry {position}, "
                f"but manifest {manifest_uri or manifest_var} has {len(entries)} conversions"
            )
        conversions = (_entry(entries[position], position, str(manifest_uri or manifest_var)),)
    else:
        doc = manifest()
        where = str(manifest_uri or manifest_var)
        conversions = tuple(_entry(e, i, where) for i, e in enumerate(doc["conversions"]))
        seen: set[str] = set()
        for c in conversions:
            if c.conversion_id in seen:
                raise ManifestError(f"manifest {where} names conversion {c.conversion_id} twice")
            seen.add(c.conversion_id)

    path = _get(env, Env.PATH) or str(doc.get("path") or ("legacy" if whole else "new"))
    if path not in PATHS:
        raise AssignmentError(f"{Env.PATH}={path!r} is not one of {list(PATHS)}")
    threads = _int(env, Env.THREADS, minimum=1)
    if threads is None:
        threads = _manifest_threads(doc) if whole else 1
    flag_version = _get(env, Env.FLAG_VERSION)
    if flag_version is None:
        flag_version = ",".join(sorted({c.flag_version for c in conversions if c.flag_version}))
    deadline = _float(env, Env.DEADLINE)
    shadow, quarantine = _shadow(env)
    locations = _result_locations(env, conversions, single is not None)
    storage.prepare(*locations.values())
    shape = (
        Shape.CONVERSION if single is not None else Shape.ARRAY_CHILD if index is not None else Shape.MANIFEST
    )
    return Assignment(
        shape=shape,
        path=path,
        batch=_get(env, Env.BATCH) or str(doc.get("batch") or doc.get("build_id") or ""),
        job_id=_get(env, Env.JOB_ID) or _get(env, Env.BATCH_JOB_ID) or _get(env, Env.BUILD_ID) or "",
        flag_version=flag_version,
        threads=threads,
        conversions=conversions,
        result_locations=locations,
        fence=conversions[0].fence if single is not None else None,
        manifest_uri=manifest_uri,
        array_index=index,
        deadline=deadline,
        shadow=shadow,
        quarantine=quarantine,
        storage=storage,
    )


# -- reading the environment -------------------------------------------------------------------


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value else None


def _int(env: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    raw = _get(env, name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError as exc:
        raise AssignmentError(f"{name}={raw!r} is not a whole number") from exc
    if value < minimum:
        raise AssignmentError(f"{name}={raw!r} is below {minimum}")
    return value


def _float(env: Mapping[str, str], name: str) -> float | None:
    raw = _get(env, name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise AssignmentError(f"{name}={raw!r} is not a number") from exc
    if math.isnan(value):
        raise AssignmentError(f"{name}={raw!r} is not a number")
    return value


def _shadow(env: Mapping[str, str]) -> tuple[bool, str | None]:
    """Whether the job is a shadow, and its quarantine (absolute, or an s3:// prefix)."""
    raw = _get(env, Env.SHADOW)
    if raw not in (None, "0", "1"):
        raise AssignmentError(f"{Env.SHADOW}={raw!r} is not 1 or 0")
    quarantine = _get(env, Env.QUARANTINE_URI)
    if quarantine is None:
        return raw == "1", None
    if is_s3(quarantine):
        _check_location(quarantine + "x", Env.QUARANTINE_URI)
        if not quarantine.endswith("/"):
            quarantine += "/"
    else:
        quarantine = os.path.abspath(quarantine)
    return raw == "1", quarantine


def _manifest_source(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """Which variable gives the manifest, and its URI (None when inline only)."""
    uri = _get(env, Env.MANIFEST_URI) or _get(env, Env.MANIFEST)
    if _get(env, Env.MANIFEST_JSON):
        return Env.MANIFEST_JSON, uri
    if _get(env, Env.MANIFEST_URI):
        return Env.MANIFEST_URI, uri
    if _get(env, Env.MANIFEST):
        return Env.MANIFEST, uri
    return None, None


def _params(raw: object, where: str) -> dict[str, str]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise AssignmentError(f"{where} is not JSON: {exc}") from exc
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise AssignmentError(f"{where} is not a JSON object of strings")
    return dict(raw)


def _single(
    env: Mapping[str, str], conversion_id: str, offset: int, manifest: Callable[[], dict[str, Any]]
) -> Conversion:
    if not valid_conversion_id(conversion_id):
        raise AssignmentError(f"{Env.CONVERSION_ID}={conversion_id!r} is not a safe conversion id")
    raw_params = env.get(Env.PARAMS)
    fence = _int(env, Env.FENCE, minimum=0)
    if raw_params is None:
        doc = manifest()
        entries = doc["conversions"]
        if offset >= len(entries):
            raise ManifestError(
                f"{Env.MANIFEST_OFFSET}={offset} but the manifest has {len(entries)} conversions"
            )
        entry = _entry(entries[offset], offset, "manifest")
        if entry.conversion_id != conversion_id:
            raise ManifestError(
                f"manifest entry {offset} is {entry.conversion_id}, not {Env.CONVERSION_ID}={conversion_id}"
            )
        params: Mapping[str, str] = entry.params
        fence = entry.fence if fence is None else fence
    else:
        params = _params(raw_params, Env.PARAMS)
    tenant = _int(env, Env.TENANT_ID, minimum=0)
    if tenant is None:
        raise AssignmentError(f"{Env.TENANT_ID} is not set (a single conversion needs its tenant)")
    return Conversion(conversion_id, tenant, params, env.get(Env.FLAG_VERSION, ""), fence)


# -- reading the manifest ----------------------------------------------------------------------


def _manifest_doc(body: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{where} is not a JSON manifest: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("conversions"), list):
        raise ManifestError(f"{where} is not a manifest (a JSON object with a list of conversions)")
    contract = doc.get("contract", CONTRACT_VERSION)
    if isinstance(contract, bool) or not isinstance(contract, int) or contract < 1:
        raise ManifestError(f"{where} has contract {contract!r}, not a version number")
    if contract > CONTRACT_VERSION:
        raise ManifestError(
            f"{where} is of job contract {contract}; this helper knows version {CONTRACT_VERSION}"
        )
    return doc


def _manifest_threads(doc: Mapping[str, Any]) -> int:
    threads = doc.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ManifestError(f"manifest threads {threads!r} is not a whole number of at least 1")
    return threads


def _entry(raw: object, position: int, where: str) -> Conversion:
    at = f"entry {position} of manifest {where}"
    if not isinstance(raw, dict):
        raise ManifestError(f"{at} is not a JSON object")
    cid = raw.get("conversion_id")
    if not valid_conversion_id(cid):
        raise ManifestError(f"{at}: conversion id {cid!r} is not a safe conversion id")
    assert isinstance(cid, str)
    tenant = raw.get("tenant_id")
    if isinstance(tenant, bool) or not isinstance(tenant, int) or tenant < 0:
        raise ManifestError(f"{at}: tenant_id {tenant!r} is not a tenant id")
    flag_version = raw.get("flag_version", "")
    if not isinstance(flag_version, str):
        raise ManifestError(f"{at}: flag_version {flag_version!r} is not a string")
    fence = raw.get("fence")
    if fence is not None and (isinstance(fence, bool) or not isinstance(fence, int)):
        raise ManifestError(f"{at}: fence {fence!r} is not a whole number")
    try:
        params = _params(raw.get("params") or {}, f"{at}: params")
    except AssignmentError as exc:
        raise ManifestError(str(exc)) from exc
    return Conversion(cid, tenant, params, flag_version, fence)


# -- where results go --------------------------------------------------------------------------


def _result_locations(
    env: Mapping[str, str], conversions: Sequence[Conversion], single: bool
) -> dict[str, str]:
    if single:
        exact = _get(env, Env.RESULT_URI) or _get(env, Env.RESULT_FILE)
        if exact is not None:
            name = Env.RESULT_URI if _get(env, Env.RESULT_URI) else Env.RESULT_FILE
            _check_location(exact, name)
            return {conversions[0].conversion_id: exact}
    prefix = _get(env, Env.RESULTS_URI)
    if prefix is not None:
        _check_location(prefix + "x", Env.RESULTS_URI)
        return {c.conversion_id: f"{prefix}{c.conversion_id}{RESULT_SUFFIX}" for c in conversions}
    directory = _get(env, Env.RESULTS_DIR)
    if directory is not None:
        return {
            c.conversion_id: os.path.join(directory, f"{c.conversion_id}{RESULT_SUFFIX}") for c in conversions
        }
    names = [Env.RESULT_URI, Env.RESULT_FILE] if single else []
    raise AssignmentError(
        f"no place for results: set {' or '.join([*names, Env.RESULTS_URI, Env.RESULTS_DIR])}"
    )


def _check_location(location: str, name: str) -> None:
    if is_s3(location):
        try:
            split_s3(location)
        except ValueError as exc:
            raise AssignmentError(f"{name}: {exc}") from exc
