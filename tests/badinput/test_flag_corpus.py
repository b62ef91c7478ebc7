"""Bad flag documents are rejected whole, wherever they enter; the last good flag outlives every one.

Promise 3 (safe by default): a malformed new version never un-migrates anyone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.core.errors import FlagInvalidError
from controller.ledger.sqlite import SQLiteLedger
from flags.document import MAX_TENANT_ID, parse_flag
from flags.file_source import FileFlagSource, write_atomically
from flags.lkg import LastKnownGood
from flags.snapshot import FlagState
from tests.badinput.flag_corpus import BAD_DOCUMENTS, GOOD, KEY, Bad
from tests.fakes import FakeClock, FakeFlagSource

PROPERTY = settings(max_examples=150, deadline=None, database=None)


def parse(raw: bytes | str, version: str | None = None):
    return parse_flag(raw, flag_key=KEY, source="test", fetched_at=1.0, version=version)


def test_the_corpus_is_large_and_every_entry_is_distinct():
    """The corpus covers at least 40 distinct bad documents (issue's floor), no two alike."""
    assert len(BAD_DOCUMENTS) >= 40
    assert len({b.id for b in BAD_DOCUMENTS}) == len(BAD_DOCUMENTS)
    assert len({b.raw for b in BAD_DOCUMENTS}) == len(BAD_DOCUMENTS)


def test_the_corpus_starts_from_a_good_document():
    """The documents are bad because of what was changed, not because the base was already wrong."""
    snap = parse(GOOD)
    assert snap.enabled
    assert snap.tenant_ids == frozenset({1, 2, 3})


@pytest.mark.parametrize("bad", BAD_DOCUMENTS, ids=lambda b: b.id)
def test_parse_rejects_each_bad_document_whole_naming_the_place(bad: Bad):
    """Promise 3: every bad document raises FlagInvalidError (nothing else) whose message locates it."""
    with pytest.raises(FlagInvalidError) as err:
        parse(bad.raw)
    assert bad.where in str(err.value)


@pytest.mark.parametrize("bad", BAD_DOCUMENTS, ids=lambda b: b.id)
def test_last_known_good_keeps_the_good_flag_through_each_bad_file(bad: Bad, tmp_path: Path):
    """Promise 3: a bad file after a good one leaves the good flag in force and persisted, state `invalid`."""
    clock = FakeClock()
    flag_file = tmp_path / "flags.json"
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    try:
        lkg = LastKnownGood(FileFlagSource(flag_file, KEY, clock), ledger, clock)
        write_atomically(flag_file, GOOD.encode())
        good = lkg.read()
        assert good.state is FlagState.OK
        write_atomically(flag_file, bad.raw)
        clock.advance(7)
        status = lkg.read()
        assert status.state is FlagState.INVALID
        assert status.snapshot is not None
        assert status.snapshot.tenant_ids == frozenset({1, 2, 3})
        assert status.snapshot.enabled
        assert status.age_seconds == 7
        assert bad.where in status.problem
        assert str(flag_file) in status.problem
        persisted = ledger.load_flag()
        assert persisted is not None
        assert persisted.version == good.snapshot.version
        restarted = LastKnownGood(FileFlagSource(flag_file, KEY, clock), ledger, clock).read()
        assert restarted.state is FlagState.INVALID
        assert restarted.snapshot is not None
        assert restarted.snapshot.tenant_ids == frozenset({1, 2, 3})
    finally:
        ledger.close()


# -- properties ------------------------------------------------------------------------------

tenant_ids = st.integers(min_value=1, max_value=MAX_TENANT_ID)


@st.composite
def flag_documents(draw) -> tuple[str, bool, list[int]]:
    """A valid document in one of the forms AppConfig produces, with its meaning."""
    enabled = draw(st.booleans())
    ids = draw(st.lists(tenant_ids, max_size=30))
    extra = draw(st.dictionaries(st.sampled_from(["note", "owner", "ticket"]), st.text(max_size=10)))
    value: dict = {**extra, "enabled": enabled}
    if enabled or draw(st.booleans()):
        value["tenant_ids"] = ids
    others = draw(st.dictionaries(st.sampled_from(["dark_mode", "beta"]), st.just({"enabled": False})))
    form = draw(st.sampled_from(["values", "definition", "definition-with-other-flags"]))
    if form == "values":
        doc: dict = {**others, KEY: value}
    else:
        flags = {KEY: {"name": "Migrated tenants"}}
        if form == "definition-with-other-flags":
            flags.update({k: {"name": k} for k in others})
        doc = {"version": "1", "flags": flags, "values": {**others, KEY: value}}
    indent = draw(st.sampled_from([None, 0, 2]))
    return json.dumps(doc, indent=indent, sort_keys=draw(st.booleans())), enabled, ids


@PROPERTY
@given(flag_documents(), st.one_of(st.none(), st.text(min_size=1, max_size=8)))
def test_any_valid_document_round_trips(case, version):
    """Promise 3's other half: a valid document is accepted with exactly the tenants it lists."""
    raw, enabled, ids = case
    snap = parse(raw, version)
    assert snap.enabled is enabled
    assert snap.tenant_ids == (frozenset(ids) if enabled else frozenset())
    assert snap.duplicates_folded == (len(ids) - len(set(ids)) if enabled else 0)
    for tenant in ids:
        assert snap.migrated(tenant) is enabled
    if version is not None:
        assert snap.version == version
    else:
        assert parse(raw.encode()).version == snap.version


bad_ids = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=MAX_TENANT_ID + 1),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=1, max_value=10**6).map(str),
    st.text(max_size=5),
    st.lists(st.integers(min_value=1, max_value=9), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
bad_enabled = st.one_of(
    st.none(),
    st.integers(),
    st.sampled_from(["true", "false", "yes", "on", ""]),
    st.lists(st.booleans(), max_size=1),
    st.floats(allow_nan=False, allow_infinity=False),
)


@PROPERTY
@given(st.lists(tenant_ids, min_size=1, max_size=30), st.data())
def test_one_bad_tenant_id_anywhere_rejects_the_whole_document(ids, data):
    """Promise 3: one bad id among good ones rejects everything, naming that id's index."""
    at = data.draw(st.integers(min_value=0, max_value=len(ids)), label="at")
    bad = data.draw(bad_ids, label="bad")
    tampered = [*ids[:at], bad, *ids[at:]]
    enabled = data.draw(st.booleans(), label="enabled")
    raw = json.dumps({KEY: {"enabled": enabled, "tenant_ids": tampered}})
    with pytest.raises(FlagInvalidError) as err:
        parse(raw)
    assert f"{KEY}.tenant_ids[{at}]" in str(err.value)


@PROPERTY
@given(st.lists(tenant_ids, max_size=10), bad_enabled)
def test_a_bad_enabled_rejects_the_whole_document(ids, enabled):
    """Promise 3: `enabled` must be a JSON boolean; anything else rejects the document."""
    raw = json.dumps({KEY: {"enabled": enabled, "tenant_ids": ids}})
    with pytest.raises(FlagInvalidError) as err:
        parse(raw)
    assert f"{KEY}.enabled" in str(err.value)


surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)


