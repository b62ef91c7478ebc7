"""Validated intake of conversion requests, shared by every entry that hands work to the ledger.

``parse_intake`` turns a raw body into requests or raises ``IntakeError`` naming the item and
field at fault; it is pure, so nothing of a rejected batch is ever written. ``accept`` then
records a whole batch in one ledger transaction. The JSON schema published in OpenAPI comes
from the same limits as the checks.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from controller.core import resend
from controller.core.domain import CONVERSION_ID_CHARS, CONVERSION_ID_PATTERN, ConversionRequest
from controller.core.errors import InputError
from controller.core.ports import AcceptResult, Ledger
from controller.core.strictjson import loads_strict
from flags.document import MAX_TENANT_ID

CONVERSION_ID_SCHEMA_PATTERN = f"^{CONVERSION_ID_CHARS}$"
PARAM_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
PARAM_KEY_SCHEMA_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
MAX_PARAMS = 32
MAX_PARAM_VALUE_CHARS = 1024
# Bounds the worst case the per-key limits allow (32 x (64 + 1024) characters, JSON-escaped).
MAX_PARAMS_BYTES = 64 * 1024

_ITEM_FIELDS = ("conversion_id", "tenant_id", "params")
_JSON_TYPES = (("application", "json"),)


class IntakeProblem(StrEnum):
    """Why a request was turned away; the ``code`` of the HTTP error body."""

    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    BODY_TOO_LARGE = "body_too_large"
    MALFORMED_JSON = "malformed_json"
    TOO_MANY_ITEMS = "too_many_items"
    INVALID_BODY = "invalid_body"
    INVALID_ITEM = "invalid_item"


class IntakeError(InputError):
    """Raised when an intake request is rejected whole; names the item index and field at fault."""

    def __init__(
        self, problem: IntakeProblem, message: str, *, item: int | None = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.problem = problem
        self.item = item
        self.field = field


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    """How much one request may carry (``CUTOVER_MAX_REQUEST_ITEMS``, ``CUTOVER_MAX_BODY_BYTES``)."""

    max_items: int = 1000
    max_body_bytes: int = 1_048_576


def check_content_type(content_type: str | None) -> None:
    """Accept ``application/json`` (any parameters, e.g. a UTF-8 charset) and ``application/*+json``."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    kind, _, sub = media.partition("/")
    if (kind, sub) in _JSON_TYPES or (kind == "application" and sub.endswith("+json")):
        charset = _charset(content_type or "")
        if charset in (None, "utf-8", "utf8"):
            return
        raise IntakeError(
            IntakeProblem.UNSUPPORTED_MEDIA_TYPE, f"charset {charset!r} is not accepted; send UTF-8"
        )
    shown = media or "none"
    raise IntakeError(IntakeProblem.UNSUPPORTED_MEDIA_TYPE, f"content type {shown!r}: send application/json")


def check_declared_length(content_length: str | None, limits: IntakeLimits) -> None:
    """Refuse a body by its declared ``Content-Length`` before reading any of it."""
    if content_length is None:
        return
    if not content_length.isdigit():
        raise IntakeError(IntakeProblem.INVALID_BODY, "Content-Length is not a number")
    if int(content_length) > limits.max_body_bytes:
        raise body_too_large(limits)


def body_too_large(limits: IntakeLimits) -> IntakeError:
    """The error for a body over ``max_body_bytes`` (declared or counted while reading)."""
    return IntakeError(
        IntakeProblem.BODY_TOO_LARGE, f"request body is over the limit of {limits.max_body_bytes} bytes"
    )


def parse_intake(raw: bytes, limits: IntakeLimits) -> list[ConversionRequest]:
    """Decode and validate a ``{"conversions": [...]}`` body whole; the first fault is raised."""
    if len(raw) > limits.max_body_bytes:
        raise body_too_large(limits)
    doc = _load(raw)
    if not isinstance(doc, dict):
        raise IntakeError(IntakeProblem.INVALID_BODY, f"expected a JSON object, got {_kind(doc)}")
    unknown = sorted(set(doc) - {"conversions"})
    if unknown:
        raise IntakeError(
            IntakeProblem.INVALID_BODY, f"unknown field {unknown[0]!r}", field=_shown_key(unknown[0])
        )
    if "conversions" not in doc:
        raise IntakeError(IntakeProblem.INVALID_BODY, "'conversions' is required", field="conversions")
    items = doc["conversions"]
    if not isinstance(items, list):
        raise IntakeError(
            IntakeProblem.INVALID_BODY,
            f"'conversions' must be an array, got {_kind(items)}",
            field="conversions",
        )
    if len(items) > limits.max_items:
        raise IntakeError(
            IntakeProblem.TOO_MANY_ITEMS,
            f"{len(items)} conversions in one request; at most {limits.max_items} are accepted",
            field="conversions",
        )
    return [_item(index, item) for index, item in enumerate(items)]


def parse_item(index: int, item: Any) -> ConversionRequest:
    """Validate one conversion of a larger answer (a finder's rows or objects), where each item
    stands alone; raises ``IntakeError`` naming ``conversions[index]`` and its field."""
    return _item(index, item)


def validate_conversion_id(value: object) -> str:
    """The id if it is 1-128 characters of letters, digits, ``.``, ``_``, ``-`` (not starting with a
    dot, underscore or dash); raises ``InputError`` otherwise."""
    if not isinstance(value, str):
        raise InputError(f"must be a string, got {_kind(value)}")
    if not CONVERSION_ID_PATTERN.match(value):
        raise InputError(
            "must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit "
            f"(got {_shown(value)})"
        )
    return value


def validate_tenant_id(value: object) -> int:
    """The tenant id if it is a whole number from 1 to 2^53-1 (not a bool, float or string)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError("must be a whole number ≥ 1, got a number too large to represent")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"must be a whole number ≥ 1, got {_kind(value)} {_shown(value)}")
    if not 1 <= value <= MAX_TENANT_ID:
        raise InputError(f"must be a whole number from 1 to {MAX_TENANT_ID} (got {value})")
    return value


def accept(ledger: Ledger, requests: Sequence[ConversionRequest], now: float) -> AcceptResult:
    """Record a validated batch in one ledger transaction.

    An id already in the ledger, or repeated within the batch, is reported as a duplicate and
    never becomes a second conversion (the first occurrence wins). Lists follow request order.
    The same id with other content (in the batch or in the ledger) is a ``ConflictError``, and
    nothing of the batch is recorded.
    """
    resend.within(requests)
    first: dict[str, ConversionRequest] = {}
    for request in requests:
        first.setdefault(request.conversion_id, request)
    if not first:
        return AcceptResult([], [])
    result = ledger.accept(list(first.values()), now)
    new = set(result.accepted)
    accepted: list[str] = []
    duplicates: list[str] = []
    for request in requests:
        cid = request.conversion_id
        if cid in new:
            accepted.append(cid)
            new.discard(cid)
        else:
            duplicates.append(cid)
    return AcceptResult(accepted, duplicates)


def request_schema(limits: IntakeLimits) -> dict[str, Any]:
    """The JSON schema of an intake body, as the checks above enforce it (for OpenAPI)."""
    item = {
        "type": "object",
        "required": ["conversion_id", "tenant_id"],
        "additionalProperties": False,
        "properties": {
            "conversion_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": 128,
                "pattern": CONVERSION_ID_SCHEMA_PATTERN,
            },
            "tenant_id": {"type": "integer", "minimum": 1, "maximum": MAX_TENANT_ID},
            "params": {
                "type": "object",
                "maxProperties": MAX_PARAMS,
                "propertyNames": {"pattern": PARAM_KEY_SCHEMA_PATTERN, "maxLength": 64},
                "additionalProperties": {"type": "string", "maxLength": MAX_PARAM_VALUE_CHARS},
            },
        },
    }
    return {
        "type": "object",
        "required": ["conversions"],
        "additionalProperties": False,
        "properties": {"conversions": {"type": "array", "maxItems": limits.max_items, "items": item}},
    }


# -- the checks ------------------------------------------------------------------------------


def _load(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntakeError(IntakeProblem.MALFORMED_JSON, f"body is not UTF-8 ({exc.reason})") from exc
    try:
        return loads_strict(text, repeated=_repeated)
    except RecursionError as exc:
        raise IntakeError(IntakeProblem.MALFORMED_JSON, "body is nested too deeply") from exc
    except ValueError as exc:
        raise IntakeError(IntakeProblem.MALFORMED_JSON, f"body is not valid JSON ({exc})") from exc


def _repeated(key: str) -> str:
    return f"key {_shown(key)} appears twice in one object"


def _item(index: int, item: Any) -> ConversionRequest:
    def fail(field: str | None, message: str) -> IntakeError:
        where = f"conversions[{index}]" + (f".{field}" if field else "")
        return IntakeError(IntakeProblem.INVALID_ITEM, f"{where}: {message}", item=index, field=field)

    if not isinstance(item, dict):
        raise fail(None, f"expected an object, got {_kind(item)}")
    for key in item:
        if key not in _ITEM_FIELDS:
            raise fail(_shown_key(key), "unknown field")
    for key in ("conversion_id", "tenant_id"):
        if key not in item:
            raise fail(key, "required")
    try:
        conversion_id = validate_conversion_id(item["conversion_id"])
    except InputError as exc:
        raise fail("conversion_id", str(exc)) from exc
    try:
        tenant_id = validate_tenant_id(item["tenant_id"])
    except InputError as exc:
        raise fail("tenant_id", str(exc)) from exc
    params = item.get("params", {})
    if not isinstance(params, dict):
        raise fail("params", f"must be an object of strings, got {_kind(params)}")
    if len(params) > MAX_PARAMS:
        raise fail("params", f"{len(params)} entries; at most {MAX_PARAMS}")
    for key, value in params.items():
        if not PARAM_KEY.fullmatch(key):
            raise fail(
                f"params.{_shown_key(key)}",
                "key must be 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or _",
            )
        if not isinstance(value, str):
            raise fail(f"params.{key}", f"must be a string, got {_kind(value)}")
        if len(value) > MAX_PARAM_VALUE_CHARS:
            raise fail(f"params.{key}", f"{len(value)} characters; at most {MAX_PARAM_VALUE_CHARS}")
        if not _encodable(value):
            raise fail(f"params.{key}", "contains a lone surrogate, which is not text")
    size = len(json.dumps(params, separators=(",", ":")))
    if size > MAX_PARAMS_BYTES:
        raise fail("params", f"{size} bytes as JSON; at most {MAX_PARAMS_BYTES}")
    return ConversionRequest(conversion_id, tenant_id, dict(params))


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        name, _, value = part.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _shown(value: object) -> str:
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _shown_key(key: str) -> str:
    """A field name that is safe to echo: printable ASCII, bounded."""
    text = json.dumps(key, ensure_ascii=True)[1:-1]
    return text if len(text) <= 64 else text[:61] + "..."
