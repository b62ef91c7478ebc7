"""The ``.xlsx`` comparator: what two saves of the same data differ in is no difference; each
kind of real difference is one, naming the sheet and cell; ignore rules and the size limit hold."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from controller.core.parity import CompareOptions, Comparison
from controller.core.shadow import IgnoreRule, parse_cells
from controller.shadow.xlsx import TooLargeError, compare_workbooks, same
from tests.shadow.workbooks import changed, repack, set_cell, sheets, write

OPTIONS = CompareOptions()


def _compare(tmp_path: Path, old: dict, new: dict, options: CompareOptions = OPTIONS, **kw) -> Comparison:
    a = write(tmp_path / "legacy.xlsx", old, path_stamp="legacy", created=dt.datetime(2026, 1, 1))
    b = write(tmp_path / "new.xlsx", new, path_stamp="new", created=dt.datetime(2027, 5, 5))
    return compare_workbooks(a, b, options, **kw)


def _cells(found: Comparison) -> list[tuple[str, str]]:
    return [(d.sheet, d.cell) for d in found.examples]


def test_the_same_content_saved_twice_matches(tmp_path: Path) -> None:
    """Different path stamps, docProps times, zip member order and times: still a match."""
    content = sheets()
    a = write(tmp_path / "a.xlsx", content, path_stamp="legacy", created=dt.datetime(2026, 1, 1))
    b = write(tmp_path / "b.xlsx", content, path_stamp="new", created=dt.datetime(2029, 9, 9))
    c = repack(b, tmp_path / "c.xlsx")
    assert a.read_bytes() != c.read_bytes()
    assert compare_workbooks(a, b, OPTIONS).equal
    assert compare_workbooks(a, c, OPTIONS).equal


def test_styles_are_ignored_unless_asked(tmp_path: Path) -> None:
    content = sheets(forms=1, rows=5)
    a = write(tmp_path / "a.xlsx", content, write_only=False)
    b = write(tmp_path / "b.xlsx", content, write_only=False, bold_header=True)
    assert compare_workbooks(a, b, OPTIONS).equal
    found = compare_workbooks(a, b, CompareOptions(compare_styles=True))
    assert not found.equal
    assert ("Form 1", "A1") in _cells(found)
    assert "bold=True" in found.examples[0].new


def test_a_changed_value_names_its_cell(tmp_path: Path) -> None:
    old = sheets()
    new = changed(old, lambda c: set_cell(c, "Form 2", 7, 4, 123.45))
    found = _compare(tmp_path, old, new)
    assert found.counts == {("Form 2", "Amount"): 1}
    [diff] = found.examples
    assert (diff.sheet, diff.cell, diff.column) == ("Form 2", "D7", "Amount")
    assert diff.new == "123.45"
    assert diff.legacy == repr(old["Form 2"][6][3])


def test_a_changed_type_is_a_difference_even_when_it_reads_the_same(tmp_path: Path) -> None:
    old = sheets(forms=1)
    new = changed(old, lambda c: set_cell(c, "Form 1", 3, 1, "2"))
    found = _compare(tmp_path, old, new)
    [diff] = found.examples
    assert diff.cell == "A3"
    assert diff.legacy == "2 (int)"
    assert diff.new == "2 (str)"


def test_a_missing_row_is_a_difference_at_its_cells(tmp_path: Path) -> None:
    old = sheets(forms=1, rows=10)
    new = changed(old, lambda c: c["Form 1"].pop())
    found = _compare(tmp_path, old, new)
    assert ("Form 1", "A11") in _cells(found)
    assert sum(found.counts.values()) == 5  # every cell of the last row
    assert found.examples[0].new == "(empty)"


def test_an_extra_sheet_is_a_difference(tmp_path: Path) -> None:
    old = sheets(forms=1)
    new = changed(old, lambda c: c.__setitem__("Extra", [("x",)]))
    found = _compare(tmp_path, old, new)
    assert found.counts == {("Extra", "(sheet)"): 1}
    assert found.examples[0].legacy == "(no such sheet)"


def test_sheets_are_matched_by_name_not_order(tmp_path: Path) -> None:
    old = sheets(forms=2)
    new = {"Form 2": old["Form 2"], "Form 1": old["Form 1"]}
    assert _compare(tmp_path, old, new).equal


def test_numbers_within_the_relative_tolerance_match() -> None:
    assert same(1.0, 1.0 + 1e-12, 1e-9)
    assert same(1, 1.0, 1e-9)
    assert not same(1.0, 1.0 + 1e-6, 1e-9)
    assert not same(0.0, 1e-300, 1e-9)
    assert not same(True, 1, 1e-9)
    assert same(None, "", 1e-9)


def test_datetimes_are_normalised() -> None:
    naive = dt.datetime(2026, 3, 1, 12, 0, 0)
    aware = dt.datetime(2026, 3, 1, 13, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert same(naive, aware, 1e-9)
    assert same(naive, naive + dt.timedelta(microseconds=300), 1e-9)  # below Excel's millisecond
    assert not same(naive, naive + dt.timedelta(seconds=1), 1e-9)
    assert same(dt.date(2026, 3, 1), dt.datetime(2026, 3, 1), 1e-9)


def test_ignore_rules_by_column_header_and_by_cells(tmp_path: Path) -> None:
    old = sheets(forms=2)

    def change(c: dict) -> None:
        set_cell(c, "Form 1", 2, 2, dt.datetime(2030, 1, 1))  # Submitted at
        set_cell(c, "Form 2", 5, 3, "someone else")  # Customer, C5

    new = changed(old, change)
    assert len(_compare(tmp_path, old, new).counts) == 2
    rules = (IgnoreRule("Form *", column="Submitted*"), IgnoreRule("Form 2", cells=parse_cells("C5", "t")))
    assert _compare(tmp_path, old, new, CompareOptions(ignore=rules)).equal
    narrower = (IgnoreRule("Form 1", column="Submitted at"),)
    found = _compare(tmp_path, old, new, CompareOptions(ignore=narrower))
    assert list(found.counts) == [("Form 2", "Customer")]


def test_a_workbook_over_the_limit_is_not_compared(tmp_path: Path) -> None:
    content = sheets(forms=1, rows=200)
    a = write(tmp_path / "a.xlsx", content)
    with pytest.raises(TooLargeError, match="over the limit"):
        compare_workbooks(a, a, OPTIONS, max_bytes=1000)


def _peak(tmp_path: Path, rows: int) -> int:
    import tracemalloc

    # Few distinct strings: the shared-strings table (which xlsx readers must hold) stays small.
    old = {"Form 1": [("Record ID", "Amount", "Customer", "Approved")]}
    old["Form 1"] += [(i, i * 1.5, f"name {i % 10}", i % 2 == 0) for i in range(rows)]
    new = changed(old, lambda c: set_cell(c, "Form 1", rows // 2, 3, "changed"))
    a = write(tmp_path / f"a{rows}.xlsx", old)
    b = write(tmp_path / f"b{rows}.xlsx", new)
    tracemalloc.start()
    try:
        found = compare_workbooks(a, b, OPTIONS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found.counts == {("Form 1", "Customer"): 1}
    return peak


def test_a_large_workbook_is_streamed(tmp_path: Path) -> None:
    """Twenty times the rows take about the same memory: rows are streamed, not loaded whole."""
    small, large = _peak(tmp_path, 300), _peak(tmp_path, 6000)
    assert large < small * 1.2, (small, large)


def test_findings_are_bounded_and_survive_the_ledger(tmp_path: Path) -> None:
    old = sheets(forms=1, rows=50)
    new = changed(old, lambda c: [set_cell(c, "Form 1", r, 3, f"x{r}") for r in range(2, 52)])
    found = _compare(tmp_path, old, new)
    assert found.counts == {("Form 1", "Customer"): 50}
    assert len(found.examples) == 3
    again = Comparison.from_json(found.to_json())
    assert again.counts == found.counts
    assert again.examples == found.examples


@pytest.mark.parametrize("write_only", [True, False], ids=["write-only", "normal"])
def test_the_streaming_reader_reads_what_openpyxl_reads(tmp_path: Path, write_only: bool) -> None:
    """Typed values (numbers, dates, booleans, shared and inline strings, gaps) as openpyxl sees them."""
    from openpyxl import load_workbook

    from controller.shadow.sheets import Workbook

    content = sheets(forms=2, rows=40)
    content["Form 1"].append(())
    content["Form 1"].append((None, None, "after a gap", dt.date(2026, 2, 3), dt.time(4, 5, 6)))
    path = write(tmp_path / "w.xlsx", content, write_only=write_only)
    expected = load_workbook(path)
    with Workbook(path) as book:
        assert book.sheetnames == expected.sheetnames
        assert book.properties()["keywords"] == "path=legacy"
        for name in book.sheetnames:
            ours = [tuple(v for v in row) for row in book.rows(name)]
            theirs = [tuple(c.value for c in row) for row in expected[name].iter_rows()]
            for mine, ref in zip(ours, theirs, strict=False):
                assert all(same(a, b, 0.0) for a, b in zip(mine, ref, strict=False)), (mine, ref)
            assert len([r for r in ours if any(v is not None for v in r)]) == len(
                [r for r in theirs if any(v is not None for v in r)]
            )


def test_a_file_that_is_not_a_workbook_is_an_error(tmp_path: Path) -> None:
    from controller.shadow.sheets import XlsxError

    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(b"not a zip")
    with pytest.raises(XlsxError, match=r"not an \.xlsx package"):
        compare_workbooks(bad, bad, OPTIONS)
