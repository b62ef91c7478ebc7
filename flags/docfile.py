"""A document file a user hands in: JSON for a ``.json`` name, YAML for any other.

Reading and decoding only: what the document must hold is its caller's to check, and nothing is
written here. Every failure is an ``InputError`` that names the file the caller's way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from controller.core.errors import InputError


def read_document(path: Path, source: str, *, missing: str | None = None) -> Any:
    """The decoded document in ``path``. ``InputError`` starts with ``source`` (``"profile p.yaml"``)
    when it cannot be read or decoded; ``missing`` is the whole message when there is no such file."""
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise InputError(missing or f"{source}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, not text
        raise InputError(f"{source}: cannot read it ({exc})") from exc
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        # The decoders' messages span lines (YAML marks the spot); an error is shown on one.
        raise InputError(f"{source}: not valid {kind} ({' '.join(str(exc).split())})") from exc
