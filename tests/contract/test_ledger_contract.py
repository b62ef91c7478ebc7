"""The ledger contract: every implementation must pass these, unchanged."""

from __future__ import annotations

import pytest

from controller.core.domain import ConversionRequest, ConversionState, Path
from controller.core.errors import ConflictError, NotFoundError
from controller.core.ports import Claim, Dispatched, Finish, FinishedConversion, PathHistory, Route
from controller.core.requeue import requeued
from controller.engine.claims import batch_claims
from flags.snapshot import FlagSnapshot

S = ConversionState


def req(cid: str, tenant: int = 1, **params: str) -> ConversionRequest:
    return ConversionRequest(cid, tenant, dict(params))


def claim(ledger, cid: str, path: Path = Path.NEW, version: str = "v1", now: float = 10.0):
    record = ledger.unclaimed(10_000)
    match = [r for r in record if r.conversion_id == cid]
    request = match[0].request if match else req(cid)
    return ledger.claim([Claim(request, path, version, "because")], now)[0]


def dispatch(ledger, cid: str, job: str = "job-1", now: float = 20.0):
    record = ledger.get(cid)
    taken = ledger.mark_dispatching([record], "batch-1", now)
    assert len(taken) == 1
    assert ledger.mark_dispatched([Dispatched(cid, taken[0].fence, job)], now) == [cid]
    return ledger.get(cid)


def test_accept_is_idempotent_and_reports_duplicates(ledger):
    first = ledger.accept([req("a"), req("b", 2, report="x")], 1.0)
    again = ledger.accept([req("b", 2, report="x"), req("c")], 2.0)  # "b" sent again as it was
    assert first.accepted == ["a", "b"]
    assert first.duplicates == []
    assert again.accepted == ["c"]
    assert again.duplicates == ["b"]
    b = ledger.get("b")
    assert b.state is S.RECEIVED
    assert b.tenant_id == 2
    assert b.params == {"report": "x"}


def test_unclaimed_returns_received_requests_in_arrival_order(ledger):
    ledger.accept([req(f"r{i}") for i in range(5)], 1.0)
    claim(ledger, "r1")
    assert [r.conversion_id for r in ledger.unclaimed(10)] == ["r0", "r2", "r3", "r4"]
    assert [r.conversion_id for r in ledger.unclaimed(2)] == ["r0", "r2"]


def test_first_claim_wins_and_later_claims_see_the_owner(ledger):
    ledger.accept([req("x")], 1.0)
    first = ledger.claim([Claim(req("x"), Path.NEW, "v1", "listed")], 5.0)[0]
    second = ledger.claim([Claim(req("x"), Path.LEGACY, "v2", "not listed")], 6.0)[0]
    assert first.created
    assert not second.created
    assert second.record.path is Path.NEW
    assert second.record.flag_version == "v1"
    stored = ledger.get("x")
    assert (stored.path, stored.flag_version, stored.reason, stored.claimed_at) == (
        Path.NEW,
        "v1",
        "listed",
        5.0,
    )


@pytest.mark.parametrize(
    ("again", "names"),
    [
        (req("b", 3, report="x"), "tenant_id is 2 there and 3 here"),
        (req("b", 2, report="y"), "params['report'] is 'x' there and 'y' here"),
        (req("b", 2), "params['report'] is 'x' there and absent here"),
    ],
)
def test_an_id_sent_again_with_other_content_is_a_conflict_and_records_nothing(ledger, again, names):
    ledger.accept([req("b", 2, report="x")], 1.0)
    with pytest.raises(ConflictError, match="conversion 'b' was already sent with other content") as refused:
        ledger.accept([req("new-1"), again, req("new-2")], 2.0)
    assert names in str(refused.value)
    assert ledger.get("new-1") is None
    assert ledger.get("new-2") is None
    b = ledger.get("b")
    assert (b.tenant_id, b.params, b.received_at) == (2, {"report": "x"}, 1.0)


def test_an_id_twice_in_one_batch_with_other_content_is_a_conflict_too(ledger):
    with pytest.raises(ConflictError, match="tenant_id is 1 there and 2 here"):
        ledger.accept([req("n"), req("dup", 1), req("dup", 2)], 1.0)
    assert ledger.get("n") is None
    assert ledger.get("dup") is None


