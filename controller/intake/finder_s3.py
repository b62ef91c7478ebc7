"""A target finder over S3: new objects under a prefix become conversions.

``CUTOVER_FINDER_S3_URI=s3://bucket/prefix/`` and ``CUTOVER_FINDER_S3_PATTERN`` (default
``exports/{tenant_id}/{report}/{date}.json``) say where to look and how a key maps to a conversion:
``tenant_id`` becomes the tenant, the other fields become parameters, and the conversion id is
derived from the key, so the same object always yields the same conversion. The watermark is the
newest modification time seen, held below the start of any multipart upload still in progress
(S3 dates such an object by that start once it completes), so each run takes only what is new and
nothing is skipped. It lists uploads in progress: grant ``s3:ListBucketMultipartUploads``.

Use it as ``CUTOVER_TARGET_FINDER=controller.finder_s3:find``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from typing import Any

import boto3
from botocore.exceptions import ClientError

from controller.core.errors import ConfigError
from controller.intake.finder import FinderContext, Found

DEFAULT_PATTERN = "exports/{tenant_id}/{report}/{date}.json"
log = logging.getLogger("cutover.intake")
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A key pattern with ``{name}`` fields (one path segment each) as a regular expression."""
    names = _FIELD.findall(pattern)
    if "tenant_id" not in names:
        raise ConfigError(f"CUTOVER_FINDER_S3_PATTERN: {pattern!r} has no {{tenant_id}} field")
    if len(names) != len(set(names)):
        raise ConfigError(f"CUTOVER_FINDER_S3_PATTERN: {pattern!r} repeats a field")
    parts = _FIELD.split(pattern)
    out = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out += re.escape(part)
        elif part == "tenant_id":
            out += r"(?P<tenant_id>[1-9][0-9]{0,15})"
        else:
            out += rf"(?P<{part}>[^/]+)"
    return re.compile(out)


def conversion_id(key: str) -> str:
    """A readable, collision-free, valid conversion id for an object key."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-._")[:100] or "object"
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix)."""
    match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?", uri)
    if not match:
        raise ConfigError(f"CUTOVER_FINDER_S3_URI: {uri!r} is not s3://bucket/prefix")
    return match.group(1), match.group(2) or ""


def find_in(client: Any, bucket: str, prefix: str, pattern: re.Pattern[str], watermark: str | None) -> Found:
    """Map objects under ``prefix`` modified at or after ``watermark`` whose key matches ``pattern``.

    The watermark is the newest modification time seen (ISO 8601). Keys carry no order of arrival,
    so every run lists the prefix and keeps the objects not older than the watermark; an object
    seen twice (same second) yields the same conversion id and is folded by the intake.
    """
    conversions: list[dict[str, Any]] = []
    newest = watermark
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            modified = obj["LastModified"].astimezone(dt.UTC).isoformat()
            if watermark is not None and modified < watermark:
                continue
            newest = max(newest or modified, modified)
            key = obj["Key"]
            match = pattern.fullmatch(key[len(prefix) :])
            if match is None:
                continue
            fields = match.groupdict()
            tenant = int(fields.pop("tenant_id"))
            params = {**fields, "s3_key": key[:1024]}
            conversions.append({"conversion_id": conversion_id(key), "tenant_id": tenant, "params": params})
    return Found(conversions, _below_uploads(client, bucket, prefix, newest))


# How far the watermark is held back when the uploads in progress cannot be listed.
UNLISTED_UPLOADS_LOOKBACK = dt.timedelta(hours=1)


def _below_uploads(client: Any, bucket: str, prefix: str, newest: str | None) -> str | None:
    """The watermark to keep: ``newest``, but no later than the start of a multipart upload still in
    progress. S3 dates such an object by its upload's start and lists it only once complete, so a
    watermark moved past that start would skip it for good (re-reading is harmless: the same key
    yields the same conversion id, folded by the intake)."""
    if newest is None:
        return None
    try:
        oldest = _oldest_upload(client, bucket, prefix)
    except ClientError as exc:
        log.warning("intake.s3_uploads_unlisted", extra={"bucket": bucket, "error": str(exc)})
        held = dt.datetime.fromisoformat(newest) - UNLISTED_UPLOADS_LOOKBACK
        return held.isoformat()
    return min(newest, oldest) if oldest is not None else newest


def _oldest_upload(client: Any, bucket: str, prefix: str) -> str | None:
    """The start (ISO 8601, UTC) of the oldest multipart upload in progress under ``prefix``."""
    oldest: str | None = None
    request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        answer = client.list_multipart_uploads(**request)
        for upload in answer.get("Uploads", []):
            started = upload["Initiated"].astimezone(dt.UTC).isoformat()
            oldest = started if oldest is None else min(oldest, started)
        if not answer.get("IsTruncated"):
            return oldest
        request["KeyMarker"] = answer.get("NextKeyMarker", "")
        request["UploadIdMarker"] = answer.get("NextUploadIdMarker", "")


def find(context: FinderContext) -> Found:
    """The finder entry point: reads its bucket, prefix and pattern from the settings."""
    settings = context.settings
    if not settings.finder_s3_uri:
        raise ConfigError("CUTOVER_FINDER_S3_URI: required by the S3 finder")
    bucket, prefix = split_uri(settings.finder_s3_uri)
    pattern = compile_pattern(settings.finder_s3_pattern)
    return find_in(boto3.client("s3"), bucket, prefix, pattern, context.watermark)
