"""The file flag source: the flag document on local disk, for the embedded default and local runs.

Reads the same formats AppConfig produces (see ``flags.document``), so one file serves the agent's
local development mode, this source and ``cutover flag advance``. The version is the number of the
matching version ``cutover flag`` recorded beside the file (``flags.file_store``); a file edited
by hand has a content hash instead, and the snapshot says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from controller.core.errors import FlagUnavailableError
from flags.atomic import write_atomically, write_json_atomically
from flags.document import MAX_DOCUMENT_BYTES, parse_flag
from flags.file_store import FileVersionStore
from flags.snapshot import FlagSnapshot

__all__ = ["FileFlagSource", "write_atomically", "write_json_atomically"]


class FileFlagSource:
    """Reads and validates the flag file on every fetch (one fetch per cycle)."""

    name = "file"

    def __init__(self, path: Path, flag_key: str, clock: Callable[[], float]) -> None:
        self.path = path
        self.flag_key = flag_key
        self._clock = clock
        self._versions = FileVersionStore(path, flag_key)

    def fetch(self) -> FlagSnapshot:
        """The flag in the file now; ``FlagUnavailableError`` without a file, ``FlagInvalidError``
        for a bad one."""
        try:
            with self.path.open("rb") as fh:
                raw = fh.read(MAX_DOCUMENT_BYTES + 1)
        except FileNotFoundError as exc:
            raise FlagUnavailableError(f"flag file {self.path} does not exist") from exc
        except OSError as exc:
            raise FlagUnavailableError(f"flag file {self.path}: {exc.strerror}") from exc
        number = self._versions.version_of(raw)
        return parse_flag(
            raw,
            flag_key=self.flag_key,
            source=self.name,
            fetched_at=self._clock(),
            version=str(number) if number is not None else None,
            where=str(self.path),
        )