def test_claim_of_a_request_never_accepted_creates_it(ledger):
    owned = ledger.claim([Claim(req("direct", 9), Path.LEGACY, None, "no flag")], 3.0)[0]
    assert owned.created
    assert ledger.get("direct").state is S.CLAIMED
    assert ledger.get("direct").tenant_id == 9


def test_waiting_lists_the_intake_by_column_in_arrival_order(ledger):
    """The batch port's read: what ``unclaimed`` lists, as two columns."""
    ledger.accept([req(f"w{i}", tenant=i % 3 + 1) for i in range(5)], 1.0)
    claim(ledger, "w1")
    claims = batch_claims(ledger)
    waiting = claims.waiting(10)
    assert list(waiting.conversion_ids) == ["w0", "w2", "w3", "w4"]
    assert list(waiting.tenant_ids) == [1, 3, 1, 2]
    assert list(claims.waiting(2).conversion_ids) == ["w0", "w2"]
    assert list(waiting.conversion_ids) == [r.conversion_id for r in ledger.unclaimed(10)]


def test_a_batch_claim_records_each_tenants_route_and_counts_it(ledger):
    """Every waiting conversion is claimed for its tenant's route, and counted once."""
    ledger.accept([req(f"b{i}", tenant=i % 3 + 1) for i in range(6)], 1.0)
    claims = batch_claims(ledger)
    listed, unlisted = Route(Path.NEW, "v3", "listed"), Route(Path.LEGACY, "v3", "not listed")
    claimed = claims.claim_waiting(claims.waiting(100), [(listed, {1}), (unlisted, {2, 3})], 125.0)
    assert list(claimed.created) == [0, 1, 2, 3, 4, 5]
    assert claimed.per_path == {Path.NEW: 2, Path.LEGACY: 4}
    b0, b1 = ledger.get("b0"), ledger.get("b1")
    assert (b0.state, b0.path, b0.flag_version, b0.reason, b0.claimed_at) == (
        S.CLAIMED,
        Path.NEW,
        "v3",
        "listed",
        125.0,
    )
    assert (b1.state, b1.path, b1.reason) == (S.CLAIMED, Path.LEGACY, "not listed")
    counts = ledger.counts()
    assert counts.state(S.RECEIVED) == 0
    assert counts.path_state(Path.NEW, S.CLAIMED) == 2
    assert counts.path_state(Path.LEGACY, S.CLAIMED) == 4
    totals = {(m, p, v): n for m, p, v, n in ledger.decisions_since(0.0)}
    assert totals == {(2, Path.NEW, "v3"): 2, (2, Path.LEGACY, "v3"): 4}
    assert list(claims.waiting(100).conversion_ids) == []


def test_a_batch_claim_never_takes_a_conversion_owned_meanwhile(ledger):
    """First claim wins: a conversion another replica claimed after the read keeps its owner."""
    ledger.accept([req(f"o{i}", tenant=1) for i in range(4)], 1.0)
    claims = batch_claims(ledger)
    stale = claims.waiting(100)
    ledger.claim([Claim(req("o2", 1), Path.LEGACY, "v1", "first")], 5.0)
    claimed = claims.claim_waiting(stale, [(Route(Path.NEW, "v2", "second"), {1})], 6.0)
    assert list(claimed.created) == [0, 1, 3]
    assert claimed.per_path == {Path.NEW: 3}
    o2 = ledger.get("o2")
    assert (o2.path, o2.flag_version, o2.reason) == (Path.LEGACY, "v1", "first")
    counts = ledger.counts()
    assert (counts.path_state(Path.NEW, S.CLAIMED), counts.path_state(Path.LEGACY, S.CLAIMED)) == (3, 1)
    assert counts.state(S.RECEIVED) == 0
    totals = {(m, p, v): n for m, p, v, n in ledger.decisions_since(0.0)}
    assert totals == {(0, Path.LEGACY, "v1"): 1, (0, Path.NEW, "v2"): 3}


