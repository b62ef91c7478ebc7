"""The rollout plan: ordered groups of tenants that ``cutover flag`` advances through.

A YAML or JSON file (``CUTOVER_ROLLOUT_FILE``)::

    gates:                      # what a group must show before the next moves (defaults shown)
      min_conversions: 100      # finished new-path conversions before anything is judged
      success_floor: 95%        # Wilson 95% lower bound of the new path's success rate
      max_slowdown: 1.5         # new-path median run time against the old path's, at most
      max_resubmit_rate: 5%     # conversions that needed a clone-and-resubmit, at most
      price: {new: 0.00005, legacy: 0.00002}   # optional: per second of a run, for cost per conversion
    auto:                       # optional: advance by itself (opt-in)
      bake: 24h
      blackout: [{cron: "0 0 1 * *", for: 72h}]
      on_fail: pause            # or rollback
      deadline: 72h
    groups:
      - name: group-1
        note: least active tenants first
        tenant_ids: [1001, 1002, "1010-1020", {from: 2000, to: 2049}]
        gates: {min_conversions: 50}   # this group's own thresholds over the defaults

    shadow: {groups: [group-1], rate: 0.1}   # optional: see controller.core.shadow

Ranges are inclusive. A tenant belongs to at most one group. Errors name the group and the
position of the first bad entry, or the group and key of a bad threshold. Reading only: the plan
is never written here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.core.autoadvance import AutoPolicy, Blackout, OnFail
from controller.core.domain import Path as ExecPath
from controller.core.errors import InputError
from controller.core.gates import GatePolicy, Thresholds
from controller.core.schedule import parse_duration, parse_schedule
from controller.core.shadow import ShadowPlan, parse_shadow_section
from flags.docfile import read_document
from flags.document import MAX_TENANT_ID

# A typo such as "1001-10020000" must not become ten million tenants.
MAX_PLAN_TENANTS = 1_000_000
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
_ONE = re.compile(r"^\s*(\d+)\s*$")
_GROUP_KEYS = {"name", "tenant_ids", "tenants", "note", "gates"}
_PLAN_KEYS = {"groups", "gates", "auto", "shadow"}
_THRESHOLD_KEYS = ("min_conversions", "success_floor", "max_slowdown", "max_resubmit_rate")
_AUTO_KEYS = {"enabled", "bake", "blackout", "on_fail", "deadline"}


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
    gates: GatePolicy = field(default_factory=GatePolicy)
    auto: AutoPolicy | None = None  # None: no ``auto:`` section, so nothing advances by itself
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
        raise InputError(f"{at}: unknown keys {sorted(extra)} (allowed: name, tenant_ids, note, gates)")
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
    if isinstance(doc, dict) and set(doc) - _PLAN_KEYS:
        raise InputError(
            f"{where}: unknown keys {sorted(set(doc) - _PLAN_KEYS)} (expected groups, gates, auto, shadow)"
        )
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
    options = doc if isinstance(doc, dict) else {}
    gates = _gate_policy(options.get("gates"), raw_groups, where)
    auto = _auto(options["auto"], f"{where}: auto") if options.get("auto") is not None else None
    raw_shadow = options.get("shadow")
    names = [g.name for g in groups]
    shadow = ShadowPlan() if raw_shadow is None else parse_shadow_section(raw_shadow, names, where)
    return RolloutPlan(tuple(groups), where, gates, auto, shadow)


# -- gates and auto ------------------------------------------------------------------------------


def _fraction(value: Any, at: str) -> float:
    """A share written 0.95 or "95%"."""
    number: Any = value
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            number = float(value.strip()[:-1]) / 100
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, int | float) or not 0 <= number <= 1:
        raise InputError(
            f"{at}: expected a share between 0 and 1 (0.95) or a percentage (95%), got {value!r:.40}"
        )
    return float(number)


def _thresholds(raw: Any, base: Thresholds, at: str, *, extra: frozenset[str] = frozenset()) -> Thresholds:
    if raw is None:
        return base
    if not isinstance(raw, dict):
        raise InputError(f"{at}: expected a mapping of {', '.join(_THRESHOLD_KEYS)}")
    unknown = set(raw) - set(_THRESHOLD_KEYS) - extra
    if unknown:
        raise InputError(f"{at}: unknown keys {sorted(unknown)} (allowed: {', '.join(_THRESHOLD_KEYS)})")
    values = {k: getattr(base, k) for k in _THRESHOLD_KEYS}
    if "min_conversions" in raw:
        n = raw["min_conversions"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10_000_000:
            raise InputError(f"{at}.min_conversions: expected a whole number from 1, got {n!r:.40}")
        values["min_conversions"] = n
    for key in ("success_floor", "max_resubmit_rate"):
        if key in raw:
            values[key] = _fraction(raw[key], f"{at}.{key}")
    if "max_slowdown" in raw:
        r = raw["max_slowdown"]
        if isinstance(r, bool) or not isinstance(r, int | float) or not 1 <= r <= 100:
            raise InputError(
                f"{at}.max_slowdown: expected a ratio from 1 to 100 (1.5 = 50% slower), got {r!r:.40}"
            )
        values["max_slowdown"] = float(r)
    return Thresholds(**values)


def _prices(raw: Any, at: str) -> dict[ExecPath, float]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or set(raw) - {p.value for p in ExecPath}:
        raise InputError(f"{at}: expected {{new: PRICE, legacy: PRICE}}, the price of one second of a run")
    out: dict[ExecPath, float] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise InputError(f"{at}.{name}: expected a price of zero or more, got {value!r:.40}")
        out[ExecPath(name)] = float(value)
    return out


def _gate_policy(raw: Any, raw_groups: list[Any], where: str) -> GatePolicy:
    defaults = _thresholds(raw, Thresholds(), f"{where}: gates", extra=frozenset({"price"}))
    prices = _prices(raw.get("price") if isinstance(raw, dict) else None, f"{where}: gates.price")
    per_group = {
        g["name"]: _thresholds(g["gates"], defaults, f"{where}: group {g['name']!r} gates")
        for g in raw_groups
        if g.get("gates") is not None
    }
    return GatePolicy(defaults, per_group, prices)


def _blackout(raw: Any, at: str) -> Blackout:
    if not isinstance(raw, dict) or set(raw) != {"cron", "for"}:
        raise InputError(f'{at}: expected {{cron: "0 0 1 * *", for: 72h}}')
    if not isinstance(raw["cron"], str) or len(raw["cron"].split()) != 5:
        raise InputError(f"{at}.cron: expected five cron fields (UTC), got {raw['cron']!r:.40}")
    try:
        schedule = parse_schedule(raw["cron"])
    except InputError as exc:
        raise InputError(f"{at}.cron: {exc}") from exc
    return Blackout(schedule, parse_duration(raw["for"], f"{at}.for"))


def _auto(raw: Any, at: str) -> AutoPolicy:
    if not isinstance(raw, dict):
        raise InputError(f"{at}: expected a mapping of {', '.join(sorted(_AUTO_KEYS))}")
    unknown = set(raw) - _AUTO_KEYS
    if unknown:
        raise InputError(f"{at}: unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(_AUTO_KEYS))})")
    base = AutoPolicy()
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InputError(f"{at}.enabled: expected true or false, got {enabled!r:.40}")
    on_fail = raw.get("on_fail", base.on_fail.value)
    if on_fail not in {o.value for o in OnFail}:
        raise InputError(f"{at}.on_fail: expected pause or rollback, got {on_fail!r:.40}")
    blackouts = raw.get("blackout", [])
    if not isinstance(blackouts, list):
        raise InputError(f"{at}.blackout: expected a list of {{cron, for}}")
    return AutoPolicy(
        enabled=enabled,
        bake_seconds=parse_duration(raw["bake"], f"{at}.bake") if "bake" in raw else base.bake_seconds,
        blackouts=tuple(_blackout(b, f"{at}.blackout[{i}]") for i, b in enumerate(blackouts)),
        on_fail=OnFail(on_fail),
        deadline_seconds=(
            parse_duration(raw["deadline"], f"{at}.deadline") if "deadline" in raw else base.deadline_seconds
        ),
    )


def load_plan(path: Path) -> RolloutPlan:
    """Read and validate the plan at ``path`` (``.json``, or YAML for anything else)."""
    missing = f"no rollout plan at {path} (set CUTOVER_ROLLOUT_FILE)"
    return parse_plan(read_document(path, f"rollout plan {path}", missing=missing), str(path))
