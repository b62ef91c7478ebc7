"""Shadows end to end with the local runners: real worker processes, a difference planted on the
new path for one tenant, noise in every run; outputs compared, reported, gated and cleaned up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.bootstrap import build
from controller.core.domain import ConversionState
from controller.core.domain import Path as ExecPath
from controller.core.gates import GateVerdict
from controller.core.parity import Parity
from controller.core.shadow import ShadowKind, ShadowState
from controller.engine.gates import evaluate
from controller.engine.history import learn
from controller.engine.shadows import gate_parity, parity_verdicts
from tests.shadow.support import accept, run_to_the_end, settings


@pytest.mark.slow
def test_a_planted_difference_shows_in_the_report_and_fails_its_group(tmp_path: Path) -> None:
    service = build(settings(tmp_path, planted=3, noise=True))
    try:
        assert service.shadows is not None
        ids = accept(service, 12)
        run_to_the_end(service, ids)
        report = service.shadows.report()
        plan = service.shadows.plan()
        assert plan is not None
        verdicts = parity_verdicts(service.shadows.runner.store, plan)
        # The gate once both groups moved: the shadows' parity is one of its checks.
        gate = evaluate(
            service.ledger,
            plan,
            plan.tenant_ids,
            service.clock(),
            parity=gate_parity(service.shadows.runner.store, plan),
        )
        records = [service.ledger.get(cid) for cid in ids]
        ran = service.shadows.runner.store.shadows([ShadowState.COMPARED], kind=ShadowKind.NEW, limit=100)
        learnt = learn(service.ledger)
    finally:
        service.close()

    # Each new-path shadow kept its own timing and when it took its slot; the forecast's history
    # learns the new path from them, since no real conversion ran there.
    assert len(ran) == 12
    for shadow in ran:
        assert shadow.work_seconds is not None
        assert shadow.work_started_at is not None
        assert shadow.slot_at is not None
        assert shadow.created_at is not None
        assert shadow.created_at <= shadow.slot_at <= shadow.work_started_at
    assert learnt.shadowed == 12
    assert len(learnt.shadow_starts) == 12
    assert {t for t, p in learnt.durations if p is ExecPath.NEW} == {s.tenant_id for s in ran}

    # Real work: every conversion once, on the old path, published; the shadows published nothing.
    for record in records:
        assert record is not None
        assert (record.state, record.path, record.attempts) == (ConversionState.SUCCEEDED, ExecPath.LEGACY, 1)
    lines = [json.loads(line) for line in (tmp_path / "output" / "produced.jsonl").read_text().splitlines()]
    assert sorted(line["conversion_id"] for line in lines) == sorted(ids)
    assert {line["path"] for line in lines} == {"legacy"}
    assert len(list((tmp_path / "output").rglob("*.xlsx"))) == len(ids)

    groups = {g["name"]: g for g in report["groups"]}
    g1, g2 = groups["g1"], groups["g2"]
    assert g1["samples"] == 6
    assert g1["mismatches"] == 0
    assert g2["samples"] == 6
    assert g2["mismatches"] == 3  # tenant 3's three conversions, each with its planted cell
    t3 = next(t for t in g2["tenants"] if t["tenant_id"] == 3)
    t4 = next(t for t in g2["tenants"] if t["tenant_id"] == 4)
    assert t4["mismatches"] == 0
    assert {(e["sheet"], e["cell"]) for e in t3["examples"]} == {("Form 1", "D5")}
    example = t3["examples"][0]
    assert float(example["new"]) == pytest.approx(float(example["legacy"]) + 1.25)
    # The "Generated at" column differs on every run: learned as noise from the A/A runs.
    assert {(n["sheet"], n["column"]) for n in report["noise"]} >= {("Form 1", "Generated at")}
    assert all(n["column"] == "Generated at" for n in report["noise"])
    assert t4["noisy_fields"]
    assert verdicts["g2"][0] is Parity.FAIL
    assert verdicts["g1"][0] is Parity.PASS
    judged = {g.name: g for g in gate.groups}
    g2_parity = next(c for c in judged["g2"].checks if c.name == "parity")
    assert (g2_parity.verdict, judged["g2"].verdict, gate.verdict) == (GateVerdict.FAIL,) * 3
    assert "3 of 6 shadows differ beyond noise" in judged["g2"].reasons[0]
    g1_parity = next(c for c in judged["g1"].checks if c.name == "parity")
    assert g1_parity.verdict is GateVerdict.PASS
    # Cleaned up: nothing left in the quarantine.
    assert not list((tmp_path / "state" / "quarantine").rglob("*.xlsx"))


def test_without_shadows_nothing_changes(tmp_path: Path) -> None:
    """No rate and no plan: no shadow parts at all."""
    cfg = settings(tmp_path, rollout_file=None)
    service = build(cfg)
    try:
        assert service.shadows is None
        assert service.controller.shadows is None
    finally:
        service.close()


def test_a_bad_comparator_setting_stops_the_start(tmp_path: Path) -> None:
    from controller.core.errors import ConfigError

    with pytest.raises(ConfigError, match="CUTOVER_SHADOW_COMPARATOR: cannot import 'no_such_module'"):
        build(settings(tmp_path, shadow_comparator="no_such_module:compare"))


def test_cancelling_a_running_local_job_frees_its_slot_at_once(tmp_path: Path) -> None:
    """What preempting a shadow relies on: when cancel returns, the job no longer holds a slot."""
    import time

    from controller.core.domain import DispatchBatch, DispatchItem, JobStatus
    from controller.plumbing.localproc import worker_command
    from new_adapter.local import LocalParallelRunner

    runner = LocalParallelRunner(
        tmp_path / "state", worker_command(None), tmp_path / "out", timeout=60, quarantine=str(tmp_path / "q")
    )
    try:
        runner.set_capacity(1)
        item = DispatchItem("h1", 5, {"simulate": "hang"}, "v1", 1)
        [ref] = runner.submit(DispatchBatch("Sabc", ExecPath.NEW, (item,), 0))
        deadline = time.monotonic() + 30
        while runner.in_use() == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # What the stopped attempt wrote into its quarantine (as a worker may before it is stopped).
        made = tmp_path / "q" / ref.job_id / "5" / "h1.xlsx"
        made.parent.mkdir(parents=True)
        made.write_bytes(b"half a workbook")
        runner.cancel(ref)
        assert runner.in_use() == 0
        state = runner.poll([ref])[ref]
        assert state.status is JobStatus.FAILED
        assert "cancelled" in state.reason
        # The attempt is void: nothing it left stays in the quarantine for the cleanup to miss.
        assert not (tmp_path / "q" / ref.job_id).exists()
    finally:
        runner.close()
