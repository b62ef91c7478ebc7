"""The sample worker with a planted difference and, on request, noise: what a rewrite that went
wrong for one tenant looks like, and a report column that differs on every run.

``--planted-tenant N``: on the new path, that tenant's first form gets another amount in row 5
(cell D5). ``--noise``: every form gets a "Generated at" column stamped with the time of the run,
on both paths. (Arguments, not variables: a local job's environment is the job contract's only.)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import sample_worker


def _options(argv: list[str]) -> tuple[int, bool]:
    planted = int(argv[argv.index("--planted-tenant") + 1]) if "--planted-tenant" in argv else 0
    return planted, "--noise" in argv


PLANTED, NOISE = _options(sys.argv)
_records = sample_worker.records


def records(tenant_id: int, conversion_id: str) -> dict[str, list[tuple[Any, ...]]]:
    forms = _records(tenant_id, conversion_id)
    if tenant_id == PLANTED and os.environ.get("CUTOVER_PATH") == "new":
        rows = forms["Form 1"]
        row = list(rows[3])  # the fourth record: row 5 under the header
        row[3] = round(row[3] + 1.25, 2)
        rows[3] = tuple(row)
    if NOISE:
        stamp = f"{time.time():.6f}"
        for title, rows in forms.items():
            forms[title] = [(*row, stamp) for row in rows]
    return forms


def header() -> tuple[str, ...]:
    return (*sample_worker.HEADER, "Generated at") if NOISE else sample_worker.HEADER


sample_worker.records = records
sample_worker.HEADER = header()

if __name__ == "__main__":
    sys.exit(sample_worker.main())
