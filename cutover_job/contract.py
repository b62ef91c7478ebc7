"""The job contract, version 1: the names a job is given, the shape of what it writes back, and the
rules both sides check. Pure values only (no I/O), so readers and writers share one definition.

A change that only adds (a new optional field, a new variable) keeps the version; any other change
gets a new version, and a helper refuses a manifest of a version newer than it knows.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

CONTRACT_VERSION = 1

PATHS = ("new", "legacy")  # the values of CUTOVER_PATH and of a manifest's "path"

# Safe in file names, S3 keys, Batch job names and URLs: no separators, no dot first, no control
# characters. The controller imports this rule for its intake; a job checks it again rather than
# trust its input.
CONVERSION_ID_CHARS = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
CONVERSION_ID_PATTERN = re.compile(rf"\A{CONVERSION_ID_CHARS}\Z")

RESULT_SUFFIX = ".json"


class Env:
    """Names of the environment variables a job reads (all values are strings)."""

    PATH = "CUTOVER_PATH"  # "new" | "legacy"
    BATCH = "CUTOVER_BATCH"  # batch key, [A-Za-z0-9]{1,64}
    JOB_ID = "CUTOVER_JOB_ID"  # the local runners' job or build id
    FLAG_VERSION = "CUTOVER_FLAG_VERSION"  # flag version(s) the conversions were routed under
    THREADS = "CUTOVER_THREADS"  # int >= 1: conversions the job may work on at once
    DEADLINE = "CUTOVER_DEADLINE"  # float, epoch seconds (local runners only)
    # one conversion
    CONVERSION_ID = "CUTOVER_CONVERSION_ID"
    TENANT_ID = "CUTOVER_TENANT_ID"  # int
    PARAMS = "CUTOVER_PARAMS"  # JSON object of strings
    FENCE = "CUTOVER_FENCE"  # int
    RESULT_URI = "CUTOVER_RESULT_URI"  # s3:// URI or file path of this conversion's result
    RESULT_FILE = "CUTOVER_RESULT_FILE"  # file path of this conversion's result (local runner)
    # a manifest of conversions
    MANIFEST_URI = "CUTOVER_MANIFEST_URI"  # s3:// URI or file path of the manifest
    MANIFEST = "CUTOVER_MANIFEST"  # file path of the manifest (local runner)
    MANIFEST_JSON = "CUTOVER_MANIFEST_JSON"  # the manifest inline, when small (CodeBuild)
    MANIFEST_OFFSET = "CUTOVER_MANIFEST_OFFSET"  # int >= 0: first manifest entry of this job
    RESULTS_URI = "CUTOVER_RESULTS_URI"  # s3:// or path prefix; results at <prefix><id>.json
    RESULTS_DIR = "CUTOVER_RESULTS_DIR"  # directory of results <dir>/<id>.json (local runner)
    ARRAY_INDEX = "AWS_BATCH_JOB_ARRAY_INDEX"  # int >= 0, set by Batch in an array job's child
    # a shadow run: the same work, compared and never published (both added within version 1)
    SHADOW = "CUTOVER_SHADOW"  # "1": a shadow; its outputs must stay under CUTOVER_QUARANTINE_URI
    QUARANTINE_URI = "CUTOVER_QUARANTINE_URI"  # s3:// prefix or directory of a shadow's outputs
    # set by the platforms, read for the job id when CUTOVER_JOB_ID is absent
    BATCH_JOB_ID = "AWS_BATCH_JOB_ID"
    BUILD_ID = "CODEBUILD_BUILD_ID"


class Shape(StrEnum):
    """Which of the three assignments a job has."""

    CONVERSION = "conversion"  # one conversion in the environment (a new-path single job)
    ARRAY_CHILD = "array-child"  # one manifest entry chosen by AWS_BATCH_JOB_ARRAY_INDEX
    MANIFEST = "manifest"  # every conversion of the manifest (an old-path build)


class Status(StrEnum):
    """How a conversion ended, as its result says."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


def within_quarantine(location: str, quarantine: str) -> bool:
    """True when ``location`` lies under the ``quarantine`` prefix or directory (no ``..`` way out).

    S3 locations compare as key prefixes; files as normalised absolute paths (the helper makes
    them absolute against the working directory, without following links).
    """
    s3 = location.startswith("s3://"), quarantine.startswith("s3://")
    if s3[0] or s3[1]:
        if not all(s3):
            return False
        prefix = quarantine if quarantine.endswith("/") else quarantine + "/"
        rest = location[len(prefix) :]
        return location.startswith(prefix) and bool(rest) and ".." not in rest.split("/")
    base = posixpath.normpath(posixpath.join("/", quarantine)) if quarantine.startswith("/") else None
    target = posixpath.normpath(location) if location.startswith("/") else None
    if base is None or target is None:
        return False
    return target != base and target.startswith(base.rstrip("/") + "/")


