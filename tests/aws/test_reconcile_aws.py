"""Reconciliation over the wire (moto server): conversions that ran on both paths (or twice on one)
are duplicates, a failed run followed by a resubmit is not, and a conversion the ledger has out on
a path that does not have it is an orphan."""

from __future__ import annotations

import json
import time
from pathlib import Path as FsPath
from typing import Any

import pytest

from controller.core.domain import ConversionRequest, DispatchBatch, DispatchItem, Path
from controller.core.ports import Claim, Dispatched
from controller.engine.reconcile import Findings, Reconciler
from controller.ledger.sqlite import SQLiteLedger
from controller.plumbing.aws import ManifestStore, Retrier
from controller.plumbing.tally import ReconcileTally
from legacy_adapter.codebuild import CodeBuildBackend
from new_adapter.batch import BatchBackend
from tests.aws.moto_world import BUCKET, JOB_DEFINITION, PROJECT, QUEUE, World


class Paths:
    """Both AWS backends on one moto server, sharing a tally, and a SQLite ledger."""

    def __init__(self, world: World, tmp_path: FsPath) -> None:
        self.world = world
        self.now = time.time()
        retrier = Retrier(sleep=lambda _: None)
        store = ManifestStore(world.client("s3"), BUCKET, "manifests/", retrier)
        self.tally = ReconcileTally()
        self.legacy = CodeBuildBackend(
            world.client("codebuild"),
            store,
            project=PROJECT,
            retrier=retrier,
            clock=self.clock,
            tally=self.tally,
        )
        self.new = BatchBackend(
            world.client("batch"),
            store,
            job_queue=QUEUE,
            job_definition=JOB_DEFINITION,
            retrier=retrier,
            clock=self.clock,
            tally=self.tally,
        )
        self.ledger = SQLiteLedger(tmp_path / "ledger.db")
        self.found: list[Findings] = []
        self.reconciler = Reconciler(
            self.ledger,
            {Path.LEGACY: self.legacy, Path.NEW: self.new},
            window_seconds=3600.0,
            interval_seconds=300.0,
            grace_seconds=60.0,
            holder="me",
            clock=self.clock,
            tally=self.tally,
            on_findings=self.found.append,
        )

    def clock(self) -> float:
        return self.now

    def own(self, cid: str, path: Path, job_ref: str, at: float) -> None:
        """Record in the ledger that ``cid`` is owned by ``path`` and out as ``job_ref``."""
        self.ledger.claim([Claim(ConversionRequest(cid, 5), path, "v7", "test")], at)
        taken = self.ledger.mark_dispatching(self.ledger.pending_dispatch(path, 100), "I", at)
        self.ledger.mark_dispatched([Dispatched(r.conversion_id, r.fence, job_ref) for r in taken], at)


@pytest.fixture
def paths(world: World, tmp_path: FsPath) -> Any:
    world.bucket()
    world.batch()
    world.codebuild()
    p = Paths(world, tmp_path)
    yield p
    p.ledger.close()


def item(cid: str) -> DispatchItem:
    return DispatchItem(cid, 5, {}, "v7", 1)


def test_a_conversion_that_ran_on_both_paths_is_a_duplicate(paths: Paths) -> None:
    """'both' was owned by the new path but is also in a legacy build: one duplicate, counted
    against the path that does not own it; the others are fine."""
    (ref,) = paths.new.submit(DispatchBatch("Nown", Path.NEW, (item("both"),), 0))
    paths.own("both", Path.NEW, ref.job_id, paths.now - 600)
    paths.legacy.submit(DispatchBatch("Lstray", Path.LEGACY, (item("both"), item("legacy-only")), 1))
    paths.new.submit(DispatchBatch("Nother", Path.NEW, (item("new-a"), item("new-b")), 0))

    findings = paths.reconciler.run(paths.now)

    assert findings.duplicates == ("both",)
    assert findings.orphans == ()
    assert findings.conversions_seen == 4
    assert findings.by_path[Path.LEGACY] == {"duplicates": 1, "orphans": 0}
    assert findings.by_path[Path.NEW] == {"duplicates": 0, "orphans": 0}
    assert paths.legacy.reconcile_counts() == {"duplicates": 1, "orphans": 0}
    assert paths.new.reconcile_counts() == {"duplicates": 0, "orphans": 0}
    assert paths.reconciler.counts() == {"duplicates": 1, "orphans": 0}


def test_a_conversion_submitted_twice_on_one_path_is_a_duplicate(paths: Paths) -> None:
    """Two live jobs of the same conversion on the new path (a job nobody recorded, then a second
    submission) are a duplicate too."""
    paths.new.submit(DispatchBatch("Nfirst", Path.NEW, (item("twice"),), 0))
    paths.new.submit(DispatchBatch("Nsecond", Path.NEW, (item("twice"), item("once")), 0))
    findings = paths.reconciler.run(paths.now)
    assert findings.duplicates == ("twice",)
    assert findings.by_path[Path.NEW]["duplicates"] == 1


def test_runs_that_failed_before_a_resubmit_or_requeue_are_not_duplicates(paths: Paths) -> None:
    """A Batch job that failed and its resubmission, and a conversion that failed inside a legacy
    build then ran on the new path after a requeue: nothing is flagged."""
    (old,) = paths.new.submit(DispatchBatch("Nattempt1", Path.NEW, (item("retried"),), 0))
    paths.world.set_job(old.job_id, "FAILED", reason="Essential container in task exited")
    paths.new.submit(DispatchBatch("Nattempt2", Path.NEW, (item("retried"),), 0))

    refs = paths.legacy.submit(DispatchBatch("Lfailed", Path.LEGACY, (item("moved"), item("stayed")), 1))
    paths.world.set_build(refs[0].job_id, "SUCCEEDED")
    s3 = paths.world.client("s3", hooked=False)
    for cid, status in (("moved", "failed"), ("stayed", "succeeded")):
        s3.put_object(
            Bucket=BUCKET,
            Key=f"manifests/legacy/Lfailed/results/{cid}.json",
            Body=json.dumps({"conversion_id": cid, "status": status}).encode(),
        )
    paths.new.submit(DispatchBatch("Nrequeued", Path.NEW, (item("moved"),), 0))

    findings = paths.reconciler.run(paths.now)
    assert findings.duplicates == ()
    assert findings.conversions_seen == 3


def test_a_conversion_the_ledger_has_out_that_no_path_has_is_an_orphan(paths: Paths) -> None:
    """The ledger says 'lost' went to a job neither path knows: an orphan on that path. One
    dispatched a moment ago is not judged yet (listings may lag)."""
    (ref,) = paths.new.submit(DispatchBatch("Nreal", Path.NEW, (item("real"),), 0))
    paths.own("real", Path.NEW, ref.job_id, paths.now - 600)
    paths.own("lost", Path.NEW, "no-such-job", paths.now - 600)
    paths.own("just-now", Path.LEGACY, f"{PROJECT}:not-listed-yet", paths.now - 5)

    findings = paths.reconciler.run(paths.now)
    assert findings.orphans == ("lost",)
    assert findings.by_path[Path.NEW]["orphans"] == 1
    assert paths.new.reconcile_counts() == {"duplicates": 0, "orphans": 1}


def test_reconciliation_runs_on_its_interval_under_a_lease(paths: Paths) -> None:
    """tick runs at most once per interval, only where the 'reconcile' lease is held, and hands
    its findings on."""
    paths.ledger.try_lease("reconcile", "someone-else", paths.now, 100.0)
    paths.reconciler.tick(paths.now)
    assert paths.found == []
    paths.reconciler.tick(paths.now + 10)
    assert paths.found == []
    paths.reconciler.tick(paths.now + 301)
    assert len(paths.found) == 1
