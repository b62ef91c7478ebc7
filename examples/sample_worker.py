#!/usr/bin/env python3
"""Sample conversion worker: a tenant's form records → a real .xlsx file, on either path.

It takes its assignment and writes its results through ``cutover_job`` (the job contract), so the
same program runs as a new-path job (one conversion, or one child of an array job) and as an
old-path build (a whole manifest, ``CUTOVER_THREADS`` conversions at once), with manifests and
results in local files (the local runners) or in S3 (AWS Batch, CodeBuild). A single conversion
exits 1 when it failed; a build exits 0 once every conversion has its result.

Every output records the path that produced it in the workbook's properties and in one line of
``CUTOVER_OUTPUT_DIR/produced.jsonl``, so exclusivity can be checked from the outputs alone. With
``CUTOVER_OUTPUT_URI`` (``s3://bucket/prefix/``, as a container on AWS needs, since its disk goes
with it) the workbook is also put at ``<prefix><tenant_id>/<conversion_id>.xlsx`` and that is the
output its result names.
A shadow run (``CUTOVER_SHADOW=1``) does the same work but writes its workbook only into its
quarantine (``CUTOVER_QUARANTINE_URI``, a directory or an S3 prefix) and adds nothing to
``produced.jsonl``: what it makes is compared, never published.
The parameters ``simulate`` (``fail``, ``fail_first``, ``fail_on_new``, ``crash``, ``hang``) and
``work_seconds`` exist for tests and the demo; ``fail_on_new`` fails only on the new path, as a job
whose new environment lacks something would.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import cutover_job
except ImportError:  # run from a checkout without installing it: the helper sits next to examples/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import cutover_job
# Imported before any conversion starts, so that a conversion's own run time (its result's start
# and finish, which the rollout gates compare across paths) is the work and not the start-up.
from openpyxl import Workbook

from cutover_job import Conversion, Outcome
from cutover_job.storage import Storage, is_s3

HEADER = ("Record ID", "Submitted at", "Customer", "Amount", "Approved")
NAMES = ("Aiko", "Bruno", "Chen", "Dalia", "Emeka", "Fatima", "Goran", "Hana", "Ines", "Jonas")


def records(tenant_id: int, conversion_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """The tenant's form records for this conversion; the same inputs always give the same rows."""
    rng = random.Random(f"{tenant_id}/{conversion_id}")  # noqa: S311 - test data, not secrets
    start = dt.datetime(2026, 1, 1) + dt.timedelta(days=tenant_id % 300)
    forms: dict[str, list[tuple[Any, ...]]] = {}
    for form in range(1 + tenant_id % 3):
        rows = []
        for n in range(rng.randint(20, 60)):
            rows.append(
                (
                    n + 1,
                    start + dt.timedelta(minutes=rng.randint(0, 60 * 24 * 30)),
                    f"{rng.choice(NAMES)} {rng.randint(100, 999)}",
                    round(rng.uniform(1, 5000), 2),
                    rng.random() < 0.7,
                )
            )
        forms[f"Form {form + 1}"] = rows
    return forms


def write_workbook(target: Path, conversion: Conversion, path: str, job_id: str) -> None:
    """Write the .xlsx for one conversion, stamped with the path and job that produced it."""
    wb = Workbook(write_only=True)
    wb.properties.creator = "cutover sample worker"
    wb.properties.title = f"Conversion {conversion.conversion_id}"
    wb.properties.subject = f"tenant {conversion.tenant_id}"
    wb.properties.keywords = f"path={path}"
    wb.properties.description = json.dumps(
        {"path": path, "job_id": job_id, "flag_version": conversion.flag_version}
    )
    for title, rows in records(conversion.tenant_id, conversion.conversion_id).items():
        ws = wb.create_sheet(title)
        ws.append(HEADER)
        for row in rows:
            ws.append(row)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    wb.save(tmp)
    os.replace(tmp, target)


