"""One comparison's verdict: the .xlsx comparator by default, a pluggable one by setting; failures,
missing baselines, size limits and unreadable outputs each get their own verdict; the daily
allowance of shadows per tenant holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.core.domain import ConversionRecord, ConversionState
from controller.core.domain import Path as ExecPath
from controller.core.errors import ConfigError
from controller.core.parity import CompareOptions
from controller.core.shadow import ShadowKind, ShadowPlan, ShadowRecord, ShadowState, ShadowVerdict
from controller.engine.shadows import ShadowConfig, ShadowRunner
from controller.ledger.sqlite import SQLiteLedger
from controller.shadow.judge import Judge, load_comparator
from controller.shadow.outputs import OutputError, Outputs, inside
from flags.rollout import Group, RolloutPlan
from tests.shadow.workbooks import changed, set_cell, sheets, write


def _shadow(output: str | None, state: ShadowState = ShadowState.SUCCEEDED, reason: str = "") -> ShadowRecord:
    return ShadowRecord("new:c1", "c1", 3, {}, ShadowKind.NEW, state, output=output, reason=reason)


def test_the_default_judge_compares_workbooks(tmp_path: Path) -> None:
    content = sheets(forms=1)
    legacy = write(tmp_path / "l.xlsx", content, path_stamp="legacy")
    same = write(tmp_path / "s.xlsx", content, path_stamp="new")
    other = write(tmp_path / "o.xlsx", changed(content, lambda c: set_cell(c, "Form 1", 4, 2, "x")))
    judge = Judge(Outputs(), CompareOptions())
    assert judge.judge(_shadow(str(same)), str(legacy)).verdict is ShadowVerdict.MATCH
    different = judge.judge(_shadow(str(other)), str(legacy))
    assert different.verdict is ShadowVerdict.DIFFERENT
    assert [(d.sheet, d.cell) for d in different.comparison.examples] == [("Form 1", "B4")]


def test_each_kind_of_outcome_has_its_verdict(tmp_path: Path) -> None:
    legacy = write(tmp_path / "l.xlsx", sheets(forms=1))
    judge = Judge(Outputs(), CompareOptions(), max_bytes=2000)
    assert judge.judge(_shadow(str(legacy)), None).verdict is ShadowVerdict.NO_BASELINE
    failed = judge.judge(_shadow(None, ShadowState.FAILED, "worker exited with status 1"), str(legacy))
    assert (failed.verdict, failed.note) == (ShadowVerdict.SHADOW_FAILED, "worker exited with status 1")
    assert judge.judge(_shadow(str(legacy)), str(legacy)).verdict is ShadowVerdict.TOO_LARGE
    missing = Judge(Outputs(), CompareOptions()).judge(_shadow(str(tmp_path / "gone.xlsx")), str(legacy))
    assert missing.verdict is ShadowVerdict.UNREADABLE
    assert "gone.xlsx" in missing.note
    junk = tmp_path / "junk.xlsx"
    junk.write_text("not a workbook")
    assert (
        Judge(Outputs(), CompareOptions()).judge(_shadow(str(junk)), str(legacy)).verdict
        is ShadowVerdict.UNREADABLE
    )


def test_a_pluggable_comparator_judges_other_formats(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one\ntwo\n")
    b.write_text("one\nTWO\n")
    judge = Judge(
        Outputs(), CompareOptions(), comparator=load_comparator("tests.shadow.plugin_comparator:compare")
    )
    found = judge.judge(_shadow(str(b)), str(a))
    assert found.verdict is ShadowVerdict.DIFFERENT
    assert found.comparison.counts == {("text", "line"): 1}
    broken = Judge(
        Outputs(), CompareOptions(), comparator=load_comparator("tests.shadow.plugin_comparator:broken")
    )
    assert broken.judge(_shadow(str(b)), str(a)).verdict is ShadowVerdict.UNREADABLE


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_here:compare", "cannot import"),
        ("tests.shadow.plugin_comparator:missing", "is not a callable"),
        ("tests.shadow.plugin_comparator:not_callable", "is not a callable"),
    ],
)
def test_a_bad_comparator_is_named(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"CUTOVER_SHADOW_COMPARATOR: .*{message}"):
        load_comparator(spec)


def test_local_cleanup_stays_inside_the_quarantine(tmp_path: Path) -> None:
    quarantine = tmp_path / "q"
    kept = tmp_path / "output" / "3" / "c1.xlsx"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"real")
    shadow = quarantine / "S1.c1" / "3" / "c1.xlsx"
    shadow.parent.mkdir(parents=True)
    shadow.write_bytes(b"shadow")
    outputs = Outputs()
    for outside in (kept, quarantine / ".." / "output" / "3" / "c1.xlsx", quarantine):
        with pytest.raises(OutputError, match="outside the quarantine"):
            outputs.remove(str(outside), str(quarantine))
    assert kept.exists()
    assert outputs.remove(str(shadow), str(quarantine))
    assert not shadow.exists()
    assert not (quarantine / "S1.c1").exists()  # emptied directories go too
    assert quarantine.exists()
    assert not outputs.remove(str(shadow), str(quarantine))  # already gone
    assert inside("s3://b/q/j/x", "s3://b/q")
    assert not inside("/q/x", "s3://b/q")


def test_the_daily_allowance_per_tenant_holds(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "l.db")
    plan = RolloutPlan(
        (Group("g", frozenset({3, 4})),),
        "plan",
        shadow=ShadowPlan(groups=("g",), rate=1.0, max_per_tenant_per_day=5),
    )
    runner = ShadowRunner(ledger, {}, ShadowConfig(), plan=lambda: plan)
    records = [
        ConversionRecord(f"c{i}", 3 + i % 2, {}, ConversionState.CLAIMED, ExecPath.LEGACY) for i in range(40)
    ]
    day = 86_400.0 * 20_000
    assert runner.sample(records[:20], day + 10) == 10  # five each for tenants 3 and 4
    assert runner.sample(records[20:], day + 20) == 0  # the day's allowance is used up
    assert runner.sample(records[20:], day + 86_400 + 1) == 10  # a new day
    ledger.close()
