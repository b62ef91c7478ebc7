"""Reading terraform/ the way the structural tests need it: every .tf file parsed by python-hcl2.

python-hcl2 8.x, loaded with quotes stripped and without block markers, gives each file as a dict
of lists: ``{"resource": [{"aws_x": {"name": {...}}}], "variable": [{"name": {...}}], ...}``.
Blocks inside a body are lists of dicts; expressions stay strings of the form ``"${...}"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
from hcl2.utils import SerializationOptions

REPO = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO / "terraform"
MODULES_DIR = TERRAFORM_DIR / "modules"
MODULE_NAMES = ("appconfig", "batch", "codebuild", "controller", "ledger", "signals")

OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)


def tf_files(root: Path = TERRAFORM_DIR) -> list[Path]:
    """Every .tf file of the deployable configuration, in a stable order."""
    return sorted(p for p in root.rglob("*.tf") if ".terraform" not in p.parts)


def load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return hcl2.load(handle, serialization_options=OPTIONS)


def parse_all(root: Path = TERRAFORM_DIR) -> dict[Path, dict[str, Any]]:
    return {path: load(path) for path in tf_files(root)}


@dataclass(frozen=True)
class Block:
    """One ``resource`` or ``data`` block."""

    path: Path
    kind: str
    type: str
    name: str
    body: dict[str, Any]

    @property
    def address(self) -> str:
        where = self.path.relative_to(TERRAFORM_DIR)
        prefix = "data." if self.kind == "data" else ""
        return f"{where}:{prefix}{self.type}.{self.name}"


def blocks(parsed: dict[Path, dict[str, Any]], kind: str, type_: str | None = None) -> list[Block]:
    """Every block of ``kind`` ("resource" or "data"), optionally of one type."""
    found = []
    for path, doc in parsed.items():
        for entry in doc.get(kind, []):
            for block_type, named in entry.items():
                if type_ is not None and block_type != type_:
                    continue
                for name, body in named.items():
                    found.append(Block(path, kind, block_type, name, body))
    return found


def one_block(parsed: dict[Path, dict[str, Any]], kind: str, type_: str) -> Block:
    found = blocks(parsed, kind, type_)
    assert len(found) == 1, f"expected one {kind} {type_}, found {[b.address for b in found]}"
    return found[0]


def variables(parsed: dict[Path, dict[str, Any]]) -> Iterator[tuple[Path, str, dict[str, Any]]]:
    for path, doc in parsed.items():
        for entry in doc.get("variable", []):
            for name, body in entry.items():
                yield path, name, body


def module_locals(parsed: dict[Path, dict[str, Any]], directory: Path) -> dict[str, Any]:
    """All ``locals`` of the files of one directory (one module), merged."""
    merged: dict[str, Any] = {}
    for path, doc in parsed.items():
        if path.parent == directory:
            for entry in doc.get("locals", []):
                merged.update(entry)
    return merged


def nested(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The nested blocks ``name`` of a body (an absent block is an empty list)."""
    value = body.get(name, [])
    return value if isinstance(value, list) else [value]


def single(body: dict[str, Any], name: str) -> dict[str, Any]:
    found = nested(body, name)
    assert len(found) == 1, f"expected one {name} block, found {len(found)}"
    return found[0]


@dataclass(frozen=True)
class Statement:
    """One statement of an ``aws_iam_policy_document``, static or from a dynamic block."""

    document: Block
    body: dict[str, Any]
    dynamic: bool

    @property
    def effect(self) -> str:
        return str(self.body.get("effect", "Allow"))

    def strings(self, name: str) -> list[str]:
        value = self.body.get(name, [])
        if isinstance(value, str):  # an expression standing for the whole list
            return [value]
        return [str(v) for v in value]

    @property
    def label(self) -> str:
        return f"{self.document.address} statement {self.body.get('sid', '(no sid)')}"


def policy_statements(document: Block) -> list[Statement]:
    out = [Statement(document, body, False) for body in nested(document.body, "statement")]
    for dynamic in nested(document.body, "dynamic"):
        for content_owner in nested(dynamic, "statement"):
            for content in nested(content_owner, "content"):
                out.append(Statement(document, content, True))
    return out


INTERPOLATION = re.compile(r"^\$\{(.*)\}$", re.DOTALL)


def expression(value: Any) -> str | None:
    """The expression inside ``"${...}"``, or None for a literal."""
    if isinstance(value, str):
        match = INTERPOLATION.match(value)
        if match:
            return match.group(1)
    return None


def version_satisfies(version: str, constraint: str) -> bool:
    """Whether ``version`` meets a Terraform version constraint such as ``">= 5.100, < 7.0"``."""

    def parts(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in text.strip().split("."))

    def padded(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        width = max(len(a), len(b))
        return a + (0,) * (width - len(a)), b + (0,) * (width - len(b))

    have = parts(version)
    for clause in constraint.split(","):
        match = re.fullmatch(r"\s*(>=|<=|!=|~>|>|<|=)?\s*([0-9][0-9.]*)\s*", clause)
        assert match, f"cannot read version constraint clause {clause!r}"
        op, raw = match.group(1) or "=", match.group(2)
        want = parts(raw)
        a, b = padded(have, want)
        if op == "~>":
            upper = (*want[:-2], want[-2] + 1) if len(want) > 1 else (want[0] + 1,)
            ok = a >= b and padded(have, upper)[0] < padded(have, upper)[1]
        else:
            ok = {
                ">=": a >= b,
                "<=": a <= b,
                ">": a > b,
                "<": a < b,
                "=": a == b,
                "!=": a != b,
            }[op]
        if not ok:
            return False
    return True
