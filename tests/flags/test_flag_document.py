"""Validating the flag document as a whole: what is accepted, what is rejected, and the message."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.errors import FlagInvalidError
from flags.document import (
    MAX_DOCUMENT_BYTES,
    MAX_TENANT_ID,
    definition_document,
    parse_flag,
    read_values,
    values_document,
    with_values,
)
from flags.file_store import serialize

KEY = "migrated_tenants"
ids_st = st.lists(st.integers(min_value=1, max_value=MAX_TENANT_ID), max_size=60)
BAD_VALUES = [True, False, 0, -1, MAX_TENANT_ID + 1, 1.5, 2.0, 1e3, "7", "", None, [1], {"id": 1}]


def parse(doc: Any, **kw: Any) -> Any:
    return parse_flag(json.dumps(doc), flag_key=KEY, source="test", fetched_at=0.0, **kw)


def shaped(shape: str, enabled: bool, ids: list[Any]) -> Any:
    flag = {"enabled": enabled, "tenant_ids": ids}
    if shape == "values":
        return {KEY: flag, "other": {"enabled": True}}
    if shape == "definition":
        return {"version": "1", "flags": {KEY: {"name": "m"}}, "values": {KEY: flag}}
    return flag


@settings(max_examples=60, deadline=None)
@given(ids=ids_st, enabled=st.booleans(), shape=st.sampled_from(["values", "definition", "flag"]))
def test_any_valid_document_is_read_as_written(ids: list[int], enabled: bool, shape: str) -> None:
    snap = parse(shaped(shape, enabled, ids), shape="flag" if shape == "flag" else "auto")
    assert snap.enabled is enabled
    assert snap.tenant_ids == (frozenset(ids) if enabled else frozenset())
    assert snap.duplicates_folded == ((len(ids) - len(set(ids))) if enabled else 0)
    assert snap.version_from_content


@settings(max_examples=60, deadline=None)
@given(ids=ids_st, enabled=st.booleans(), form=st.sampled_from(["values", "definition"]))
def test_any_flag_written_by_cutover_round_trips(ids: list[int], enabled: bool, form: str) -> None:
    raw = serialize(with_values(None, KEY, enabled, ids, new_form=form))  # type: ignore[arg-type]
    listed_enabled, listed = read_values(json.loads(raw), flag_key=KEY)
    snap = parse_flag(raw, flag_key=KEY, source="test", fetched_at=0.0)
    assert listed_enabled is enabled
    assert snap.tenant_ids == (frozenset(ids) if enabled else frozenset())
    # The definition form keeps the list while switched off, as AppConfig allows.
    assert set(listed) == (set(ids) if enabled or form == "definition" else set())


@settings(max_examples=80, deadline=None)
@given(
    ids=ids_st,
    bad=st.sampled_from(BAD_VALUES) | st.floats(allow_nan=False, allow_infinity=False),
    data=st.data(),
    shape=st.sampled_from(["values", "definition", "flag"]),
)
def test_one_bad_value_rejects_the_whole_document_and_is_named(
    ids: list[int], bad: Any, data: st.DataObject, shape: str
) -> None:
    at = data.draw(st.integers(min_value=0, max_value=len(ids)))
    doc = shaped(shape, True, [*ids[:at], bad, *ids[at:]])
    with pytest.raises(FlagInvalidError) as caught:
        parse(doc, shape="flag" if shape == "flag" else "auto")
    assert f"tenant_ids[{at}]" in str(caught.value)


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (True, "a boolean is not a tenant id"),
        (3.0, "whole number"),
        ("3", "valid integer"),
        (0, "greater than or equal to 1"),
        (MAX_TENANT_ID + 1, "less than or equal to"),
    ],
)
def test_the_message_says_what_is_wrong_with_the_value(bad: Any, says: str) -> None:
    with pytest.raises(FlagInvalidError, match=says):
        parse({KEY: {"enabled": True, "tenant_ids": [1, bad]}})


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({"other": {"enabled": True}}, "flag 'migrated_tenants' is missing"),
        ({KEY: {"enabled": "true", "tenant_ids": [1]}}, r"migrated_tenants\.enabled"),
        ({KEY: {"enabled": 1, "tenant_ids": [1]}}, r"migrated_tenants\.enabled"),
        ({KEY: {"tenant_ids": [1]}}, r"migrated_tenants\.enabled: field required"),
        ({KEY: {"enabled": True}}, "required while the flag is enabled"),
        ({KEY: {"enabled": True, "tenant_ids": "1,2"}}, "valid list"),
        ({"version": "2", "flags": {}, "values": {KEY: {"enabled": False}}}, 'version: must be "1"'),
        ({"version": "1", "flags": {}, "values": {}}, "flag 'migrated_tenants' is missing from 'values'"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_a_malformed_document_is_rejected_with_its_position(doc: Any, says: str) -> None:
    with pytest.raises(FlagInvalidError, match=says):
        parse(doc)


def test_not_a_number_is_not_json() -> None:
    with pytest.raises(FlagInvalidError, match="not valid JSON"):
        parse_flag(
            '{"migrated_tenants": {"enabled": true, "tenant_ids": [NaN]}}',
            flag_key=KEY,
            source="t",
            fetched_at=0,
        )


def test_a_document_over_appconfigs_size_limit_is_rejected() -> None:
    raw = json.dumps({KEY: {"enabled": True, "tenant_ids": [1]}, "pad": "x" * MAX_DOCUMENT_BYTES})
    with pytest.raises(FlagInvalidError, match="over AppConfig's limit"):
        parse_flag(raw, flag_key=KEY, source="t", fetched_at=0)


def test_duplicates_are_folded_and_counted() -> None:
    snap = parse({KEY: {"enabled": True, "tenant_ids": [5, 5, 6, 5, 7, 6]}})
    assert snap.tenant_ids == {5, 6, 7}
    assert snap.duplicates_folded == 3


def test_a_switched_off_flag_migrates_nobody_even_with_a_list() -> None:
    snap = parse(definition_document(KEY, False, [1, 2]))
    assert not snap.enabled
    assert snap.tenant_count == 0
    assert not snap.migrated(1)


def test_editing_a_definition_document_keeps_the_other_flags() -> None:
    doc = {
        "version": "1",
        "flags": {KEY: {"name": "m"}, "dark_mode": {"name": "d"}},
        "values": {
            KEY: {"enabled": True, "tenant_ids": [1], "_createdAt": "x"},
            "dark_mode": {"enabled": True},
        },
    }
    out = with_values(doc, KEY, True, [3, 1, 2])
    assert out["values"]["dark_mode"] == {"enabled": True}
    assert out["flags"]["dark_mode"] == {"name": "d"}
    assert out["values"][KEY] == {"enabled": True, "tenant_ids": [1, 2, 3], "_createdAt": "x"}
    assert doc["values"][KEY]["tenant_ids"] == [1]  # the input is left alone


def test_editing_a_values_document_keeps_it_in_the_values_form() -> None:
    out = with_values(
        {KEY: {"enabled": True, "tenant_ids": [1]}, "other": {"enabled": False}}, KEY, True, [2]
    )
    assert out == {KEY: {"enabled": True, "tenant_ids": [2]}, "other": {"enabled": False}}
    assert values_document(KEY, False, [1]) == {KEY: {"enabled": False}}
