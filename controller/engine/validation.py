"""Turning a rejected input file into one line that names the file, the key and what is wrong.

Shared by the forecast's profile and price files; reads nothing and decides nothing.
"""

from __future__ import annotations

from pydantic import ValidationError


def problem(source: str, exc: ValidationError, at: str = "") -> str:
    """``source: key.path: what is wrong (got value)`` for the first error pydantic found, the key
    path under ``at`` when the document checked was part of a larger one."""
    first = exc.errors()[0]
    where = ".".join([at] * bool(at) + [str(part) for part in first["loc"]]) or "the document"
    message = str(first["msg"]).removeprefix("Value error, ")
    got = first.get("input")
    shown = "" if isinstance(got, dict | list) or first["type"] == "missing" else f" (got {got!r:.60})"
    return f"{source}: {where}: {message}{shown}"
