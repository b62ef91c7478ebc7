"""The agent is asked once per controller cycle, however many conversions the cycle routes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path as FsPath

from controller.bootstrap import cycle_config
from controller.core.domain import ConversionRequest, DispatchBatch, JobRef, JobState, JobStatus, Path
from controller.engine.cycle import Controller
from controller.ledger.sqlite import SQLiteLedger
from controller.settings import Settings
from flags.agent import AgentFlagSource
from flags.lkg import LastKnownGood
from tests.fakes import FakeClock

from .agent_fake import FakeAgent


class FakeBackend:
    """An execution path that accepts everything and keeps it queued."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def submit(self, batch: DispatchBatch) -> list[JobRef]:
        return [JobRef(f"{batch.key}-{i}", item.conversion_id) for i, item in enumerate(batch.items)]

    def poll(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        return {r: JobState(JobStatus.QUEUED) for r in refs}

    def find(self, intents: Sequence[tuple[str, str]]) -> dict[str, JobRef]:
        return {}

    def cancel(self, ref: JobRef) -> None:
        pass

    def set_capacity(self, slots: int) -> int | None:
        return slots

    def in_use(self) -> int:
        return 0

    def close(self) -> None:
        pass


def test_one_agent_request_per_cycle_for_hundreds_of_conversions(
    agent: FakeAgent, clock: FakeClock, tmp_path: FsPath
) -> None:
    agent.deploy(True, list(range(1, 51)))
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    source = AgentFlagSource(agent.url, "cutover", "prod", "migration-flags", "migrated_tenants", clock)
    settings = Settings(flag_source="agent", budget=5)
    controller = Controller(
        ledger=ledger,
        flags=LastKnownGood(source, ledger, clock),
        backends={p: FakeBackend(p) for p in Path},
        config=cycle_config(settings),
        clock=clock,
    )
    try:
        ledger.accept([ConversionRequest(f"c{i}", 1 + i % 100) for i in range(300)], clock())
        for _ in range(3):
            controller.run_cycle()
            clock.advance(5)
        assert len(agent.requests) == 3
        routed = {cid: ledger.get(cid) for cid in ("c0", "c49", "c50", "c99")}
        assert {cid: (r.path, r.flag_version) for cid, r in routed.items() if r} == {
            "c0": (Path.NEW, "1"),
            "c49": (Path.NEW, "1"),
            "c50": (Path.LEGACY, "1"),
            "c99": (Path.LEGACY, "1"),
        }
    finally:
        source.close()
        ledger.close()
