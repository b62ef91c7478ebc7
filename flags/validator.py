"""The AppConfig validator: cutover's checks on a flag version made anywhere (console, scripts).

AppConfig invokes ``handler`` (a Lambda function) with ``{applicationId, configurationProfileId,
configurationVersion, content (base64), uri}`` before deploying a version, and refuses the
version when the handler raises. Checks, in order: the document as a whole, exactly as the
controller's sources parse it; then, when ``CUTOVER_APPCONFIG_ENVIRONMENT`` holds the
environment's id (the function then needs only GetEnvironment, ListDeployments and
GetHostedConfigurationVersion), the guard rails of ``cutover flag`` against the version in force:
no tenant leaves the new path except in a version marked ``[rollback]`` (or by deploying an older
version), no more than ``CUTOVER_MAX_ADD`` join in one step, and no tenant held back by
``rollback --tenant`` comes back unless the version's description says ``[release]``. Imports stay
light: boto3 loads only for that comparison.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from controller.core.errors import FlagInvalidError, InputError
from flags.document import load_json, read_values
from flags.guards import ChangeKind, check
from flags.holds import RELEASE_MARK, Hold, describe, holds
from flags.versions import FlagContent, InForce

log = logging.getLogger("cutover.flags.validator")
DEFAULT_FLAG_KEY = "migrated_tenants"
DEFAULT_MAX_ADD = 500
ROLLBACK_MARK = "[rollback]"


def kind_of(version: int | None, in_force: InForce | None, description: str) -> ChangeKind:
    """How the candidate reaches the environment: an older version again, a marked rollback, or an advance."""
    if (
        in_force is not None
        and in_force.version is not None
        and version is not None
        and version < in_force.version
    ):
        return ChangeKind.REVERT
    if ROLLBACK_MARK in description:
        return ChangeKind.ROLLBACK
    return ChangeKind.ADVANCE


def validate(
    content: bytes,
    *,
    flag_key: str,
    max_add: int,
    version: int | None = None,
    in_force: InForce | None = None,
    description: str = "",
    compare: bool = True,
) -> FlagContent:
    """Raise ``FlagInvalidError`` for a bad document and ``InputError`` for a change the guard rails
    refuse; returns what the candidate says. ``compare=False`` checks the document only."""
    where = f"flag version {version}" if version is not None else "flag version"
    enabled, ids = read_values(load_json(content, where), flag_key=flag_key, where=where)
    candidate = FlagContent(enabled, frozenset(ids))
    if not compare:
        return candidate
    if in_force is not None and in_force.version is not None and in_force.version == version:
        return candidate  # the version already in force, deployed again: nothing moves
    kind = kind_of(version, in_force, description)
    problems = check(in_force.content if in_force else None, candidate, kind=kind, max_add=max_add)
    if problems:
        raise InputError(f"{where} refused by cutover's guard rails: " + "; ".join(problems))
    return candidate


def refuse_held(
    held: Mapping[int, Hold],
    candidate: FlagContent,
    in_force: InForce | None,
    description: str,
    version: int | None,
) -> None:
    """``InputError`` when a new version lists a held tenant again without saying ``[release]``."""
    listed = in_force.content.tenant_ids if in_force else frozenset()
    back = sorted(candidate.tenant_ids & held.keys() - listed)
    if back and RELEASE_MARK not in description:
        raise InputError(
            f"flag version {version} refused by cutover's guard rails: {describe(held[back[0]])}; "
            f"release it with `cutover flag release {back[0]}`, "
            f"or put {RELEASE_MARK} in the version's description"
        )


def _decode(event: Mapping[str, Any]) -> bytes:
    try:
        return base64.b64decode(str(event["content"]), validate=True)
    except (KeyError, binascii.Error, ValueError) as exc:
        raise FlagInvalidError("validator event: 'content' is missing or not base64") from exc


def _version(event: Mapping[str, Any]) -> int | None:
    raw = str(event.get("configurationVersion", ""))
    return int(raw) if raw.isdigit() else None


def handler(event: Mapping[str, Any], context: Any = None, *, client: Any = None) -> dict[str, Any]:
    """The Lambda entry point AppConfig calls; raises to reject the version."""
    content = _decode(event)
    version = _version(event)
    flag_key = os.environ.get("CUTOVER_FLAG_KEY", DEFAULT_FLAG_KEY)
    try:
        max_add = int(os.environ.get("CUTOVER_MAX_ADD", DEFAULT_MAX_ADD))
    except ValueError as exc:
        raise InputError("CUTOVER_MAX_ADD must be a whole number") from exc
    environment = os.environ.get("CUTOVER_APPCONFIG_ENVIRONMENT")
    if not environment:
        candidate = validate(content, flag_key=flag_key, max_add=max_add, version=version, compare=False)
        return _verdict(event, candidate, "document only (CUTOVER_APPCONFIG_ENVIRONMENT unset)")
    from flags.appconfig_store import AppConfigVersionStore, make_client

    store = AppConfigVersionStore(
        client or make_client(),
        application=str(event["applicationId"]),
        environment=environment,
        profile=str(event["configurationProfileId"]),
        flag_key=flag_key,
        application_id=str(event["applicationId"]),
        profile_id=str(event["configurationProfileId"]),
    )
    # The document is checked before anything is read from AppConfig: a bad one never gets further.
    validate(content, flag_key=flag_key, max_add=max_add, version=version, compare=False)
    in_force = store.in_force()
    description = store.description(version) if version is not None else ""
    candidate = validate(
        content,
        flag_key=flag_key,
        max_add=max_add,
        version=version,
        in_force=in_force,
        description=description,
    )
    if kind_of(version, in_force, description) is ChangeKind.ADVANCE:
        refuse_held(holds(store), candidate, in_force, description, version)
    return _verdict(event, candidate, f"against version {in_force.version if in_force else None} in force")


def _verdict(event: Mapping[str, Any], candidate: FlagContent, basis: str) -> dict[str, Any]:
    verdict = {
        "valid": True,
        "configurationVersion": event.get("configurationVersion"),
        "enabled": candidate.enabled,
        "tenant_count": len(candidate.tenant_ids),
        "checked": basis,
    }
    log.info("flag.validated %s", json.dumps(verdict))
    return verdict