def test_a_batch_claim_without_one_route_per_tenant_writes_nothing(ledger):
    """A tenant with no route, or with two, is refused before anything is written."""
    ledger.accept([req("u1", 1), req("u2", 2)], 1.0)
    claims = batch_claims(ledger)
    waiting = claims.waiting(10)
    new, old = Route(Path.NEW, "v1", "x"), Route(Path.LEGACY, "v1", "y")
    with pytest.raises(ValueError, match=r"no route for tenants \[2\]"):
        claims.claim_waiting(waiting, [(new, {1})], 2.0)
    with pytest.raises(ValueError, match=r"tenants \[2\] have two routes"):
        claims.claim_waiting(waiting, [(new, {1, 2}), (old, {2})], 2.0)
    assert [r.conversion_id for r in ledger.unclaimed(10)] == ["u1", "u2"]
    assert ledger.counts().state(S.RECEIVED) == 2
    assert ledger.decisions_since(0.0) == []


def test_dispatch_records_intent_under_a_new_fence_then_the_job(ledger):
    ledger.accept([req("d")], 1.0)
    claim(ledger, "d")
    before = ledger.get("d")
    taken = ledger.mark_dispatching([before], "batch-7", 20.0)
    assert [t.conversion_id for t in taken] == ["d"]
    assert taken[0].fence == before.fence + 1
    mid = ledger.get("d")
    assert (mid.state, mid.intent, mid.attempts) == (S.DISPATCHING, "batch-7", 1)
    assert ledger.mark_dispatching([before], "batch-8", 21.0) == []  # someone else took it
    assert ledger.mark_dispatched([Dispatched("d", before.fence, "stale")], 22.0) == []  # old fence
    assert ledger.mark_dispatched([Dispatched("d", taken[0].fence, "job-9")], 22.0) == ["d"]
    done = ledger.get("d")
    assert (done.state, done.job_ref, done.dispatched_at) == (S.DISPATCHED, "job-9", 22.0)


def test_intents_and_release(ledger):
    ledger.accept([req("i1"), req("i2")], 1.0)
    claim(ledger, "i1")
    claim(ledger, "i2")
    ledger.mark_dispatching([ledger.get("i1")], "b", 10.0)
    ledger.mark_dispatching([ledger.get("i2")], "b", 50.0)
    assert [r.conversion_id for r in ledger.intents(older_than=30.0, limit=10)] == ["i1"]
    i1 = ledger.get("i1")
    assert ledger.release([("i1", i1.fence - 1)], 60.0, "x") == 0
    assert ledger.release([("i1", i1.fence)], 60.0, "backend never got it") == 1
    assert ledger.get("i1").state is S.CLAIMED
    assert ledger.get("i1").path is Path.NEW


def test_finish_is_compare_and_set_and_never_goes_backwards(ledger):
    ledger.accept([req("f")], 1.0)
    claim(ledger, "f")
    record = dispatch(ledger, "f")
    assert ledger.mark_finished([Finish("f", record.fence, S.SUCCEEDED, "out.xlsx")], 30.0) == ["f"]
    assert ledger.mark_finished([Finish("f", record.fence, S.FAILED, "late")], 31.0) == []
    assert ledger.mark_dispatched([Dispatched("f", record.fence, "again")], 32.0) == []
    assert ledger.resubmit("f", record.fence, "x", 33.0) is False
    assert ledger.mark_dispatching([ledger.get("f")], "b", 34.0) == []
    final = ledger.get("f")
    assert (final.state, final.reason, final.finished_at) == (S.SUCCEEDED, "out.xlsx", 30.0)


def test_finish_keeps_the_jobs_own_timing_and_requeue_forgets_it(ledger):
    """The job's run time and start as it reported them, and when it took its slot as the backend
    told, are kept with the outcome; a record finished without them has none, and an operator's
    requeue drops them with the rest of the attempt."""
    ledger.accept([req("t1"), req("t2")], 1.0)
    claim(ledger, "t1")
    claim(ledger, "t2")
    one, two = dispatch(ledger, "t1"), dispatch(ledger, "t2")
    finishes = [
        Finish("t1", one.fence, S.FAILED, "boom", 5.75, 21.5, 20.25),
        Finish("t2", two.fence, S.SUCCEEDED),
    ]
    assert ledger.mark_finished(finishes, 30.0) == ["t1", "t2"]
    timed, untimed = ledger.get("t1"), ledger.get("t2")
    assert (timed.work_seconds, timed.work_started_at, timed.slot_at, timed.finished_at) == (
        5.75,
        21.5,
        20.25,
        30.0,
    )
    assert (untimed.work_seconds, untimed.work_started_at, untimed.slot_at) == (None, None, None)
    freed = ledger.requeue("t1", 40.0)
    assert (freed.work_seconds, freed.work_started_at, freed.slot_at) == (None, None, None)
    again = ledger.get("t1")
    assert (again.work_seconds, again.work_started_at, again.slot_at) == (None, None, None)


