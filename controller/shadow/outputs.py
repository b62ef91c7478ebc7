"""Where shadow comparisons read outputs from and what the cleanup may delete.

Outputs are local files or ``s3://`` objects. An S3 object is streamed to a temporary file (never
held in memory whole) after its size was checked against the limit. Cleanup deletes only what
lies under the quarantine root: a location outside it is refused, so a real output can never be
removed by mistake.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from controller.shadow.xlsx import TooLargeError
from cutover_job.storage import is_s3, split_s3


class OutputError(Exception):
    """An output could not be read or removed; the message names its location."""


def inside(location: str, root: str) -> bool:
    """Whether ``location`` lies under the quarantine ``root`` (an S3 prefix or a directory)."""
    if is_s3(root) or is_s3(location):
        if not (is_s3(root) and is_s3(location)):
            return False
        prefix = root if root.endswith("/") else root + "/"
        return location.startswith(prefix) and "/../" not in location[len(prefix) - 1 :]
    base = os.path.realpath(root)
    target = os.path.realpath(location)
    return target != base and os.path.commonpath([base, target]) == base


class Outputs:
    """Reads and removes outputs at file paths or S3 URIs (the S3 client made on first use)."""

    def __init__(self, s3: Any | None = None, make_s3: Any | None = None) -> None:
        self._s3 = s3
        self._make_s3 = make_s3

    def _client(self) -> Any:
        if self._s3 is None:
            if self._make_s3 is None:
                raise OutputError("no S3 client configured for s3:// outputs")
            self._s3 = self._make_s3()
        return self._s3

    @contextlib.contextmanager
    def local(self, location: str, max_bytes: int) -> Iterator[Path]:
        """A local file with the output's bytes, for as long as the block runs."""
        if not is_s3(location):
            path = Path(location)
            try:
                size = path.stat().st_size
            except OSError as exc:
                raise OutputError(f"output {location}: {exc.strerror or exc}") from exc
            if size > max_bytes:
                raise TooLargeError(f"output {location} is {size} bytes, over the limit of {max_bytes}")
            yield path
            return
        bucket, key = split_s3(location)
        client = self._client()
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except Exception as exc:  # any SDK failure means the output cannot be read
            raise OutputError(f"output {location}: {exc}") from exc
        size = int(head.get("ContentLength", 0))
        if size > max_bytes:
            raise TooLargeError(f"output {location} is {size} bytes, over the limit of {max_bytes}")
        with tempfile.TemporaryDirectory(prefix="cutover-shadow-") as tmp:
            target = Path(tmp) / "output"
            try:
                with target.open("wb") as fh:
                    client.download_fileobj(bucket, key, fh)
            except Exception as exc:
                raise OutputError(f"output {location}: {exc}") from exc
            yield target

    def remove(self, location: str, quarantine: str) -> bool:
        """Delete a quarantined output; False when it was already gone. Refuses anything outside."""
        if not inside(location, quarantine):
            raise OutputError(f"{location} is outside the quarantine {quarantine}; not removed")
        if is_s3(location):
            bucket, key = split_s3(location)
            try:
                self._client().delete_object(Bucket=bucket, Key=key)
            except Exception as exc:
                raise OutputError(f"removing {location}: {exc}") from exc
            return True
        path = Path(location)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise OutputError(f"removing {location}: {exc.strerror}") from exc
        _prune(path.parent, Path(os.path.realpath(quarantine)))
        return True


def _prune(directory: Path, root: Path) -> None:
    """Remove directories left empty under the quarantine root, up to (not including) it."""
    current = Path(os.path.realpath(directory))
    while current != root and root in current.parents:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent
