"""Scheduled finders: each due run once across replicas, failures cost the run and nothing else."""

from __future__ import annotations

import threading
import time

import pytest

from controller.core.domain import ConversionRequest, ConversionState
from controller.core.errors import LedgerError
from controller.core.schedule import parse_schedule
from controller.intake.finder import FinderRunner, Found
from controller.settings import Settings


def runner(ledger, clock, finder, holder="a", timeout=5.0, every="60"):
    return FinderRunner(
        "orders",
        finder,
        parse_schedule(every),
        ledger=ledger,
        settings=Settings(),
        clock=clock,
        holder=holder,
        timeout=timeout,
    )


def received(ledger) -> int:
    return ledger.counts().state(ConversionState.RECEIVED)


def test_a_slot_runs_once_and_the_watermark_moves_forward(sqlite_ledger, clock):
    """The schedule firing twice in a slot runs once; the next slot sees the previous watermark."""
    seen: list[str | None] = []

    def finder(ctx):
        seen.append(ctx.watermark)
        n = len(seen)
        return Found([ConversionRequest(f"o{n}", 5, {"n": str(n)})], watermark=f"w{n}")

    r = runner(sqlite_ledger, clock, finder)
    assert r.run_due()
    assert not r.run_due()
    clock.advance(60)
    assert r.run_due()
    assert seen == [None, "w1"]
    assert received(sqlite_ledger) == 2
    assert r.stats.watermark == "w2"


def test_same_conversion_found_twice_is_one_conversion(sqlite_ledger, clock):
    def finder(ctx):
        return [ConversionRequest("same", 1, {}), {"conversion_id": "same", "tenant_id": 1}]

    r = runner(sqlite_ledger, clock, finder)
    r.run_due()
    clock.advance(60)
    r.run_due()
    assert received(sqlite_ledger) == 1
    assert r.stats.found == 4
    assert r.stats.accepted == 1
    assert r.stats.duplicates == 3


@pytest.mark.parametrize(
    ("answer", "needle"),
    [
        ({"not": "a list"}, "must return a list or Found"),
        ([object()], "not data"),
        (Found([{"conversion_id": "x", "tenant_id": 1}], watermark=7), "watermark must be a string"),  # type: ignore[arg-type]
    ],
)
def test_garbage_answer_accepts_nothing_and_keeps_the_watermark(sqlite_ledger, clock, answer, needle):
    r = runner(sqlite_ledger, clock, lambda ctx: answer)
    r.run_due()
    assert received(sqlite_ledger) == 0
    assert r.stats.errors == 1
    assert needle in r.stats.last_error
    assert sqlite_ledger.get_value("intake:finder:orders") is None  # the slot will be tried again


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({"conversion_id": "bad", "tenant_id": 0}, "conversions[1].tenant_id: must be a whole number from 1"),
        ({"conversion_id": "../etc", "tenant_id": 1}, '"conversion_id": "../etc"'),
        ({"conversion_id": "big", "tenant_id": 2**53}, '"tenant_id": 9007199254740992'),
        (
            {"conversion_id": "k", "tenant_id": "x", "params": {"s3_key": "in/7.json"}},
            '"s3_key": "in/7.json"',
        ),
        ("a string", "conversions[1]: expected an object"),
    ],
)
def test_a_bad_item_is_skipped_and_reported_and_the_rest_is_taken_in(sqlite_ledger, clock, bad, needle):
    """Garbage costs only itself: one bad row or object must not stop the finder for ever (the
    watermark would never move past it, and every valid item behind it would wait with it)."""
    answer = Found(
        [{"conversion_id": "ok-1", "tenant_id": 1}, bad, {"conversion_id": "ok-2", "tenant_id": 2}],
        watermark="w2",
    )
    r = runner(sqlite_ledger, clock, lambda ctx: answer)
    assert r.run_due()
    assert received(sqlite_ledger) == 2
    assert (r.stats.found, r.stats.accepted, r.stats.malformed, r.stats.errors) == (2, 2, 1, 0)
    assert needle in r.stats.last_error
    assert r.stats.watermark == "w2"
    assert "w2" in (sqlite_ledger.get_value("intake:finder:orders") or "")
    clock.advance(60)
    assert r.run_due()  # the next slot runs as usual


def test_a_raising_finder_is_reported_and_retried_next_tick(sqlite_ledger, clock):
    calls = []

    def finder(ctx):
        calls.append(ctx.slot)
        if len(calls) == 1:
            raise RuntimeError("database is down")
        return [ConversionRequest("later", 2, {})]

    r = runner(sqlite_ledger, clock, finder)
    r.run_due()
    assert r.stats.last_error == "raised RuntimeError: database is down"
    assert r.run_due()  # same slot, not done yet
    assert calls[0] == calls[1]
    assert received(sqlite_ledger) == 1
    assert r.stats.last_error == ""


def test_a_hung_finder_times_out_without_blocking_and_is_not_started_twice(sqlite_ledger):
    release = threading.Event()
    calls = []

    def finder(ctx):
        calls.append(1)
        release.wait(10)
        return []

    r = runner(sqlite_ledger, time.time, finder, timeout=0.2)
    started = time.monotonic()
    r.run_due()
    assert time.monotonic() - started < 2
    assert "timed out after" in r.stats.last_error
    r.run_due()
    assert "still hung" in r.stats.last_error
    assert len(calls) == 1
    release.set()


def test_three_replicas_run_each_due_slot_once(sqlite_ledger, clock):
    """Three controllers share one ledger: the lease and the recorded slot make one run per slot."""
    calls: list[tuple[str, float]] = []

    def finder_for(name):
        def finder(ctx):
            calls.append((name, ctx.slot))
            return [ConversionRequest(f"s{int(ctx.slot)}", 1, {})]

        return finder

    replicas = [runner(sqlite_ledger, clock, finder_for(n), holder=n) for n in "abc"]
    for _ in range(5):
        threads = [threading.Thread(target=r.run_due) for r in replicas]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        clock.advance(60)
    assert len(calls) == 5
    assert len({slot for _, slot in calls}) == 5
    assert received(sqlite_ledger) == 5


class FailingAccept:
    """A ledger whose intake write fails once (the store is briefly unreachable)."""

    def __init__(self, inner):
        self.inner = inner
        self.fail = True

    def accept(self, requests, now):
        if self.fail:
            self.fail = False
            raise LedgerError("ledger unreachable")
        return self.inner.accept(requests, now)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_watermark_moves_only_after_the_conversions_are_durable(sqlite_ledger, clock):
    seen = []

    def finder(ctx):
        seen.append(ctx.watermark)
        return Found([ConversionRequest("w", 1, {})], watermark="after-w")

    r = runner(FailingAccept(sqlite_ledger), clock, finder)
    r.run_due()
    assert "ledger unreachable" in r.stats.last_error
    r.run_due()
    assert seen == [None, None]
    assert received(sqlite_ledger) == 1
    assert r.stats.watermark == "after-w"