def test_resubmit_keeps_the_path_and_fences_out_the_old_attempt(ledger):
    ledger.accept([req("r")], 1.0)
    claim(ledger, "r", Path.LEGACY)
    first = dispatch(ledger, "r")
    assert ledger.resubmit("r", first.fence, "attempt 1 failed", 30.0)
    again = ledger.get("r")
    assert (again.state, again.path) == (S.CLAIMED, Path.LEGACY)
    second = dispatch(ledger, "r", "job-2", 40.0)
    assert second.fence > first.fence
    assert second.attempts == 2
    assert ledger.mark_finished([Finish("r", first.fence, S.SUCCEEDED)], 50.0) == []
    assert ledger.mark_finished([Finish("r", second.fence, S.FAILED, "boom")], 51.0) == ["r"]


def test_requeue_only_from_failed(ledger):
    ledger.accept([req("q")], 1.0)
    with pytest.raises(ConflictError, match="only a failed"):
        ledger.requeue("q", 2.0)
    with pytest.raises(NotFoundError):
        ledger.requeue("nope", 2.0)
    claim(ledger, "q")
    record = dispatch(ledger, "q")
    ledger.mark_finished([Finish("q", record.fence, S.FAILED, "boom")], 30.0)
    freed = ledger.requeue("q", 40.0)
    assert (freed.state, freed.path, freed.job_ref) == (S.RECEIVED, None, None)
    assert [r.conversion_id for r in ledger.unclaimed(10)] == ["q"]
    owned = claim(ledger, "q", Path.LEGACY, "v2", 50.0)
    assert owned.created
    assert ledger.get("q").path is Path.LEGACY


def test_requeue_stores_the_reset_the_core_defines(ledger):
    """Both ledgers hold, and answer, exactly what ``requeued`` makes of the failed record, and the
    counters move with it."""
    ledger.accept([req("r", 3, form="all")], 1.0)
    claim(ledger, "r")
    record = dispatch(ledger, "r")
    ledger.mark_finished([Finish("r", record.fence, S.FAILED, "boom")], 30.0)
    failed = ledger.get("r")
    freed = ledger.requeue("r", 40.0)
    assert freed == requeued(failed, 40.0)
    assert ledger.get("r") == freed
    counts = ledger.counts()
    assert (counts.state(S.FAILED), counts.state(S.RECEIVED)) == (0, 1)
    assert counts.path_state(Path.NEW, S.FAILED) == 0


def test_counts_follow_every_transition(ledger):
    ledger.accept([req(f"n{i}") for i in range(4)], 1.0)
    claim(ledger, "n0", Path.NEW)
    claim(ledger, "n1", Path.LEGACY)
    record = dispatch(ledger, "n0")
    ledger.mark_finished([Finish("n0", record.fence, S.SUCCEEDED)], 30.0)
    counts = ledger.counts()
    assert counts.state(S.RECEIVED) == 2
    assert counts.state(S.CLAIMED) == 1
    assert counts.state(S.SUCCEEDED) == 1
    assert counts.path_state(Path.NEW, S.SUCCEEDED) == 1
    assert counts.path_state(Path.LEGACY, S.CLAIMED) == 1
    assert counts.state(S.DISPATCHED) == 0


def test_state_queries(ledger):
    ledger.accept([req(f"s{i}", tenant=i % 2 + 1) for i in range(6)], 1.0)
    for i in range(4):
        claim(ledger, f"s{i}", Path.NEW if i % 2 else Path.LEGACY)
    dispatch(ledger, "s1")
    assert [r.conversion_id for r in ledger.pending_dispatch(Path.NEW, 10)] == ["s3"]
    assert [r.conversion_id for r in ledger.pending_dispatch(Path.LEGACY, 10)] == ["s0", "s2"]
    assert [r.conversion_id for r in ledger.in_flight(Path.NEW, 10)] == ["s1"]
    assert [r.conversion_id for r in ledger.by_tenant(2, 10)] == ["s5", "s3", "s1"]


