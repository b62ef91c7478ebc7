"""The rollout plan: ordered groups of tenants that ``cutover flag`` advances through.

A YAML or JSON file (``CUTOVER_ROLLOUT_FILE``)::

    groups:
      - name: group-1
        note: least active tenants first
        tenant_ids: [1001, 1002, "1010-1020", {from: 2000, to: 2049}]

    shadow: {groups: [group-1], rate: 0.1}   # optional: see controller.core.shadow

Ranges are inclusive. A tenant belongs to at most one group. Errors name the group and the
position of the first bad entry. Reading only: the plan is never written here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controller.core.errors import InputError
from controller.core.shadow import ShadowPlan, parse_shadow_section
from flags.document import MAX_TENANT_ID

# A typo such as "1001-10020000" must not become ten million tenants.
MAX_PLAN_TENANTS = 1_000_000
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
_ONE = re.compile(r"^\s*(\d+)\s*$")
_GROUP_KEYS = {"name", "tenant_ids", "tenants", "note"}


@dataclass(frozen=True, slots=True)
class Group:
    """One rollout step: a named set of tenants that move together."""

    name: str
    tenant_ids: frozenset[int]
    note: str = ""


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    """The ordered groups of a rollout."""

    groups: tuple[Group, ...]
    source: str = "rollout plan"
    shadow: ShadowPlan = field(default_factory=ShadowPlan)

    def group(self, ref: str) -> Group:
        """The group named ``ref`` (or at 1-based position ``ref``); ``InputError`` otherwise."""
        for g in self.groups:
            if g.name == ref:
                return g
        if ref.isdigit() and 1 <= int(ref) <= len(self.groups):
            return self.groups[int(ref) - 1]
        names = ", ".join(g.name for g in self.groups)
        raise InputError(f"{self.source}: no group {ref!r} (groups: {names})")

    def through(self, ref: str) -> frozenset[int]:
        """Every tenant of the groups up to and including ``ref``."""
        last = self.group(ref)
        out: set[int] = set()
        for g in self.groups:
            out |= g.tenant_ids
            if g is last:
                break
        return frozenset(out)

    def group_of(self, tenant_id: int) -> Group | None:
        """The group a tenant belongs to, if any."""
        for g in self.groups:
            if tenant_id in g.tenant_ids:
                return g
        return None

    @property
    def tenant_ids(self) -> frozenset[int]:
        """Every tenant the plan names."""
        return frozenset().union(*(g.tenant_ids for g in self.groups))


def _tenant(value: Any, at: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{at}: expected a tenant id, got {json.dumps(value, default=str)[:40]}")
    if not 1 <= value <= MAX_TENANT_ID:
        raise InputError(f"{at}: tenant id {value} is outside 1..{MAX_TENANT_ID}")
    return value


def _span(low: Any, high: Any, at: str) -> range:
    first, last = _tenant(low, at), _tenant(high, at)
    if last < first:
        raise InputError(f"{at}: range {first}-{last} runs backwards")
    if last - first + 1 > MAX_PLAN_TENANTS:
        raise InputError(f"{at}: range {first}-{last} names more than {MAX_PLAN_TENANTS} tenants")
    return range(first, last + 1)


def parse_entry(item: Any, at: str) -> Iterable[int]:
    """The tenants one entry names: an id, ``"A-B"``, ``"A"``, or ``{from: A, to: B}``."""
    if isinstance(item, str):
        if m := _RANGE.match(item):
            return _span(int(m[1]), int(m[2]), at)
        if m := _ONE.match(item):
            return (_tenant(int(m[1]), at),)
        raise InputError(f"{at}: {item!r} is neither a tenant id nor a range such as 1001-1020")
    if isinstance(item, dict):
        if set(item) != {"from", "to"}:
            raise InputError(f"{at}: a range is written {{from: A, to: B}} (got keys {sorted(item)})")
        return _span(item["from"], item["to"], at)
    return (_tenant(item, at),)


def parse_tenants(text: str, at: str = "tenants") -> frozenset[int]:
    """Tenants from a command-line list such as ``1001,1005-1010``."""
    out: set[int] = set()
    for i, part in enumerate(p for p in text.split(",") if p.strip()):
        out.update(parse_entry(part, f"{at}[{i}]"))
    if not out:
        raise InputError(f"{at}: no tenant ids given")
    return frozenset(out)


def _group(raw: Any, index: int, where: str) -> Group:
    at = f"{where}: groups[{index}]"
    if not isinstance(raw, dict):
        raise InputError(f"{at}: expected a mapping with name and tenant_ids")
    extra = set(raw) - _GROUP_KEYS
    if extra:
        raise InputError(f"{at}: unknown keys {sorted(extra)} (allowed: name, tenant_ids, note)")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        raise InputError(f"{at}: name must be a string of 1-64 characters")
    at = f"{where}: group {name!r}"
    if "tenant_ids" in raw and "tenants" in raw:
        raise InputError(f"{at}: give tenant_ids or tenants, not both")
    key = "tenant_ids" if "tenant_ids" in raw else "tenants"
    entries = raw.get(key)
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{at}: {key} must be a non-empty list")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise InputError(f"{at}: note must be a string")
    ids: set[int] = set()
    for i, item in enumerate(entries):
        ids.update(parse_entry(item, f"{at} {key}[{i}]"))
        if len(ids) > MAX_PLAN_TENANTS:
            raise InputError(f"{at}: more than {MAX_PLAN_TENANTS} tenants")
    return Group(name, frozenset(ids), note)


def parse_plan(doc: Any, where: str = "rollout plan") -> RolloutPlan:
    """Validate a decoded plan document whole; ``InputError`` names the group and entry at fault."""
    raw_groups = doc.get("groups") if isinstance(doc, dict) else doc
    known = {"groups", "shadow"}
    if isinstance(doc, dict) and set(doc) - known:
        raise InputError(f"{where}: unknown keys {sorted(set(doc) - known)} (expected {sorted(known)})")
    if not isinstance(raw_groups, list) or not raw_groups:
        raise InputError(f"{where}: expected a non-empty list of groups")
    groups: list[Group] = []
    owner: dict[int, str] = {}
    for index, raw in enumerate(raw_groups):
        group = _group(raw, index, where)
        if any(g.name == group.name for g in groups):
            raise InputError(f"{where}: group name {group.name!r} is used twice")
        for t in group.tenant_ids:
            if t in owner:
                raise InputError(f"{where}: tenant {t} is in both {owner[t]!r} and {group.name!r}")
            owner[t] = group.name
        groups.append(group)
    names = [g.name for g in groups]
    raw_shadow = doc.get("shadow") if isinstance(doc, dict) else None
    shadow = ShadowPlan() if raw_shadow is None else parse_shadow_section(raw_shadow, names, where)
    return RolloutPlan(tuple(groups), where, shadow)


def load_plan(path: Path) -> RolloutPlan:
    """Read and validate the plan at ``path`` (``.json``, or YAML for anything else)."""
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise InputError(f"no rollout plan at {path} (set CUTOVER_ROLLOUT_FILE)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"rollout plan {path}: cannot read it ({exc})") from exc
    try:
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise InputError(f"rollout plan {path}: not valid {kind} ({' '.join(str(exc).split())})") from exc
    return parse_plan(doc, str(path))
