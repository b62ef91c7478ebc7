"""Strict JSON decoding, the one the intake and the flag parser share: Python's extensions to JSON
and ambiguous objects are refused with a reason, everything JSON has is decoded as ``json`` does."""

from __future__ import annotations

import json

import pytest

from controller.core.strictjson import loads_strict


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("NaN", "NaN is not a JSON number"),
        ('{"a": [1, Infinity]}', "Infinity is not a JSON number"),
        ('{"a": -Infinity}', "-Infinity is not a JSON number"),
        ('{"a": 1, "a": 1}', "duplicate key 'a'"),
        ('[{"x": {"b": 1, "b": 2}}]', "duplicate key 'b'"),
    ],
)
def test_what_json_does_not_have_is_refused_with_its_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{reason}$"):
        loads_strict(text)


def test_the_caller_words_a_repeated_key() -> None:
    with pytest.raises(ValueError, match=r"^key 'k' twice$"):
        loads_strict('{"k": 1, "k": 2}', repeated=lambda key: f"key {key!r} twice")


def test_bad_syntax_is_the_decoder_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads_strict('{"a": }')


def test_json_decodes_as_json_does() -> None:
    text = '{"a": [1, 2.5, -0, 1e3, "NaN", null, true], "b": {"a": {}}, "": "\\u00e9"}'
    assert loads_strict(text) == json.loads(text)
    assert list(loads_strict('{"z": 1, "a": 2}')) == ["z", "a"]