def test_query_pages_through_everything_once(ledger):
    ledger.accept([req(f"p{i:03d}", tenant=i % 3 + 1) for i in range(25)], 1.0)
    seen, cursor = [], None
    while True:
        page, cursor = ledger.query(limit=7, after=cursor)
        seen += [r.conversion_id for r in page]
        if cursor is None:
            break
    assert seen == [f"p{i:03d}" for i in range(25)]
    tenant_two, _ = ledger.query(tenant_id=2, limit=100)
    assert {r.tenant_id for r in tenant_two} == {2}
    assert len(tenant_two) == 8
    received, _ = ledger.query(state=S.RECEIVED, path=None, limit=100)
    assert len(received) == 25


def test_the_latest_conversion_on_a_path_is_the_last_to_arrive_whatever_its_state(ledger):
    """For ledgers that offer it (``PathHistory``): what ``cutover decommission`` names as the old
    path's last conversion."""
    if not isinstance(ledger, PathHistory):
        pytest.skip("this ledger does not offer latest_on_path")
    assert ledger.latest_on_path(Path.LEGACY) is None
    ledger.accept([req(f"h{i}", tenant=i) for i in range(4)], 1.0)
    claim(ledger, "h0", Path.LEGACY)
    claim(ledger, "h1", Path.LEGACY)
    claim(ledger, "h2", Path.NEW)
    record = dispatch(ledger, "h1")
    ledger.mark_finished([Finish("h1", record.fence, S.SUCCEEDED)], 30.0)
    assert ledger.latest_on_path(Path.LEGACY).conversion_id == "h1"
    assert ledger.latest_on_path(Path.NEW).conversion_id == "h2"
    claim(ledger, "h3", Path.LEGACY)
    assert ledger.latest_on_path(Path.LEGACY).conversion_id == "h3"


def test_decisions_are_totalled_per_minute_path_and_version(ledger):
    ledger.accept([req(f"m{i}") for i in range(3)], 1.0)
    claim(ledger, "m0", Path.NEW, "v1", now=120.0)
    claim(ledger, "m1", Path.NEW, "v2", now=130.0)
    claim(ledger, "m2", Path.LEGACY, "v2", now=200.0)
    totals = {(m, p, v): n for m, p, v, n in ledger.decisions_since(60.0)}
    assert totals == {(2, Path.NEW, "v1"): 1, (2, Path.NEW, "v2"): 1, (3, Path.LEGACY, "v2"): 1}


def test_tenant_activity_counts_conversions_received_since_a_time(ledger):
    ledger.accept([req("t1-old", 1)], 100.0)
    ledger.accept([req("t1-a", 1), req("t1-b", 1), req("t2-a", 2)], 200.0)
    claim(ledger, "t1-a", now=210.0)
    ledger.accept([req("t3-a", 3)], 300.0)
    assert ledger.tenant_activity(150.0) == {1: 2, 2: 1, 3: 1}
    assert ledger.tenant_activity(250.0) == {3: 1}
    assert ledger.tenant_activity(400.0) == {}


