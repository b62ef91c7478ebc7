"""A target finder over S3: new objects under a prefix become conversions.

``CUTOVER_FINDER_S3_URI=s3://bucket/prefix/`` and ``CUTOVER_FINDER_S3_PATTERN`` (default
``exports/{tenant_id}/{report}/{date}.json``) say where to look and how a key maps to a conversion:
``tenant_id`` becomes the tenant, the other fields become parameters, and the conversion id is
derived from the key, so the same object always yields the same conversion. The watermark is the
newest modification time seen, so each run takes only what is new.

Use it as ``CUTOVER_TARGET_FINDER=controller.finder_s3:find``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

import boto3

from controller.core.errors import ConfigError
from controller.intake.finder import FinderContext, Found

DEFAULT_PATTERN = "exports/{tenant_id}/{report}/{date}.json"
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
    return Found(conversions, newest)


def find(context: FinderContext) -> Found:
    """The finder entry point: reads its bucket, prefix and pattern from the settings."""
    settings = context.settings
    if not settings.finder_s3_uri:
        raise ConfigError("CUTOVER_FINDER_S3_URI: required by the S3 finder")
    bucket, prefix = split_uri(settings.finder_s3_uri)
    pattern = compile_pattern(settings.finder_s3_pattern)
    return find_in(boto3.client("s3"), bucket, prefix, pattern, context.watermark)
