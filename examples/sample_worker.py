#!/usr/bin/env python3
"""Sample conversion worker: a tenant's form records → a real .xlsx file, on either path.

New path (one process per conversion, as an AWS Batch job): the conversion comes in
``CUTOVER_CONVERSION_ID``, ``CUTOVER_TENANT_ID``, ``CUTOVER_PARAMS`` (JSON object of strings),
``CUTOVER_FLAG_VERSION``; the result goes to ``CUTOVER_RESULT_FILE``.
Old path (one process per build, as the CodeBuild batch): ``CUTOVER_MANIFEST`` names
a JSON manifest of conversions, worked through by ``CUTOVER_THREADS`` threads; one result per
conversion goes to ``CUTOVER_RESULTS_DIR/<conversion_id>.json``.

Every output records the path that produced it in the workbook's properties and in one line of
``CUTOVER_OUTPUT_DIR/produced.jsonl``, so exclusivity can be checked from the outputs alone.
The parameters ``simulate`` (``fail``, ``fail_first``, ``crash``, ``hang``) and ``work_seconds``
exist for tests.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_workbook(target: Path, conversion: dict[str, Any], path: str, job_id: str) -> None:
    """Write the .xlsx for one conversion, stamped with the path and job that produced it."""
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    wb.properties.creator = "cutover sample worker"
    wb.properties.title = f"Conversion {conversion['conversion_id']}"
    wb.properties.subject = f"tenant {conversion['tenant_id']}"
    wb.properties.keywords = f"path={path}"
    wb.properties.description = json.dumps(
        {"path": path, "job_id": job_id, "flag_version": conversion.get("flag_version", "")}
    )
    for title, rows in records(int(conversion["tenant_id"]), conversion["conversion_id"]).items():
        ws = wb.create_sheet(title)
        ws.append(HEADER)
        for row in rows:
            ws.append(row)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    wb.save(tmp)
    os.replace(tmp, target)


def convert(
    conversion: dict[str, Any], path: str, job_id: str, out_dir: Path, deadline: float
) -> dict[str, Any]:
    """Do one conversion; returns its result document. Raises SystemExit only for ``crash``."""
    started = time.time()
    cid = conversion["conversion_id"]
    params = conversion.get("params") or {}
    simulate = params.get("simulate", "")
    if simulate == "crash":
        os._exit(3)
    if simulate == "hang":
        time.sleep(3600)
    time.sleep(float(params.get("work_seconds", "0") or 0))
    if simulate == "fail":
        return {"conversion_id": cid, "status": "failed", "reason": "simulated failure"}
    if simulate == "fail_first":
        marker = out_dir / ".attempted" / cid
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            return {"conversion_id": cid, "status": "failed", "reason": "simulated first-attempt failure"}
    target = out_dir / str(conversion["tenant_id"]) / f"{cid}.xlsx"
    write_workbook(target, conversion, path, job_id)
    if time.time() > deadline:
        return {"conversion_id": cid, "status": "failed", "reason": "past the deadline"}
    finished = time.time()
    line = {
        "conversion_id": cid,
        "tenant_id": conversion["tenant_id"],
        "path": path,
        "job_id": job_id,
        "flag_version": conversion.get("flag_version", ""),
        "started_at": started,
        "finished_at": finished,
        "output": str(target),
    }
    fd = os.open(out_dir / "produced.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())
    finally:
        os.close(fd)
    return {
        "conversion_id": cid,
        "status": "succeeded",
        "output": str(target),
        "started_at": started,
        "finished_at": finished,
    }


def _result_bytes(result: dict[str, Any]) -> bytes:
    return json.dumps(result, separators=(",", ":")).encode()


def main() -> int:
    env = os.environ
    path = env.get("CUTOVER_PATH", "new")
    job_id = env.get("CUTOVER_JOB_ID", "")
    out_dir = Path(env.get("CUTOVER_OUTPUT_DIR", "./cutover-output"))
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = float(env.get("CUTOVER_DEADLINE", "inf"))
    manifest = env.get("CUTOVER_MANIFEST")
    if manifest:
        doc = json.loads(Path(manifest).read_text())
        results = Path(env["CUTOVER_RESULTS_DIR"])
        threads = max(1, int(env.get("CUTOVER_THREADS", doc.get("threads", 1))))

        def one(conversion: dict[str, Any]) -> None:
            try:
                result = convert(conversion, path, job_id, out_dir, deadline)
            except Exception as exc:
                result = {
                    "conversion_id": conversion["conversion_id"],
                    "status": "failed",
                    "reason": str(exc),
                }
            _write_atomically(results / f"{conversion['conversion_id']}.json", _result_bytes(result))

        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one, doc["conversions"]))
        return 0
    conversion = {
        "conversion_id": env["CUTOVER_CONVERSION_ID"],
        "tenant_id": int(env["CUTOVER_TENANT_ID"]),
        "params": json.loads(env.get("CUTOVER_PARAMS", "{}")),
        "flag_version": env.get("CUTOVER_FLAG_VERSION", ""),
    }
    result = convert(conversion, path, job_id, out_dir, deadline)
    _write_atomically(Path(env["CUTOVER_RESULT_FILE"]), _result_bytes(result))
    return 0 if result["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