def test_finished_since_gives_the_gates_their_evidence(ledger):
    """Finished conversions on both paths with tenant, attempts, claim time, dispatch-to-outcome
    seconds and the job's own run time when it gave one; conversions still at work and those
    finished before ``since`` are left out."""
    ledger.accept([req("ok", 1), req("bad", 2), req("again", 3), req("busy", 4), req("early", 5)], 1.0)
    claim(ledger, "ok", Path.NEW, now=10.0)
    claim(ledger, "bad", Path.LEGACY, now=11.0)
    claim(ledger, "again", Path.NEW, now=12.0)
    claim(ledger, "busy", Path.NEW, now=13.0)
    claim(ledger, "early", Path.LEGACY, now=14.0)
    done = {cid: dispatch(ledger, cid, f"job-{cid}", 20.0) for cid in ("ok", "bad", "again", "busy", "early")}
    ledger.mark_finished([Finish("early", done["early"].fence, S.SUCCEEDED)], 25.0)
    ledger.mark_finished([Finish("ok", done["ok"].fence, S.SUCCEEDED, "out.xlsx", 21.5)], 50.0)
    ledger.mark_finished([Finish("bad", done["bad"].fence, S.FAILED, "boom")], 52.0)
    assert ledger.resubmit("again", done["again"].fence, "attempt 1 failed", 30.0)
    second = dispatch(ledger, "again", "job-again-2", 40.0)
    ledger.mark_finished([Finish("again", second.fence, S.SUCCEEDED)], 55.0)
    rows = sorted(ledger.finished_since(30.0), key=lambda r: r.tenant_id)
    assert rows == [
        FinishedConversion(1, Path.NEW, S.SUCCEEDED, 1, 10.0, 50.0, 30.0, 21.5),
        FinishedConversion(2, Path.LEGACY, S.FAILED, 1, 11.0, 52.0, 32.0),
        FinishedConversion(3, Path.NEW, S.SUCCEEDED, 2, 12.0, 55.0, 15.0),
    ]
    assert {r.tenant_id for r in ledger.finished_since(0.0)} == {1, 2, 3, 5}
    assert ledger.finished_since(60.0) == []
    assert (ledger.get("ok").work_seconds, ledger.get("bad").work_seconds) == (21.5, None)


def test_requeue_forgets_the_run_time_of_the_failed_attempt(ledger):
    ledger.accept([req("w")], 1.0)
    claim(ledger, "w")
    record = dispatch(ledger, "w")
    ledger.mark_finished([Finish("w", record.fence, S.FAILED, "boom", 4.0)], 30.0)
    assert ledger.get("w").work_seconds == 4.0
    assert ledger.requeue("w", 40.0).work_seconds is None
    assert ledger.get("w").work_seconds is None


def test_last_known_good_flag_round_trips(ledger):
    assert ledger.load_flag() is None
    snap = FlagSnapshot("12", True, frozenset({5, 3}), "agent", 99.5, duplicates_folded=2)
    ledger.save_flag(snap)
    assert ledger.load_flag() == snap
    newer = FlagSnapshot("13", False, frozenset(), "agent", 120.0)
    ledger.save_flag(newer)
    assert ledger.load_flag() == newer


def test_lease_has_one_holder_until_it_expires(ledger):
    assert ledger.try_lease("dispatch", "a", 100.0, 30.0)
    assert not ledger.try_lease("dispatch", "b", 110.0, 30.0)
    assert ledger.try_lease("dispatch", "a", 120.0, 30.0)  # renewal
    assert not ledger.try_lease("dispatch", "b", 149.0, 30.0)
    assert ledger.try_lease("dispatch", "b", 151.0, 30.0)  # expired
    assert not ledger.try_lease("dispatch", "a", 152.0, 30.0)
    assert ledger.try_lease("other", "a", 152.0, 30.0)


def test_a_lease_given_up_by_its_holder_is_free_at_once(ledger):
    assert ledger.try_lease("dispatch", "a", 100.0, 30.0)
    assert not ledger.end_lease("dispatch", "b")  # not b's to give up
    assert not ledger.try_lease("dispatch", "b", 101.0, 30.0)
    assert ledger.end_lease("dispatch", "a")
    assert not ledger.end_lease("dispatch", "a")  # already given up
    assert ledger.try_lease("dispatch", "b", 102.0, 30.0)  # long before a's would have expired
    assert not ledger.try_lease("dispatch", "a", 103.0, 30.0)
    assert not ledger.end_lease("never-taken", "a")


def test_values_are_kept_by_name_apart_from_the_flag(ledger):
    assert ledger.get_value("finder:sql") is None
    ledger.put_value("finder:sql", '{"watermark": "a"}', 1.0)
    ledger.put_value("finder:sql", '{"watermark": "b"}', 2.0)
    ledger.put_value("last_known_good", "not the flag", 3.0)
    assert ledger.get_value("finder:sql") == '{"watermark": "b"}'
    assert ledger.load_flag() is None


def test_ping_answers(ledger):
    ledger.ping()
