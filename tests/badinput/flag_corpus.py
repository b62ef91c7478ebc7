"""Bad flag documents, each with the words its rejection must contain to point at the problem.

Shared by the corpus tests and the state machine (as the garbage a flag source may answer with).
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass

from flags.document import MAX_DOCUMENT_BYTES

KEY = "migrated_tenants"


@dataclass(frozen=True)
class Bad:
    """A document that must be rejected whole, and a fragment of the message that locates why."""

    id: str
    raw: bytes
    where: str

    def __repr__(self) -> str:
        # Some documents are megabytes; reprs end up in test ids, reports and hypothesis's events.
        return f"Bad({self.id!r})"


def values(ids: str, enabled: str = "true") -> str:
    """The values form with ``ids`` and ``enabled`` spliced in as raw JSON text."""
    return f'{{"{KEY}": {{"enabled": {enabled}, "tenant_ids": {ids}}}}}'


GOOD = values("[1, 2, 3]")


def _at(doc: str, fragment: str, offset: int = 0) -> str:
    """json's way of naming a position: the character index where ``fragment`` starts."""
    return f"(char {doc.index(fragment) + offset})"


def _bad(id: str, doc: str | bytes, where: str) -> Bad:
    return Bad(id, doc.encode() if isinstance(doc, str) else doc, where)