@PROPERTY
@given(st.one_of(st.binary(max_size=200), st.text(st.one_of(st.characters(), surrogates), max_size=200)))
def test_arbitrary_input_gives_a_snapshot_or_flag_invalid_and_nothing_else(raw):
    """Promise 3: whatever a source answers, the parser fails only with FlagInvalidError."""
    try:
        snap = parse(raw)
    except FlagInvalidError:
        return
    assert isinstance(snap.tenant_ids, frozenset)


documents = st.one_of(
    st.sampled_from(BAD_DOCUMENTS),
    st.builds(
        lambda enabled, ids: json.dumps({KEY: {"enabled": enabled, "tenant_ids": ids}}),
        st.booleans(),
        st.lists(st.integers(min_value=1, max_value=50), max_size=5),
    ),
    st.just(None),  # the source is down
)


@settings(PROPERTY, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(documents, min_size=1, max_size=12))
def test_last_known_good_is_never_replaced_by_a_bad_document(sequence):
    """Promise 3: over any run of answers, the flag in force is the latest good one, and it is persisted."""
    clock = FakeClock()
    source = FakeFlagSource(clock, KEY)

    class Store:
        saved = None

        def save_flag(self, snapshot):
            self.saved = snapshot

        def load_flag(self):
            return self.saved

    store = Store()
    lkg = LastKnownGood(source, store, clock)
    latest_good: tuple[bool, frozenset[int]] | None = None
    for answer in sequence:
        clock.advance(1)
        source.down = answer is None
        if isinstance(answer, Bad):
            source.garbage = answer.raw
        else:
            source.garbage = None
            if isinstance(answer, str):
                source.serve(answer, None)
                doc = json.loads(answer)[KEY]
                latest_good = (
                    doc["enabled"],
                    frozenset(doc["tenant_ids"]) if doc["enabled"] else frozenset(),
                )
        status = lkg.read()
        if isinstance(answer, Bad):
            assert status.state is FlagState.INVALID
            assert answer.where in status.problem
        elif answer is None:
            assert status.state is FlagState.UNAVAILABLE
        if latest_good is None:
            assert status.snapshot is None
            assert store.saved is None
        else:
            assert status.snapshot is not None
            assert (status.snapshot.enabled, status.snapshot.tenant_ids) == latest_good
            assert (store.saved.enabled, store.saved.tenant_ids) == latest_good


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
flag_values = st.one_of(
    json_values,
    st.fixed_dictionaries({"enabled": json_values, "tenant_ids": json_values}),
    st.fixed_dictionaries({"enabled": st.booleans(), "tenant_ids": st.lists(json_values, max_size=4)}),
)


@PROPERTY
@given(flag_values)
def test_a_document_is_accepted_only_when_every_value_in_it_is_valid(value):
    """Promise 3: whatever JSON stands at the flag's place, acceptance implies a well-formed flag."""
    raw = json.dumps({KEY: value})
    try:
        snap = parse(raw)
    except FlagInvalidError:
        return
    assert isinstance(value, dict)
    assert value["enabled"] is True or value["enabled"] is False
    ids = value.get("tenant_ids")
    if value["enabled"]:
        assert isinstance(ids, list)
    for tenant in ids or []:
        assert type(tenant) is int
        assert 1 <= tenant <= MAX_TENANT_ID
    assert snap.tenant_ids == (frozenset(ids) if value["enabled"] else frozenset())
