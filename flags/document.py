"""Parse and validate a feature-flag document as a whole: one bad value rejects all of it.

Accepts the three shapes AppConfig produces for a ``AWS.AppConfig.FeatureFlags`` profile:
the retrieval (values) form ``{"<key>": {"enabled": …, "tenant_ids": […]}}``, the full definition
document ``{"version": "1", "flags": {…}, "values": {…}}`` (its ``version`` is the schema's, not
the flag's), and the single flag object the agent answers for ``?flag=<key>``. Pure: no I/O.
"""

from __future__ import annotations

import codecs
import copy
import hashlib
import json
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.core.errors import FlagInvalidError
from controller.core.strictjson import loads_strict
from flags.snapshot import FlagSnapshot

# AppConfig's hosted configuration store takes at most 4 MB per version.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
# Tenant ids must survive JSON in every consumer (JavaScript, DynamoDB numbers): stay exact.
MAX_TENANT_ID = 2**53 - 1

TenantId = Annotated[int, Field(strict=True, ge=1, le=MAX_TENANT_ID)]
Shape = Literal["auto", "flag"]


class FlagValue(BaseModel):
    """The values of the migration flag as AppConfig returns them."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    enabled: bool
    tenant_ids: list[TenantId] | None = None


def content_version(raw: bytes) -> str:
    """A short, stable version for content that came without one."""
    return "sha-" + hashlib.sha256(raw).hexdigest()[:12]


def load_json(raw: bytes | str, where: str) -> Any:
    """Decode UTF-8 JSON strictly (no BOM, NaN/Infinity or duplicate keys), naming ``where`` in the error.

    Every malformed input raises ``FlagInvalidError``, whatever broke in the decoder.
    """
    if isinstance(raw, str):
        try:
            data = raw.encode()
        except UnicodeEncodeError as exc:
            raise FlagInvalidError(f"{where}: not valid text at char {exc.start} ({exc.reason})") from exc
    else:
        data = raw
    if len(data) > MAX_DOCUMENT_BYTES:
        raise FlagInvalidError(
            f"{where}: document is {len(data)} bytes, over AppConfig's limit of {MAX_DOCUMENT_BYTES}"
        )
    if data.startswith(codecs.BOM_UTF8):
        raise FlagInvalidError(f"{where}: starts with a byte order mark at byte 0; JSON must be plain UTF-8")
    try:
        # Decoded here rather than by json.loads, which would guess UTF-16/32 from the first bytes.
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise FlagInvalidError(f"{where}: not UTF-8 at byte {exc.start} ({exc.reason})") from exc
    try:
        return loads_strict(text)
    except RecursionError as exc:
        raise FlagInvalidError(f"{where}: nested too deeply to be a flag document") from exc
    except ValueError as exc:
        raise FlagInvalidError(f"{where}: not valid JSON ({exc})") from exc


def _locate(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _is_definition(doc: dict[str, Any]) -> bool:
    """True for the full definition document: only ``version``/``flags``/``values`` at the top."""
    keys = set(doc)
    return (
        "values" in keys and keys <= {"version", "flags", "values"} and ("flags" in keys or "version" in keys)
    )


def _flag_object(doc: Any, flag_key: str, shape: Shape, where: str) -> tuple[Any, str]:
    if not isinstance(doc, dict):
        raise FlagInvalidError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    if shape == "flag":
        return doc, flag_key
    if _is_definition(doc):
        if "version" in doc and doc["version"] != "1":
            raise FlagInvalidError(f'{where}: version: must be "1" (got {json.dumps(doc["version"])[:60]})')
        values = doc["values"]
        if not isinstance(values, dict):
            raise FlagInvalidError(f"{where}: values: must be an object")
        if flag_key not in values:
            raise FlagInvalidError(f"{where}: flag '{flag_key}' is missing from 'values'")
        return values[flag_key], f"values.{flag_key}"
    if flag_key not in doc:
        keys = ", ".join(sorted(map(str, doc))[:5]) or "none"
        raise FlagInvalidError(f"{where}: flag '{flag_key}' is missing (keys found: {keys})")
    return doc[flag_key], flag_key


def _problem(error: Any) -> str:
    """Pydantic's message, said in the flag's terms where a tenant id is at fault."""
    loc = tuple(error["loc"])
    got = error.get("input")
    if loc[:1] == ("tenant_ids",) and len(loc) == 2:
        if isinstance(got, bool):
            return "a boolean is not a tenant id; tenant ids are whole numbers >= 1"
        if isinstance(got, float):
            return "a tenant id must be a whole number written without a fraction or exponent"
    return str(error["msg"]).lower()


def _validate(value: Any, path: str, where: str) -> FlagValue:
    try:
        flag = FlagValue.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        got = first.get("input")
        shown = json.dumps(got)[:60] if not isinstance(got, dict | list) else type(got).__name__
        raise FlagInvalidError(
            f"{where}: {path}{_locate(tuple(first['loc']))}: {_problem(first)} (got {shown})"
        ) from exc
    if flag.enabled and flag.tenant_ids is None:
        raise FlagInvalidError(f"{where}: {path}.tenant_ids: required while the flag is enabled")
    return flag


def read_values(doc: Any, *, flag_key: str, where: str = "flag document") -> tuple[bool, list[int]]:
    """``enabled`` and the listed tenant ids (even while disabled) of a decoded document, validated whole."""
    value, path = _flag_object(doc, flag_key, "auto", where)
    flag = _validate(value, path, where)
    return flag.enabled, list(flag.tenant_ids or [])


def parse_flag(
    raw: bytes | str,
    *,
    flag_key: str,
    source: str,
    fetched_at: float,
    version: str | None = None,
    shape: Shape = "auto",
    where: str = "flag document",
) -> FlagSnapshot:
    """Validate ``raw`` whole and build its snapshot; ``FlagInvalidError`` names the first bad value."""
    doc = load_json(raw, where)
    value, path = _flag_object(doc, flag_key, shape, where)
    flag = _validate(value, path, where)
    ids = flag.tenant_ids or []
    tenant_ids = frozenset(ids) if flag.enabled else frozenset()
    data = raw.encode() if isinstance(raw, str) else raw
    return FlagSnapshot(
        version=version or content_version(data),
        enabled=flag.enabled,
        tenant_ids=tenant_ids,
        source=source,
        fetched_at=fetched_at,
        flag_key=flag_key,
        duplicates_folded=(len(ids) - len(tenant_ids)) if flag.enabled else 0,
        version_from_content=version is None,
    )


def values_document(flag_key: str, enabled: bool, tenant_ids: Iterable[int]) -> dict[str, Any]:
    """The retrieval (values) form of the flag, as the agent's local development mode reads it."""
    body: dict[str, Any] = {"enabled": enabled}
    if enabled:
        body["tenant_ids"] = sorted(set(tenant_ids))
    return {flag_key: body}


