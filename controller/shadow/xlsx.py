"""The default comparator: two ``.xlsx`` workbooks compared by canonical content, streamed.

Sheets by name, then every cell's typed value: numbers within a relative tolerance, datetimes
normalised (UTC, milliseconds), booleans and text exactly; an empty cell and an empty string are
the same. What two saves of the same data may differ in is left out by construction: the zip's
member times and order, ``docProps`` timestamps, styles (unless asked) and the path stamp the
sample worker writes into the properties. Values are streamed one row of each workbook at a time
(``controller.shadow.sheets``), so memory stays bounded whatever their size; styles, when asked,
are read in openpyxl's read-only mode. This module never decides parity.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import zipfile
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path
from typing import Any

from controller.core.parity import CompareOptions, Comparison, Difference, shown
from controller.core.shadow import cell_name, column_letters
from controller.shadow.sheets import Workbook

# Properties that change with every save, and the stamp of the run that wrote the file.
_PROPERTIES = ("title", "subject", "creator", "description", "keywords", "category", "language")
_STAMP_KEYS = ("path", "job_id", "flag_version")
# Where the zip claims more than this many times the file's size, it is treated as a bomb.
MAX_EXPANSION = 100


class TooLargeError(Exception):
    """An output is over the size limit (or would expand beyond it): it is not compared."""


def compare_workbooks(
    legacy: Path, new: Path, options: CompareOptions, *, max_bytes: int | None = None
) -> Comparison:
    """Compare two workbooks; ``TooLargeError`` when either is over ``max_bytes``."""
    for path in (legacy, new):
        _check_size(path, max_bytes)
    found = Comparison()
    with Workbook(legacy) as old_wb, Workbook(new) as new_wb:
        _compare_properties(old_wb.properties(), new_wb.properties(), found)
        old_names, new_names = old_wb.sheetnames, new_wb.sheetnames
        for name in old_names:
            if name not in new_names:
                found.add(Difference(name, "", "(sheet)", "(sheet present)", "(no such sheet)"))
        for name in new_names:
            if name not in old_names:
                found.add(Difference(name, "", "(sheet)", "(no such sheet)", "(sheet present)"))
        for name in old_names:
            if name in new_names:
                _compare_sheet(name, old_wb.rows(name), new_wb.rows(name), options, found)
    if options.compare_styles:
        _compare_styles(legacy, new, options, found)
    return found


def compare(legacy: Path, new: Path, options: CompareOptions) -> Comparison:
    """The comparator's pluggable signature (``CUTOVER_SHADOW_COMPARATOR``)."""
    return compare_workbooks(legacy, new, options)


def _check_size(path: Path, max_bytes: int | None) -> None:
    if max_bytes is None:
        return
    size = path.stat().st_size
    if size > max_bytes:
        raise TooLargeError(f"{path.name} is {size} bytes, over the limit of {max_bytes}")
    with zipfile.ZipFile(path) as archive:
        expanded = sum(info.file_size for info in archive.infolist())
    if expanded > max_bytes * MAX_EXPANSION:
        raise TooLargeError(f"{path.name} expands to {expanded} bytes")


def _compare_properties(old: dict[str, str], new: dict[str, str], found: Comparison) -> None:
    for name in _PROPERTIES:
        a, b = _property(old, name), _property(new, name)
        if a != b:
            found.add(Difference("(properties)", name, name, shown(a), shown(b)))


def _property(props: dict[str, str], name: str) -> str | None:
    text = props.get(name) or None
    if text is None:
        return None
    if name == "keywords":
        kept = [w for w in text.split() if not w.startswith("path=")]
        return " ".join(kept) or None
    if name == "description":
        try:
            doc = json.loads(text)
        except ValueError:
            return text
        if isinstance(doc, dict):
            rest = {k: v for k, v in doc.items() if k not in _STAMP_KEYS}
            return json.dumps(rest, sort_keys=True) if rest else None
    return text


