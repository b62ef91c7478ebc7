"""Replacing a file so that a reader sees the old content or the new, never a part of either.

One implementation serves the whole project: the job contract's (temporary file beside the target,
fsync, rename, then fsync of the directory), which has to stand alone in a job's image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cutover_job.storage import write_file_atomically as write_atomically

__all__ = ["write_atomically", "write_json_atomically"]


def write_json_atomically(path: Path, doc: Any) -> None:
    """``write_atomically`` for a JSON document."""
    write_atomically(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