def flag_definition() -> dict[str, Any]:
    """The migration flag's definition: one required number-array attribute of ids >= 1."""
    return {
        "name": "Migrated tenants",
        "description": "Tenants whose conversions run on the new path.",
        "attributes": {
            "tenant_ids": {
                "constraints": {
                    "type": "array",
                    "required": True,
                    "elements": {"type": "number", "minimum": 1},
                }
            }
        },
    }


def definition_document(flag_key: str, enabled: bool, tenant_ids: Iterable[int]) -> dict[str, Any]:
    """The full feature-flag document AppConfig stores: ``{"version": "1", "flags", "values"}``."""
    return {
        "version": "1",
        "flags": {flag_key: flag_definition()},
        "values": {flag_key: {"enabled": enabled, "tenant_ids": sorted(set(tenant_ids))}},
    }


def with_values(
    doc: Any,
    flag_key: str,
    enabled: bool,
    tenant_ids: Iterable[int],
    *,
    new_form: Literal["values", "definition"] = "definition",
) -> dict[str, Any]:
    """``doc`` with the migration flag's values replaced and everything else (other flags) kept.

    A definition document stays one (and keeps its tenant list while disabled, as AppConfig
    allows); a values document stays one; without a document, ``new_form`` says which to start.
    """
    ids = sorted(set(tenant_ids))
    if not isinstance(doc, dict):
        if new_form == "values":
            return values_document(flag_key, enabled, ids)
        return definition_document(flag_key, enabled, ids)
    if _is_definition(doc):
        out = copy.deepcopy(doc)
        out["version"] = "1"
        flags = out.setdefault("flags", {})
        flags.setdefault(flag_key, flag_definition())
        values = out["values"] if isinstance(out["values"], dict) else {}
        entry = dict(values.get(flag_key) or {})
        entry.pop("_updatedAt", None)
        entry.update({"enabled": enabled, "tenant_ids": ids})
        values[flag_key] = entry
        out["values"] = values
        return out
    out = copy.deepcopy(doc)
    out.update(values_document(flag_key, enabled, ids))
    return out
