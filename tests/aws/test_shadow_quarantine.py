"""The S3 quarantine on moto: shadow workbooks are put under the quarantine prefix (never beside
real outputs), compared from there through a bounded download, and deleted after the retention;
the cleanup refuses anything outside the quarantine."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from controller.bootstrap import build
from controller.core.shadow import ShadowState
from controller.service import Service
from controller.shadow.outputs import OutputError, Outputs
from tests.aws.moto_world import BUCKET, World
from tests.shadow.support import accept, settings

QUARANTINE = f"s3://{BUCKET}/quarantine/"


def _terminal(service: Service, conversion_id: str) -> bool:
    record = service.ledger.get(conversion_id)
    return record is not None and record.state.terminal


def _keys(world: World, prefix: str) -> list[str]:
    answer = world.client("s3", hooked=False).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for o in answer.get("Contents", [])]


@pytest.mark.slow
def test_shadow_outputs_live_in_the_s3_quarantine_until_cleaned(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.bucket()
    for name, value in world.env().items():
        monkeypatch.setenv(name, value)
    service = build(
        settings(
            tmp_path,
            planted=4,
            worker_env=world.env(),
            shadow_quarantine=QUARANTINE,
            shadow_retention_seconds=3600.0,
        )
    )
    try:
        assert service.shadows is not None
        ids = accept(service, 8)
        checks = service.shadows.checks
        store = service.shadows.runner.store
        unsettled = [s for s in ShadowState if s not in (ShadowState.COMPARED, ShadowState.SKIPPED)]
        deadline = time.monotonic() + 240
        while any(not _terminal(service, c) for c in ids) or store.shadows(unsettled):
            assert time.monotonic() < deadline, store.shadows(unsettled)[:3]
            service.controller.run_cycle()
            checks.tick(service.clock())  # compares; the retention keeps the outputs for now
            time.sleep(0.1)
        compared = store.shadows([ShadowState.COMPARED])
        assert compared
        assert all(s.output and s.output.startswith(QUARANTINE) for s in compared)
        keys = _keys(world, "quarantine/")
        assert sorted(f"s3://{BUCKET}/{k}" for k in keys) == sorted(s.output for s in compared)
        report = service.shadows.report()
        groups = {g["name"]: g for g in report["groups"]}
        assert groups["g2"]["mismatches"] == 2  # tenant 4's two conversions
        assert groups["g1"]["mismatches"] == 0
        # After the retention, the quarantine is emptied; the real outputs are untouched.
        checks.retention_seconds = 0.0
        checks.tick(service.clock() + 1)
        assert _keys(world, "quarantine/") == []
        assert all(s.cleaned_at is not None for s in store.shadows([ShadowState.COMPARED]))
    finally:
        service.close()
    assert len(list((tmp_path / "output").rglob("*.xlsx"))) == len(ids)


def test_cleanup_refuses_what_is_outside_the_quarantine(world: World) -> None:
    world.bucket()
    s3 = world.client("s3", hooked=False)
    s3.put_object(Bucket=BUCKET, Key="exports/4/c1.xlsx", Body=b"real")
    outputs = Outputs(s3)
    for outside in (f"s3://{BUCKET}/exports/4/c1.xlsx", f"s3://{BUCKET}/quarantine/../exports/4/c1.xlsx"):
        with pytest.raises(OutputError, match="outside the quarantine"):
            outputs.remove(outside, QUARANTINE)
    assert _keys(world, "exports/") == ["exports/4/c1.xlsx"]


def test_an_s3_output_over_the_limit_is_not_downloaded(world: World) -> None:
    from controller.shadow.xlsx import TooLargeError

    world.bucket()
    s3 = world.client("s3", hooked=False)
    s3.put_object(Bucket=BUCKET, Key="quarantine/j/big.xlsx", Body=b"x" * 5000)
    calls: list[str] = []
    s3.meta.events.register("before-call.s3.GetObject", lambda **kw: calls.append("get"))
    with pytest.raises(TooLargeError), Outputs(s3).local(f"s3://{BUCKET}/quarantine/j/big.xlsx", 4096):
        pass
    assert calls == []