_latin1_prefix = f'{{"{KEY}": {{"enabled": true, "tenant_ids": [1], "note": "caf'
_long_ids = ", ".join(str(i) for i in range(1, 5001))
_oversize = values("[" + ", ".join(["1"] * (MAX_DOCUMENT_BYTES // 3 + 1)) + "]")

BAD_DOCUMENTS: list[Bad] = [
    # -- syntax ------------------------------------------------------------------------------
    _bad("empty-file", "", "(char 0)"),
    _bad("whitespace-only", "  \n\t ", "(char 5)"),
    _bad("truncated", GOOD[:-8], f"(char {len(GOOD) - 8})"),
    _bad("trailing-garbage", GOOD + " xyz", f"(char {len(GOOD) + 1})"),
    _bad("two-documents", GOOD + GOOD, f"(char {len(GOOD)})"),
    _bad("trailing-nul", GOOD + "\x00", f"(char {len(GOOD)})"),
    _bad("trailing-comma-array", values("[1, 2,]"), _at(values("[1, 2,]"), ",]", 1)),
    _bad(
        "trailing-comma-object",
        f'{{"{KEY}": {{"enabled": true, "tenant_ids": [1],}}}}',
        _at(f'{{"{KEY}": {{"enabled": true, "tenant_ids": [1],}}}}', ",}", 1),
    ),
    _bad("single-quotes", GOOD.replace('"', "'"), "(char 1)"),
    _bad("comment", "// the migrated tenants\n" + GOOD, "(char 0)"),
    _bad("unquoted-key", GOOD.replace(f'"{KEY}"', KEY), "(char 1)"),
    _bad("python-true", values("[1]", "True"), _at(values("[1]", "True"), "True")),
    _bad("yaml", f"{KEY}:\n  enabled: true\n  tenant_ids: [1, 2]\n", "(char 0)"),
    _bad("raw-control-char-in-key", GOOD.replace(KEY, KEY + "\x01"), _at(GOOD, KEY, len(KEY))),
    _bad("leading-zero", values("[01]"), _at(values("[01]"), "01", 1)),
    _bad("plus-sign", values("[+1]"), _at(values("[+1]"), "+1")),
    _bad("hex-number", values("[0x10]"), _at(values("[0x10]"), "x10")),
    _bad("arabic-indic-digits", values("[\u0661\u0662]"), _at(values("[\u0661\u0662]"), "\u0661")),
    _bad("fullwidth-digit", values("[\uff11]"), _at(values("[\uff11]"), "\uff11")),
    _bad("nan", values("[1, NaN]"), "NaN is not a JSON number"),
    _bad("infinity", values("[Infinity]"), "Infinity is not a JSON number"),
    _bad("minus-infinity", values("[-Infinity]"), "-Infinity is not a JSON number"),
    _bad("five-thousand-digits", values("[" + "9" * 5000 + "]"), "5000 digits"),
    # -- encoding ----------------------------------------------------------------------------
    _bad("utf8-bom", codecs.BOM_UTF8 + GOOD.encode(), "byte order mark at byte 0"),
    _bad("utf16", GOOD.encode("utf-16"), "not UTF-8 at byte 0"),
    _bad("utf32", GOOD.encode("utf-32"), "not UTF-8 at byte 0"),
    _bad("latin1-byte", _latin1_prefix.encode() + b'\xe9"}}', f"not UTF-8 at byte {len(_latin1_prefix)}"),
    # -- sizes and depth ---------------------------------------------------------------------
    _bad("over-4mb", _oversize, "over AppConfig's limit"),
    _bad("deeply-nested-ids", values("[" * 100_000 + "]" * 100_000), "nested too deeply"),
    _bad("deeply-nested-objects", '{"a": ' * 50_000 + "1" + "}" * 50_000, "nested too deeply"),
    # -- tenant ids of the wrong kind --------------------------------------------------------
    _bad("id-as-string", values('["1", "2"]'), f"{KEY}.tenant_ids[0]"),
    _bad("id-as-unicode-digit-string", values('[4, "\\u0661"]'), f"{KEY}.tenant_ids[1]"),
    _bad("id-as-float", values("[1, 2.5]"), f"{KEY}.tenant_ids[1]"),
    _bad("id-as-whole-float", values("[1, 2, 3.0]"), f"{KEY}.tenant_ids[2]"),
    _bad("id-with-exponent", values("[1e2]"), f"{KEY}.tenant_ids[0]"),
    _bad("id-overflowing-to-infinity", values("[1e400]"), f"{KEY}.tenant_ids[0]"),
    _bad("id-as-bool", values("[1, true]"), f"{KEY}.tenant_ids[1]"),
    _bad("id-negative", values("[-7]"), f"{KEY}.tenant_ids[0]"),
    _bad("id-zero", values("[4, 0]"), f"{KEY}.tenant_ids[1]"),
    _bad("id-minus-zero", values("[-0]"), f"{KEY}.tenant_ids[0]"),
    _bad("id-2-to-the-53", values("[9007199254740992]"), f"{KEY}.tenant_ids[0]"),
    _bad("id-2-to-the-64", values(f"[5, {2**64}]"), f"{KEY}.tenant_ids[1]"),
    _bad("id-null", values("[1, null]"), f"{KEY}.tenant_ids[1]"),
    _bad("id-nested-array", values("[[1], 2]"), f"{KEY}.tenant_ids[0]"),
    _bad("id-object", values('[1, {"id": 2}]'), f"{KEY}.tenant_ids[1]"),
    _bad("bad-id-after-5000-good", values(f'[{_long_ids}, "x"]'), f"{KEY}.tenant_ids[5000]"),
    _bad("bad-id-in-disabled-flag", values('["x"]', "false"), f"{KEY}.tenant_ids[0]"),
    # -- the tenant_ids attribute itself -----------------------------------------------------
    _bad("ids-object", values('{"1": true}'), f"{KEY}.tenant_ids:"),
    _bad("ids-string", values('"1,2,3"'), f"{KEY}.tenant_ids:"),
    _bad("ids-number", values("5"), f"{KEY}.tenant_ids:"),
    _bad("ids-null-while-enabled", values("null"), f"{KEY}.tenant_ids: required"),
    _bad("ids-missing-while-enabled", f'{{"{KEY}": {{"enabled": true}}}}', f"{KEY}.tenant_ids: required"),
    # -- enabled -----------------------------------------------------------------------------
    _bad("enabled-string-true", values("[1]", '"true"'), f"{KEY}.enabled"),
    _bad("enabled-string-false", values("[1]", '"false"'), f"{KEY}.enabled"),
    _bad("enabled-one", values("[1]", "1"), f"{KEY}.enabled"),
    _bad("enabled-zero", values("[1]", "0"), f"{KEY}.enabled"),
    _bad("enabled-null", values("[1]", "null"), f"{KEY}.enabled"),
    _bad("enabled-list", values("[1]", "[true]"), f"{KEY}.enabled"),
    _bad("enabled-object", values("[1]", '{"value": true}'), f"{KEY}.enabled"),
    _bad("enabled-missing", f'{{"{KEY}": {{"tenant_ids": [1]}}}}', f"{KEY}.enabled"),
    # -- the wrong shape ---------------------------------------------------------------------
    _bad("top-level-array", "[1, 2, 3]", "expected a JSON object, got list"),
    _bad("top-level-string", '"migrated"', "expected a JSON object, got str"),
    _bad("top-level-number", "42", "expected a JSON object, got int"),
    _bad("top-level-null", "null", "expected a JSON object, got NoneType"),
    _bad("top-level-true", "true", "expected a JSON object, got bool"),
    _bad("document-as-json-string", json.dumps(GOOD), "expected a JSON object, got str"),
    _bad("document-in-array", "[" + GOOD + "]", "expected a JSON object, got list"),
    _bad("flag-is-true", f'{{"{KEY}": true}}', f"{KEY}: input should be"),
    _bad("flag-is-list", f'{{"{KEY}": [1, 2]}}', f"{KEY}: input should be"),
    _bad("flag-is-null", f'{{"{KEY}": null}}', f"{KEY}: input should be"),
    _bad("other-flag-key", GOOD.replace(KEY, "dark_mode"), f"'{KEY}' is missing (keys found: dark_mode)"),
    _bad("key-in-other-case", GOOD.replace(KEY, KEY.upper()), f"'{KEY}' is missing"),
    _bad(
        "definition-without-the-key",
        json.dumps({"version": "1", "flags": {"dark_mode": {}}, "values": {"dark_mode": {"enabled": True}}}),
        f"flag '{KEY}' is missing from 'values'",
    ),
    _bad(
        "definition-values-not-object",
        json.dumps({"version": "1", "flags": {KEY: {}}, "values": [1]}),
        "values: must be an object",
    ),
    _bad(
        "definition-with-bad-id",
        json.dumps(
            {"version": "1", "flags": {KEY: {}}, "values": {KEY: {"enabled": True, "tenant_ids": [3, -3]}}}
        ),
        f"values.{KEY}.tenant_ids[1]",
    ),
    # -- duplicate keys: ambiguous, since readers disagree on which one wins -----------------
    _bad(
        "duplicate-flag-key",
        f'{{"{KEY}": {{"enabled": false}}, "{KEY}": {{"enabled": true, "tenant_ids": [1]}}}}',
        f"duplicate key '{KEY}'",
    ),
    _bad(
        "duplicate-enabled",
        f'{{"{KEY}": {{"enabled": true, "tenant_ids": [1], "enabled": false}}}}',
        "duplicate key 'enabled'",
    ),
]
