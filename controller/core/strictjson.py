"""Strict JSON decoding, shared by the intake and the flag parser: what Python's decoder lets through
but JSON does not have is refused. Pure (text in, values out, no I/O); callers word their own errors
around the reason it gives.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def duplicate_key(key: str) -> str:
    """The default reason given for an object that names ``key`` twice."""
    return f"duplicate key {key!r}"


def loads_strict(text: str, *, repeated: Callable[[str], str] = duplicate_key) -> Any:
    """Decode ``text`` as JSON, refusing NaN, Infinity and -Infinity (Python's extensions) and an
    object that names one key twice (``repeated(key)`` says so). Raises ValueError with the reason
    (``json.JSONDecodeError`` for bad syntax), RecursionError for nesting too deep to follow."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # Parsers disagree on which of two equal keys wins; what a document means must not depend
        # on which one reads it.
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(repeated(key))
            out[key] = value
        return out

    return json.loads(text, parse_constant=_no_constant, object_pairs_hook=unique)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
