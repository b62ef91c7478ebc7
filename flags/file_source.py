"""The file flag source: the flag document on local disk, for the embedded default and local runs.

Reads the same formats AppConfig produces (see ``flags.document``); the version is a short hash of
the content.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.errors import FlagUnavailableError
from flags.document import MAX_DOCUMENT_BYTES, parse_flag
from flags.snapshot import FlagSnapshot


class FileFlagSource:
    """Reads and validates the flag file on every fetch (one fetch per cycle)."""

    name = "file"

    def __init__(self, path: Path, flag_key: str, clock: Callable[[], float]) -> None:
        self.path = path
        self.flag_key = flag_key
        self._clock = clock

    def fetch(self) -> FlagSnapshot:
        try:
            with self.path.open("rb") as fh:
                raw = fh.read(MAX_DOCUMENT_BYTES + 1)
        except FileNotFoundError as exc:
            raise FlagUnavailableError(f"flag file {self.path} does not exist") from exc
        except OSError as exc:
            raise FlagUnavailableError(f"flag file {self.path}: {exc.strerror}") from exc
        return parse_flag(
            raw,
            flag_key=self.flag_key,
            source=self.name,
            fetched_at=self._clock(),
            where=str(self.path),
        )


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old or the new file, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomically(path: Path, doc: Any) -> None:
    """``write_atomically`` for a JSON document."""
    import json

    write_atomically(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
