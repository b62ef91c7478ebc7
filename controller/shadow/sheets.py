"""A streaming reader of ``.xlsx`` values: sheet names, core properties, and each sheet's rows one
at a time, with memory bounded by one row plus the workbook's shared-strings table.

openpyxl's read-only mode streams rows too, but when a sheet has no ``<dimension>`` element (as
openpyxl's own write-only mode leaves it) opening the workbook parses each whole sheet into a tree
to look for one, and reading keeps an empty element per row; both grow with the rows. This reader
walks the package itself with ``iterparse`` and drops each row once read, and borrows openpyxl
only for what Excel's number formats and serial dates mean. Reads only; decides nothing.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal
from xml.etree.ElementTree import Element
from xml.etree.ElementTree import iterparse as _et_iterparse

_Event = Literal["start", "end"]
_DOC_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def iterparse(source: IO[bytes], events: tuple[_Event, ...] = ("end",)) -> Iterator[tuple[str, Element]]:
    """ElementTree's incremental parser over one part of the package.

    The parts are untrusted, but ElementTree never fetches external entities, the expat it ships
    with (2.4.1 and later) stops entity-expansion bombs, and the caller has already held the
    package's size and expansion to the configured limits.
    """
    return _et_iterparse(source, events=events)  # noqa: S314 - see the docstring


def _local(tag: str) -> str:
    """A tag without its namespace (transitional and strict OOXML use different ones)."""
    return tag.rsplit("}", 1)[-1]


def _text(element: Element) -> str:
    """The text of a string item: its ``<t>`` runs, leaving out phonetic guides."""
    parts: list[str] = []

    def walk(node: Element) -> None:
        for child in node:
            name = _local(child.tag)
            if name == "t":
                parts.append(child.text or "")
            elif name != "rPh":
                walk(child)

    walk(element)
    return "".join(parts)


class XlsxError(Exception):
    """The file is not a workbook this reader understands; the message says what is missing."""


class Workbook:
    """One ``.xlsx`` package, open for reading values."""

    def __init__(self, path: Path) -> None:
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise XlsxError(f"{path.name} is not an .xlsx package ({exc})") from exc
        try:
            self._sheets = self._sheet_parts()
            self._strings = self._shared_strings()
            self._dates, self._durations = self._date_styles()
        except BaseException:
            self._zip.close()
            raise

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> Workbook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the package ---------------------------------------------------------------------------

    def _open(self, name: str) -> IO[bytes] | None:
        try:
            return self._zip.open(name)
        except KeyError:
            return None

    def _sheet_parts(self) -> dict[str, str]:
        targets: dict[str, str] = {}
        rels = self._open("xl/_rels/workbook.xml.rels")
        if rels is not None:
            with rels:
                for _, el in iterparse(rels):
                    if _local(el.tag) == "Relationship":
                        target = el.get("Target", "")
                        part = target.lstrip("/") if target.startswith("/") else posixpath.join("xl", target)
                        targets[el.get("Id", "")] = posixpath.normpath(part)
        book = self._open("xl/workbook.xml")
        if book is None:
            raise XlsxError("no xl/workbook.xml: not a workbook")
        sheets: dict[str, str] = {}
        self.epoch = dt.datetime(1899, 12, 30)
        with book:
            for _, el in iterparse(book):
                name = _local(el.tag)
                if name == "workbookPr" and el.get("date1904") in ("1", "true"):
                    self.epoch = dt.datetime(1904, 1, 1)
                elif name == "sheet":
                    rid = el.get(f"{{{_DOC_REL}}}id") or el.get("id") or ""
                    if rid in targets:
                        sheets[el.get("name", "")] = targets[rid]
        return sheets

    def _shared_strings(self) -> list[str]:
        source = self._open("xl/sharedStrings.xml")
        if source is None:
            return []
        strings: list[str] = []
        with source:
            for _, el in iterparse(source):
                if _local(el.tag) == "si":
                    strings.append(_text(el))
                    el.clear()
        return strings

    def _date_styles(self) -> tuple[set[int], set[int]]:
        """Which cell style indexes show dates, and which durations."""
        from openpyxl.styles.numbers import BUILTIN_FORMATS, is_date_format, is_timedelta_format

        source = self._open("xl/styles.xml")
        if source is None:
            return set(), set()
        custom: dict[int, str] = {}
        formats: list[int] = []
        in_cell_xfs = False
        with source:
            for event, el in iterparse(source, events=("start", "end")):
                name = _local(el.tag)
                if name == "cellXfs":
                    in_cell_xfs = event == "start"
                elif event == "end" and name == "numFmt":
                    custom[int(el.get("numFmtId", "0"))] = el.get("formatCode", "")
                elif event == "end" and name == "xf" and in_cell_xfs:
                    formats.append(int(el.get("numFmtId", "0")))
        dates: set[int] = set()
        durations: set[int] = set()
        for index, fmt_id in enumerate(formats):
            code = custom.get(fmt_id) or BUILTIN_FORMATS.get(fmt_id, "General")
            if is_timedelta_format(code):
                durations.add(index)
            elif is_date_format(code):
                dates.add(index)
        return dates, durations

    # -- what a comparison reads -----------------------------------------------------------------

    @property
    def sheetnames(self) -> list[str]:
        return list(self._sheets)

    def properties(self) -> dict[str, str]:
        """The core properties (``docProps/core.xml``) by their local names."""
        source = self._open("docProps/core.xml")
        if source is None:
            return {}
        out: dict[str, str] = {}
        with source:
            for _, el in iterparse(source):
                name = _local(el.tag)
                if name != "coreProperties" and el.text is not None:
                    out[name] = el.text
        return out

    def rows(self, sheet: str) -> Iterator[tuple[Any, ...]]:
        """The sheet's rows of typed values, in order; a row the file leaves out comes as ``()``."""
        source = self._open(self._sheets[sheet])
        if source is None:
            raise XlsxError(f"sheet {sheet!r} names a part that is not in the package")
        with source:
            expected = 1
            parent: Element | None = None
            for event, el in iterparse(source, events=("start", "end")):
                name = _local(el.tag)
                if event == "start":
                    if name == "sheetData":
                        parent = el
                    continue
                if name != "row":
                    continue
                number = int(el.get("r") or expected)
                values = self._row(el)
                if parent is not None:
                    parent.clear()  # drop the row from the tree: memory stays one row deep
                while expected < number:
                    expected += 1
                    yield ()
                expected = number + 1
                yield tuple(values)

    def _row(self, row: Element) -> list[Any]:
        values: list[Any] = []
        for cell in row:
            if _local(cell.tag) != "c":
                continue
            ref = cell.get("r")
            column = _column(ref) if ref else len(values) + 1
            values.extend([None] * (column - 1 - len(values)))
            values.append(self._value(cell))
        return values

    def _value(self, cell: Element) -> Any:
        kind = cell.get("t", "n")
        raw: str | None = None
        inline: Element | None = None
        for child in cell:
            name = _local(child.tag)
            if name == "v":
                raw = child.text
            elif name == "is":
                inline = child
        if kind == "inlineStr":
            return _text(inline) if inline is not None else None
        if raw is None:
            return None
        if kind == "s":
            return self._strings[int(raw)]
        if kind == "b":
            return raw.strip() in ("1", "true")
        if kind in ("str", "e"):
            return raw
        if kind == "d":
            return dt.datetime.fromisoformat(raw.rstrip("Z"))
        number: int | float = float(raw) if any(c in raw for c in ".eE") else int(raw)
        style = int(cell.get("s", "0"))
        if style in self._dates or style in self._durations:
            from openpyxl.utils.datetime import from_excel

            return from_excel(number, self.epoch, timedelta=style in self._durations)
        return number


def _column(ref: str) -> int:
    n = 0
    for ch in ref:
        if not ch.isalpha():
            break
        n = n * 26 + ord(ch.upper()) - 64
    return n
