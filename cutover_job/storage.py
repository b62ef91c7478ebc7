"""Where a job reads its manifest and writes its results: local files, or S3 objects (``s3://``).

boto3 is imported only when an ``s3://`` location is used, so a job that works on files needs no
AWS libraries. A file is written atomically (temporary file, fsync, rename); an S3 object is, by
nature, replaced whole by one PutObject.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cutover_job.errors import ManifestError, ResultWriteError

S3_SCHEME = "s3://"


def is_s3(location: str) -> bool:
    """True for an ``s3://bucket/key`` location."""
    return location.startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """(bucket, key) of an ``s3://bucket/key`` URI; ValueError when either part is missing."""
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket or not key:
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI")
    return bucket, key


def s3_client(environ: Mapping[str, str]) -> Any:
    """An S3 client configured from ``environ`` (region, endpoint) with standard retries."""
    import boto3
    from botocore.config import Config

    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    return boto3.client(
        "s3",
        region_name=region,
        endpoint_url=endpoint or None,
        config=Config(retries={"mode": "standard", "max_attempts": 5}),
    )


class Storage:
    """Reads and atomic writes of whole objects at file paths or ``s3://`` URIs."""

    def __init__(self, environ: Mapping[str, str], s3: Any | None = None) -> None:
        self._environ = environ
        self._s3 = s3

    def _client(self) -> Any:
        if self._s3 is None:
            self._s3 = s3_client(self._environ)
        return self._s3

    def prepare(self, *locations: str) -> None:
        """Create the S3 client now if any location needs it (before threads share it)."""
        if any(is_s3(loc) for loc in locations):
            self._client()

    def read(self, location: str, *, named_by: str) -> bytes:
        """The bytes at ``location``; ManifestError naming the variable when they cannot be read."""
        if not is_s3(location):
            try:
                return Path(location).read_bytes()
            except FileNotFoundError as exc:
                raise ManifestError(f"{named_by}: manifest {location} does not exist") from exc
            except OSError as exc:
                raise ManifestError(f"{named_by}: cannot read manifest {location}: {exc}") from exc
        try:
            bucket, key = split_s3(location)
        except ValueError as exc:
            raise ManifestError(f"{named_by}: {exc}") from exc
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._client().get_object(Bucket=bucket, Key=key)
            body: bytes = answer["Body"].read()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket"):
                raise ManifestError(f"{named_by}: manifest {location} does not exist ({code})") from exc
            raise ManifestError(f"{named_by}: cannot read manifest {location}: {exc}") from exc
        except BotoCoreError as exc:
            raise ManifestError(f"{named_by}: cannot read manifest {location}: {exc}") from exc
        return body

    def write(self, location: str, body: bytes) -> None:
        """Replace the object at ``location`` with ``body`` whole; ResultWriteError when it fails."""
        if not is_s3(location):
            try:
                write_file_atomically(Path(location), body)
            except OSError as exc:
                raise ResultWriteError(f"cannot write {location}: {exc}") from exc
            return
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            bucket, key = split_s3(location)
            self._client().put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
        except (ValueError, ClientError, BotoCoreError) as exc:
            raise ResultWriteError(f"cannot write {location}: {exc}") from exc


def write_file_atomically(path: Path, body: bytes) -> None:
    """Write ``body`` to ``path`` so a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a crash once the directory is synced
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
