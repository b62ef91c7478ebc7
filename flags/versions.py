"""Flag versions and deployments as ``cutover flag`` sees them, and the one port its stores implement.

Two stores sit behind ``VersionStore``: numbered files beside the flag file (``flags.file_store``)
and AWS AppConfig (``flags.appconfig_store``). Values and a Protocol only: no I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# AppConfig's deployment states; a deployment in one of these blocks any other in its environment.
IN_PROGRESS_STATES = frozenset({"VALIDATING", "DEPLOYING", "BAKING", "ROLLING_BACK"})
FINAL_STATES = frozenset({"COMPLETE", "ROLLED_BACK", "REVERTED"})

_DESCRIPTION = re.compile(
    r"^cutover (?P<action>[a-z-]+) by (?P<by>\S+) at (?P<at>\S+)"
    r"(?: from v(?P<base>\d+))? \+(?P<added>\d+) -(?P<removed>\d+)"
    r"(?P<rollback> \[rollback\])?(?:: (?P<text>.*))?$",
    re.DOTALL,
)
MAX_DESCRIPTION = 1024


@dataclass(frozen=True, slots=True)
class FlagContent:
    """What one flag version says: the kill switch and the tenants it lists."""

    enabled: bool
    tenant_ids: frozenset[int]

    @property
    def migrated(self) -> frozenset[int]:
        """The tenants routed to the new path under this version."""
        return self.tenant_ids if self.enabled else frozenset()


EMPTY = FlagContent(enabled=True, tenant_ids=frozenset())


@dataclass(frozen=True, slots=True)
class Note:
    """Who wrote a version or started a deployment, when, from which version, and what it changed."""

    action: str
    by: str
    at: str
    base: int | None
    added: int
    removed: int
    rollback: bool = False
    text: str = ""

    def describe(self) -> str:
        """The one-line, ASCII description AppConfig keeps with a version or deployment."""
        base = f" from v{self.base}" if self.base is not None else ""
        mark = " [rollback]" if self.rollback else ""
        head = f"cutover {self.action} by {self.by} at {self.at}{base} +{self.added} -{self.removed}{mark}"
        text = " ".join(self.text.split()).encode("ascii", "replace").decode()
        line = f"{head}: {text}" if text else head
        return line[:MAX_DESCRIPTION]

    @classmethod
    def parse(cls, description: str | None) -> Note | None:
        """The note in a description ``describe`` wrote, or None for one written by someone else."""
        match = _DESCRIPTION.match(description or "")
        if match is None:
            return None
        return cls(
            action=match["action"],
            by=match["by"],
            at=match["at"],
            base=int(match["base"]) if match["base"] else None,
            added=int(match["added"]),
            removed=int(match["removed"]),
            rollback=bool(match["rollback"]),
            text=match["text"] or "",
        )


@dataclass(frozen=True, slots=True)
class Version:
    """One stored flag version (immutable once written)."""

    number: int
    description: str = ""
    note: Note | None = None


@dataclass(frozen=True, slots=True)
class Deployment:
    """Putting one version in force in the environment."""

    number: int
    version: int
    state: str
    percentage: float = 100.0
    started_at: str | None = None
    completed_at: str | None = None
    description: str = ""
    strategy: str = ""
    rollback: bool = False
    foreign: bool = False  # a deployment of another configuration profile in the same environment

    @property
    def in_progress(self) -> bool:
        """True while the deployment blocks any other in its environment."""
        return self.state in IN_PROGRESS_STATES

    @property
    def final(self) -> bool:
        """True once the deployment will not change state again."""
        return self.state in FINAL_STATES


@dataclass(frozen=True, slots=True)
class InForce:
    """The flag version the environment serves (``version`` is None when no recorded one matches)."""

    version: int | None
    content: FlagContent