@dataclass(frozen=True)
class Outputs:
    """Where workbooks go: a local directory, and an S3 prefix to put them under when one is set."""

    directory: Path
    uri: str | None = None
    storage: Storage | None = None
    record: bool = True  # add a line to produced.jsonl (a shadow's output is not a product)
    scratch: Path | None = None  # where attempt markers go, when not beside the outputs

    def publish(self, local: Path, conversion: Conversion) -> str:
        """The workbook's output location: its S3 URI once it is put there, else its local path."""
        if self.uri is None or self.storage is None:
            return str(local)
        target = f"{self.uri}{conversion.tenant_id}/{conversion.conversion_id}.xlsx"
        self.storage.write(target, local.read_bytes())
        return target


def convert(conversion: Conversion, path: str, job_id: str, outputs: Outputs, deadline: float) -> Outcome:
    """Do one conversion. Exits the whole process only for ``crash``."""
    out_dir = outputs.directory
    started = time.time()
    cid = conversion.conversion_id
    params = conversion.params
    simulate = params.get("simulate", "")
    if simulate == "crash":
        os._exit(3)
    if simulate == "hang":
        time.sleep(3600)
    time.sleep(float(params.get("work_seconds", "0") or 0))
    if simulate == "fail":
        return Outcome.failed("simulated failure")
    if simulate == "fail_on_new" and path == "new":
        return Outcome.failed("simulated failure on the new path")
    if simulate == "fail_first":
        marker = (outputs.scratch or out_dir) / ".attempted" / cid
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            return Outcome.failed("simulated first-attempt failure")
    target = out_dir / str(conversion.tenant_id) / f"{cid}.xlsx"
    write_workbook(target, conversion, path, job_id)
    if time.time() > deadline:
        return Outcome.failed("past the deadline")
    try:
        output = outputs.publish(target, conversion)
    except cutover_job.ResultWriteError as exc:
        return Outcome.failed(f"could not put the workbook in place: {exc}")
    if not outputs.record:
        return Outcome.succeeded(output)
    line = {
        "conversion_id": cid,
        "tenant_id": conversion.tenant_id,
        "path": path,
        "job_id": job_id,
        "flag_version": conversion.flag_version,
        "started_at": started,
        "finished_at": time.time(),
        "output": output,
    }
    fd = os.open(out_dir / "produced.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())
    finally:
        os.close(fd)
    return Outcome.succeeded(output)


def shadow_outputs(assignment: cutover_job.Assignment, scratch: Path) -> Outputs:
    """A shadow's outputs: its quarantine directory, or a scratch directory put into its S3
    quarantine; ``scratch`` (``CUTOVER_OUTPUT_DIR``) keeps only what tests simulate."""
    quarantine = assignment.quarantined()
    if not is_s3(quarantine):
        # Made when a workbook is written into it: a failed attempt leaves nothing to clean up.
        return Outputs(Path(quarantine), record=False, scratch=scratch)
    storage = Storage(os.environ)
    storage.prepare(quarantine)
    local = Path(tempfile.mkdtemp(prefix="cutover-shadow-"))
    return Outputs(local, quarantine, storage, record=False, scratch=scratch)


def main() -> int:
    try:
        assignment = cutover_job.from_env()
    except cutover_job.AssignmentError as exc:
        print(f"sample worker: {exc}", file=sys.stderr)
        return 2
    out_dir = Path(os.environ.get("CUTOVER_OUTPUT_DIR", "./cutover-output"))
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = shadow_outputs(assignment, out_dir) if assignment.shadow else Outputs(out_dir)
    uri = os.environ.get("CUTOVER_OUTPUT_URI")
    if uri and not assignment.shadow:
        if not (is_s3(uri) and uri.endswith("/") and uri.count("/") >= 4):
            print(f"sample worker: CUTOVER_OUTPUT_URI: {uri!r} is not s3://bucket/prefix/", file=sys.stderr)
            return 2
        storage = Storage(os.environ)
        storage.prepare(uri)  # one client, made before the threads share it
        outputs = Outputs(out_dir, uri, storage)
    deadline = assignment.deadline if assignment.deadline is not None else math.inf
    results = assignment.work(lambda c: convert(c, assignment.path, assignment.job_id, outputs, deadline))
    if assignment.shape is cutover_job.Shape.MANIFEST:
        return 0  # a build reports each conversion in its result; its own status says it ran
    return 0 if all(r.status is cutover_job.Status.SUCCEEDED for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
