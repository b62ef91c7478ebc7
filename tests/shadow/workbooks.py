"""Workbooks for the comparator's tests: the same data saved in ways that must not matter, and
with each kind of difference that must."""

from __future__ import annotations

import datetime as dt
import json
import random
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

Rows = list[tuple[Any, ...]]

HEADER = ("Record ID", "Submitted at", "Customer", "Amount", "Approved")


def sample_rows(n: int = 30, seed: int = 1) -> Rows:
    rng = random.Random(seed)
    start = dt.datetime(2026, 1, 1)
    return [
        (
            i + 1,
            start + dt.timedelta(minutes=rng.randint(0, 40_000)),
            f"Name {rng.randint(100, 999)}",
            round(rng.uniform(1, 5000), 2),
            rng.random() < 0.7,
        )
        for i in range(n)
    ]


def sheets(forms: int = 2, rows: int = 30) -> dict[str, Rows]:
    return {f"Form {f + 1}": [HEADER, *sample_rows(rows, seed=f)] for f in range(forms)}


def write(
    target: Path,
    content: dict[str, Rows],
    *,
    path_stamp: str = "legacy",
    created: dt.datetime | None = None,
    write_only: bool = True,
    bold_header: bool = False,
) -> Path:
    """Save ``content`` the way the sample worker does (or with styles), stamped with a path."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook(write_only=write_only)
    wb.properties.creator = "cutover sample worker"
    wb.properties.title = "Conversion c-1"
    wb.properties.keywords = f"path={path_stamp}"
    wb.properties.description = json.dumps(
        {"path": path_stamp, "job_id": f"job-{path_stamp}", "flag_version": "3"}
    )
    if created is not None:
        wb.properties.created = created
        wb.properties.modified = created
    if not write_only:
        wb.remove(wb.active)
    for title, rows in content.items():
        ws = wb.create_sheet(title)
        for i, row in enumerate(rows):
            ws.append(row)
            if bold_header and i == 0 and not write_only:
                for cell in ws[1]:
                    cell.font = Font(bold=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    wb.save(target)
    return target


def repack(source: Path, target: Path, *, reverse: bool = True, year: int = 2031) -> Path:
    """The same members in another order with other times: what another zip writer may produce."""
    with zipfile.ZipFile(source) as zin:
        members = [(info, zin.read(info.filename)) for info in zin.infolist()]
    if reverse:
        first = [m for m in members if m[0].filename == "[Content_Types].xml"]
        members = first + [m for m in reversed(members) if m[0].filename != "[Content_Types].xml"]
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for info, data in members:
            clone = zipfile.ZipInfo(info.filename, date_time=(year, 6, 7, 8, 9, 10))
            clone.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(clone, data)
    return target


def changed(content: dict[str, Rows], change: Callable[[dict[str, Rows]], None]) -> dict[str, Rows]:
    copy = {name: [tuple(r) for r in rows] for name, rows in content.items()}
    change(copy)
    return copy


def set_cell(content: dict[str, Rows], sheet: str, row: int, col: int, value: Any) -> None:
    """Set 1-based (row, col) of ``sheet``."""
    rows = content[sheet]
    cells = list(rows[row - 1])
    cells[col - 1] = value
    rows[row - 1] = tuple(cells)
