"""The file store of ``cutover flag``: numbered flag versions kept beside the flag file.

Layout, for ``CUTOVER_FLAG_FILE=flags.json``::

    flags.json                      the version in force (replaced atomically on each deployment)
    flags.json.history/0001.json    version 1, byte for byte
    flags.json.history/0001.meta.json  who wrote it, when, from which version, what changed
    flags.json.history/deployments.jsonl  one line per deployment (which version, who, rollback)

So a local run behaves like AppConfig: versions are immutable and numbered, a deployment puts one
in force, a rollback deploys an older number. Only this module writes under the history folder.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from controller.core.errors import ConflictError, FlagInvalidError, NotFoundError
from flags.atomic import write_atomically
from flags.document import MAX_DOCUMENT_BYTES, load_json, read_values, with_values
from flags.versions import Deployment, FlagContent, InForce, Note, Version

_VERSION_FILE = re.compile(r"^(\d{4,})\.json$")
# The agent's local development mode reads the values form, so a new flag file starts in it.
# Small documents stay readable in an editor; big ones stay well under AppConfig's size limit.
_INDENT_BELOW_BYTES = 64 * 1024


def history_dir(path: Path) -> Path:
    """The folder that keeps the numbered versions of the flag file ``path``."""
    return path.with_name(path.name + ".history")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def serialize(doc: Any) -> bytes:
    """A flag document as the file store writes it."""
    compact = json.dumps(doc, separators=(",", ":"))
    if len(compact) < _INDENT_BELOW_BYTES:
        return (json.dumps(doc, indent=1) + "\n").encode()
    return (compact + "\n").encode()


class FileVersionStore:
    """Numbered versions of the flag file, deployed by write-then-rename; safe for concurrent commands."""

    def __init__(self, path: Path, flag_key: str) -> None:
        self.path = path
        self.flag_key = flag_key
        self.history = history_dir(path)
        self.name = f"file {path}"
        self._shas: dict[int, str] = {}

    # -- reading -----------------------------------------------------------------------------

    def _numbers(self) -> list[int]:
        try:
            names = os.listdir(self.history)
        except FileNotFoundError:
            return []
        return sorted(int(m[1]) for m in map(_VERSION_FILE.match, names) if m)

    def _file(self, number: int, suffix: str = ".json") -> Path:
        return self.history / f"{number:04d}{suffix}"

    def document(self, number: int) -> bytes:
        """Version ``number``'s bytes."""
        try:
            return self._file(number).read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"flag version {number} does not exist in {self.history}") from exc

    def _sha_of(self, number: int) -> str | None:
        if number not in self._shas:
            try:
                self._shas[number] = _sha(self.document(number))
            except NotFoundError:
                return None
        return self._shas[number]

    def _note(self, number: int) -> Note | None:
        try:
            meta = json.loads(self._file(number, ".meta.json").read_text())
            return Note(**meta["note"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def content(self, number: int) -> FlagContent:
        where = str(self._file(number))
        enabled, ids = read_values(
            load_json(self.document(number), where), flag_key=self.flag_key, where=where
        )
        return FlagContent(enabled, frozenset(ids))

    def versions(self) -> list[Version]:
        out = []
        for n in self._numbers():
            note = self._note(n)
            out.append(Version(n, note.describe() if note else "", note))
        return out

    def _deployment_lines(self) -> list[dict[str, Any]]:
        try:
            text = (self.history / "deployments.jsonl").read_text()
        except FileNotFoundError:
            return []
        lines = []
        for raw in text.splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue  # a line cut short by a crash: that deployment never completed
        return lines

    def deployments(self, limit: int) -> list[Deployment]:
        out = []
        for line in reversed(self._deployment_lines()[-limit:] if limit > 0 else []):
            out.append(
                Deployment(
                    number=line["number"],
                    version=line["version"],
                    state=line.get("state", "COMPLETE"),
                    started_at=line.get("at"),
                    completed_at=line.get("at"),
                    description=line.get("description", ""),
                    rollback=bool(line.get("rollback")),
                )
            )
        return out

    def version_of(self, raw: bytes) -> int | None:
        """The recorded version whose bytes are ``raw`` (the last deployed one first), else None."""
        numbers = self._numbers()
        if not numbers:
            return None
        sha = _sha(raw)
        lines = self._deployment_lines()
        if lines and self._sha_of(int(lines[-1]["version"])) == sha:
            return int(lines[-1]["version"])
        for n in reversed(numbers):
            if self._sha_of(n) == sha:
                return n
        return None

    def _read_in_force(self) -> bytes | None:
        try:
            with self.path.open("rb") as fh:
                return fh.read(MAX_DOCUMENT_BYTES + 1)
        except FileNotFoundError:
            return None

    def in_force(self) -> InForce | None:
        raw = self._read_in_force()
        if raw is None:
            return None
        where = str(self.path)
        enabled, ids = read_values(load_json(raw, where), flag_key=self.flag_key, where=where)
        return InForce(self.version_of(raw), FlagContent(enabled, frozenset(ids)))

    def in_progress(self) -> Deployment | None:
        # A file deployment is one rename: it is never seen half done.
        return None

    def strategy_warning(self) -> str | None:
        return None

    # -- writing -----------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.history.mkdir(parents=True, exist_ok=True)
        with (self.history / ".lock").open("a") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise ConflictError(
                        f"another `cutover flag` command is changing {self.path}; "
                        "rerun this one when it is done"
                    ) from exc
                raise
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def create_version(self, content: FlagContent, note: Note, latest: int | None) -> int:
        with self._locked():
            numbers = self._numbers()
            newest = numbers[-1] if numbers else None
            if newest != latest:
                raise ConflictError(
                    f"flag version {newest} was written after this command read version {latest}; "
                    "look again (`cutover flag show`) and rerun"
                )
            base: Any = None
            raw = self._read_in_force()
            if raw is not None:
                try:
                    base = load_json(raw, str(self.path))
                except FlagInvalidError:
                    base = None  # a broken file in force is replaced, not merged
            data = serialize(
                with_values(base, self.flag_key, content.enabled, content.tenant_ids, new_form="values")
            )
            number = (newest or 0) + 1
            meta = {
                "version": number,
                "sha256": _sha(data),
                "bytes": len(data),
                "note": dataclasses.asdict(note),
            }
            write_atomically(self._file(number, ".meta.json"), (json.dumps(meta, indent=1) + "\n").encode())
            write_atomically(self._file(number), data)
            self._shas[number] = _sha(data)
            return number

    def deploy(self, number: int, note: Note) -> Deployment:
        with self._locked():
            data = self.document(number)
            write_atomically(self.path, data)
            deployment = Deployment(
                number=len(self._deployment_lines()) + 1,
                version=number,
                state="COMPLETE",
                started_at=note.at,
                completed_at=note.at,
                description=note.describe(),
                rollback=note.rollback,
            )
            line = {
                "number": deployment.number,
                "version": number,
                "state": deployment.state,
                "at": note.at,
                "by": note.by,
                "rollback": note.rollback,
                "description": deployment.description,
            }
            with (self.history / "deployments.jsonl").open("a") as fh:
                fh.write(json.dumps(line) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            return deployment

    def stop(self, deployment: Deployment) -> Deployment:
        raise ConflictError(f"deployment {deployment.number} of {self.path} is complete; nothing to stop")

    def refresh(self, deployment: Deployment) -> Deployment:
        return deployment