def valid_conversion_id(value: object) -> bool:
    """True for an id that is safe as one name in a path or key (cannot leave a results prefix)."""
    return isinstance(value, str) and CONVERSION_ID_PATTERN.match(value) is not None


class ManifestEntry(Protocol):
    """What a manifest says of one conversion; the controller's ``DispatchItem`` and this helper's
    ``Conversion`` both have these fields."""

    @property
    def conversion_id(self) -> str: ...

    @property
    def tenant_id(self) -> int: ...

    @property
    def params(self) -> Mapping[str, str]: ...

    @property
    def flag_version(self) -> str: ...

    @property
    def fence(self) -> int | None: ...


def manifest_entry(conversion: ManifestEntry) -> dict[str, Any]:
    """One conversion as a manifest lists it: ``{"conversion_id", "tenant_id", "params",
    "flag_version", "fence"}``, in that order (a writer that does not sort keys keeps its bytes)."""
    return {
        "conversion_id": conversion.conversion_id,
        "tenant_id": conversion.tenant_id,
        "params": dict(conversion.params),
        "flag_version": conversion.flag_version,
        "fence": conversion.fence,
    }


def manifest_document(
    batch: str, path: str, conversions: Iterable[ManifestEntry], *, threads: int | None = None
) -> dict[str, Any]:
    """The manifest of one dispatch, as every writer writes it: ``{"contract": 1, "batch", "path",
    "threads", "conversions": [entry, ...]}``. ``threads`` is the old path's (a build's worker
    threads) and is left out when None. Raises ValueError for a path or thread count a job refuses."""
    if path not in PATHS:
        raise ValueError(f"manifest path {path!r} is not one of {list(PATHS)}")
    doc: dict[str, Any] = {"contract": CONTRACT_VERSION, "batch": batch, "path": path}
    if threads is not None:
        if isinstance(threads, bool) or threads < 1:
            raise ValueError(f"manifest threads {threads!r} is not a whole number of at least 1")
        doc["threads"] = threads
    doc["conversions"] = [manifest_entry(c) for c in conversions]
    return doc


@dataclass(frozen=True, slots=True)
class Result:
    """What a job writes back for one conversion (one JSON object next to the manifest).

    ``{"contract": 1, "conversion_id": str, "status": "succeeded"|"failed", "reason": str,
    "output": str|null, "started_at": float|null, "finished_at": float|null, "fence": int|null,
    "job_id": str}`` — epoch seconds; ``reason`` is empty on success.
    """

    conversion_id: str
    status: Status
    reason: str = ""
    output: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    fence: int | None = None
    job_id: str = ""
    contract: int = CONTRACT_VERSION

    def document(self) -> dict[str, Any]:
        """The result as the JSON object a job writes."""
        return {
            "contract": self.contract,
            "conversion_id": self.conversion_id,
            "status": self.status.value,
            "reason": self.reason,
            "output": self.output,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "fence": self.fence,
            "job_id": self.job_id,
        }


def parse_result(doc: Mapping[str, Any] | None, conversion_id: str) -> Result | None:
    """The result in ``doc`` when it is a result of ``conversion_id``; None when it says nothing
    usable (missing, another conversion's, no known status). Fields a reader does not know are
    ignored, and a document without ``contract`` is read as version 1."""
    if doc is None or doc.get("conversion_id") != conversion_id:
        return None
    try:
        status = Status(str(doc.get("status")))
    except ValueError:
        return None
    reason = doc.get("reason")
    if reason is None:
        reason = "" if status is Status.SUCCEEDED else "failed"
    output = doc.get("output")
    fence = doc.get("fence")
    contract = doc.get("contract", CONTRACT_VERSION)
    return Result(
        conversion_id=conversion_id,
        status=status,
        reason=str(reason),
        output=str(output) if output is not None else None,
        started_at=_seconds(doc.get("started_at")),
        finished_at=_seconds(doc.get("finished_at")),
        fence=fence if isinstance(fence, int) and not isinstance(fence, bool) else None,
        job_id=str(doc.get("job_id") or ""),
        contract=contract if isinstance(contract, int) and not isinstance(contract, bool) else 0,
    )


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
