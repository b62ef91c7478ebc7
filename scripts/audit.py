"""Judge a pip-audit report: fail on known vulnerabilities that have a fixed release.

Usage: ``python scripts/audit.py REPORT.json`` where the report is ``pip-audit --format json``.
Prints each fixable vulnerability (package, installed version, id, fixed versions) and a
summary line with how many dependencies could be checked at all. Exit status: 0 when nothing
fixable is known, 1 when something is (upgrade past it, or raise the floor in pyproject.toml),
2 when the report cannot be read. A vulnerability without a fixed release is listed but does
not fail: nothing can be done about it yet.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNREADABLE = 2


@dataclass(frozen=True)
class Vulnerability:
    package: str
    version: str
    id: str
    fix_versions: tuple[str, ...]
    aliases: tuple[str, ...] = ()

    @property
    def fixable(self) -> bool:
        return bool(self.fix_versions)

    def line(self) -> str:
        fixes = f"fixed in {', '.join(self.fix_versions)}" if self.fix_versions else "no fixed release yet"
        also = f" ({', '.join(self.aliases)})" if self.aliases else ""
        return f"{self.package} {self.version}: {self.id}{also}; {fixes}"


@dataclass(frozen=True)
class Audit:
    vulnerabilities: tuple[Vulnerability, ...]
    audited: int
    skipped: tuple[tuple[str, str], ...]  # (package, why)

    @property
    def fixable(self) -> tuple[Vulnerability, ...]:
        return tuple(v for v in self.vulnerabilities if v.fixable)


class ReportError(ValueError):
    """The report is not pip-audit's JSON."""


def read_report(doc: Any) -> Audit:
    """The findings of one ``pip-audit --format json`` document."""
    if not isinstance(doc, dict) or not isinstance(doc.get("dependencies"), list):
        raise ReportError("expected an object with a 'dependencies' array (pip-audit --format json)")
    vulnerabilities: list[Vulnerability] = []
    skipped: list[tuple[str, str]] = []
    audited = 0
    for dep in doc["dependencies"]:
        if not isinstance(dep, dict) or not isinstance(dep.get("name"), str):
            raise ReportError(f"a dependency without a name: {dep!r:.120}")
        if "skip_reason" in dep:
            skipped.append((dep["name"], str(dep["skip_reason"])))
            continue
        audited += 1
        for vuln in dep.get("vulns") or []:
            if not isinstance(vuln, dict) or not isinstance(vuln.get("id"), str):
                raise ReportError(f"{dep['name']}: a vulnerability without an id: {vuln!r:.120}")
            vulnerabilities.append(
                Vulnerability(
                    package=dep["name"],
                    version=str(dep.get("version", "?")),
                    id=vuln["id"],
                    fix_versions=tuple(str(v) for v in vuln.get("fix_versions") or ()),
                    aliases=tuple(str(a) for a in vuln.get("aliases") or ()),
                )
            )
    return Audit(tuple(vulnerabilities), audited, tuple(skipped))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: audit.py REPORT.json (from pip-audit --format json)", file=sys.stderr)
        return UNREADABLE
    try:
        audit = read_report(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        print(f"audit: cannot read the pip-audit report {argv[0]}: {exc}", file=sys.stderr)
        return UNREADABLE
    for vuln in audit.fixable:
        print(f"FIXABLE {vuln.line()}")
    for vuln in audit.vulnerabilities:
        if not vuln.fixable:
            print(f"known, no fix yet: {vuln.line()}")
    total = audit.audited + len(audit.skipped)
    print(
        f"audit: {audit.audited} of {total} dependencies checked, {len(audit.skipped)} could not be; "
        f"{len(audit.vulnerabilities)} known vulnerabilities, {len(audit.fixable)} with a fix"
    )
    if audit.skipped and not audit.audited:
        reason = audit.skipped[0][1]
        print(f"audit: warning: no dependency could be checked (e.g. {reason})")
    return 1 if audit.fixable else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