def _compare_sheet(
    name: str,
    old: Iterator[tuple[Any, ...]],
    new: Iterator[tuple[Any, ...]],
    options: CompareOptions,
    found: Comparison,
) -> None:
    headers: dict[int, str] = {}
    for row_number, (a_row, b_row) in enumerate(zip_longest(old, new, fillvalue=()), 1):
        if row_number == 1:
            headers = _headers(a_row, b_row)
        for col, (a, b) in enumerate(zip_longest(a_row, b_row, fillvalue=None), 1):
            if same(a, b, options.rel_tol):
                continue
            header = headers.get(col) or column_letters(col)
            if any(rule.covers(name, header, row_number, col) for rule in options.ignore):
                continue
            legacy, new_text = shown_pair(a, b)
            found.add(Difference(name, cell_name(row_number, col), header, legacy, new_text))


def _compare_styles(legacy: Path, new: Path, options: CompareOptions, found: Comparison) -> None:
    """Number formats and emphasis, cell by cell, through openpyxl's read-only mode."""
    from openpyxl import load_workbook

    old_wb = load_workbook(legacy, read_only=True)
    new_wb = load_workbook(new, read_only=True)
    try:
        for name in old_wb.sheetnames:
            if name not in new_wb.sheetnames:
                continue
            old_ws, new_ws = old_wb[name], new_wb[name]
            old_ws.reset_dimensions()
            new_ws.reset_dimensions()
            headers: dict[int, str] = {}
            rows = zip_longest(old_ws.iter_rows(), new_ws.iter_rows(), fillvalue=())
            for row_number, (a_row, b_row) in enumerate(rows, 1):
                if row_number == 1:
                    headers = _headers(tuple(c.value for c in a_row), tuple(c.value for c in b_row))
                for col, (a, b) in enumerate(zip_longest(a_row, b_row, fillvalue=None), 1):
                    a_style, b_style = _style(a), _style(b)
                    header = headers.get(col) or column_letters(col)
                    if a_style == b_style or any(
                        r.covers(name, header, row_number, col) for r in options.ignore
                    ):
                        continue
                    found.add(Difference(name, cell_name(row_number, col), header, a_style, b_style))
    finally:
        old_wb.close()
        new_wb.close()


def _headers(a_row: tuple[Any, ...], b_row: tuple[Any, ...]) -> dict[int, str]:
    out: dict[int, str] = {}
    for col, (a, b) in enumerate(zip_longest(a_row, b_row, fillvalue=None), 1):
        label = a if a not in (None, "") else b
        if label not in (None, ""):
            out[col] = str(label)
    return out


def _style(cell: Any) -> str:
    if cell is None or not hasattr(cell, "number_format"):
        return "format=General bold=False italic=False"
    font = getattr(cell, "font", None)
    bold = bool(getattr(font, "b", False))
    italic = bool(getattr(font, "i", False))
    return f"format={cell.number_format} bold={bold} italic={italic}"


def canonical(value: Any) -> tuple[str, Any]:
    """A cell value as the comparison sees it: a kind and a normalised value."""
    if value is None or value == "":
        return ("empty", None)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return ("datetime", _to_millis(value))
    if isinstance(value, dt.date):
        return ("datetime", dt.datetime(value.year, value.month, value.day))
    if isinstance(value, dt.time):
        return ("time", _to_millis(dt.datetime.combine(dt.date(2000, 1, 1), value)).time())
    if isinstance(value, dt.timedelta):
        return ("duration", round(value.total_seconds(), 3))
    if isinstance(value, str):
        return ("text", value)
    return ("other", repr(value))


def _to_millis(value: dt.datetime) -> dt.datetime:
    # Excel keeps times as fractions of a day: two saves may disagree below a millisecond.
    micros = round(value.microsecond / 1000) * 1000
    if micros == 1_000_000:
        return value.replace(microsecond=0) + dt.timedelta(seconds=1)
    return value.replace(microsecond=micros)


def same(a: Any, b: Any, rel_tol: float) -> bool:
    """Whether two cell values are the same canonical content."""
    kind_a, va = canonical(a)
    kind_b, vb = canonical(b)
    if kind_a != kind_b:
        return False
    if kind_a == "number":
        if math.isnan(va) or math.isnan(vb):
            return math.isnan(va) and math.isnan(vb)
        return va == vb or math.isclose(va, vb, rel_tol=rel_tol, abs_tol=0.0)
    return bool(va == vb)


def shown_pair(a: Any, b: Any) -> tuple[str, str]:
    """Both values as a report shows them; their types too where the text alone looks the same."""
    left, right = shown(a), shown(b)
    if left == right:
        left, right = f"{left} ({type(a).__name__})", f"{right} ({type(b).__name__})"
    return left, right
