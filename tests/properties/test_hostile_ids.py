"""Whatever id the intake lets in, and whatever batch key the adapters accept, stays a plain name
downstream: S3 manifest and result keys stay under their prefix, file and URL paths gain no
segment, and job names keep Batch's character set and length.

Every entry (HTTP, SQS, the finders) goes through ``intake.validate_conversion_id``; the AWS
adapters take a batch key only through ``aws.checked_key``. Both are fed hostile text here as
well as everything their patterns allow.
"""

from __future__ import annotations

import ntpath
import posixpath
import re
import unicodedata
from urllib.parse import quote

import boto3
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controller.core.domain import CONVERSION_ID_PATTERN, ConversionRecord, ConversionState, Path
from controller.core.errors import InputError, SubmitRejectedError
from controller.engine.cycle import batch_key
from controller.intake.validation import validate_conversion_id
from controller.plumbing.aws import ManifestStore, Retrier, checked_key

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HOSTILE = [
    "",
    ".",
    "..",
    "../x",
    "a/../../b",
    "a/b",
    "a\\b",
    "..\\..\\b",
    "/abs",
    "C:x",
    "a\x00b",
    "a\nb",
    "ab\n",
    "a\rb",
    "a\x1b[31m",
    "a\x7f",
    "a\u0085b",
    "a\u2028b",
    "a\u200bb",
    "a\u202eb",
    "ten\u0430nt",  # Cyrillic a
    "\uff21\uff22",  # fullwidth AB
    "a\u2215b",  # division slash
    "a\uff0fb",  # fullwidth solidus
    "a\u2024\u2024b",  # one-dot leaders
    "a\ud800",
    "a%2Fb",
    "a b",
    "a:b",
    "a*b",
    "-a",
    "_a",
    ".a",
    "x" * 129,
]
HOSTILE_KEYS = [*HOSTILE, "N" * 65, "N1\n", "N1-a", "N1.a", "N1_a", "\uff2e1"]
ACCEPTED_IDS = st.from_regex(CONVERSION_ID_PATTERN, fullmatch=True)
ANY_TEXT = st.one_of(st.text(max_size=140), st.sampled_from(HOSTILE_KEYS))
PLAIN_KEYS = st.from_regex(r"\A[A-Za-z0-9]{1,64}\Z")
PREFIX_NAMES = ["", "manifests/", "team-a/cutover/manifests/"]
PREFIXES = st.sampled_from(PREFIX_NAMES)
S3_KEY_MAX_BYTES = 1024


def manifest_store(prefix: str) -> ManifestStore:
    """The real store; its client points at a closed port and is never called (keys are pure)."""
    s3 = boto3.client(
        "s3",
        region_name="eu-west-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="unused",
        aws_secret_access_key="unused",
    )
    return ManifestStore(s3, "bucket", prefix, Retrier())


STORES = {prefix: manifest_store(prefix) for prefix in PREFIX_NAMES}


def plain_segment(text: str) -> bool:
    """One path segment in every reading: printable ASCII, no separator, not a dot segment."""
    return (
        text.isascii()
        and text.isprintable()
        and text not in ("", ".", "..")
        and posixpath.basename(text) == text
        and ntpath.basename(text) == text
        and not any(unicodedata.category(c).startswith("C") for c in text)
    )


@PROPERTY
@given(value=st.one_of(ACCEPTED_IDS, ANY_TEXT))
@example(value="a" * 128)
def test_an_id_the_intake_accepts_is_one_plain_name_everywhere(value: str) -> None:
    try:
        cid = validate_conversion_id(value)
    except InputError:
        assert not CONVERSION_ID_PATTERN.match(value)
        return
    assert plain_segment(cid)
    assert plain_segment(cid + ".json")
    assert not cid.startswith((".", "-", "_"))
    assert quote(cid, safe="") == cid  # nothing to escape in a URL path or query
    assert len(cid) <= 128


@pytest.mark.parametrize("hostile", HOSTILE, ids=ascii)
def test_each_hostile_example_is_refused_as_an_id(hostile: str) -> None:
    with pytest.raises(InputError):
        validate_conversion_id(hostile)


@pytest.mark.parametrize("hostile", HOSTILE_KEYS, ids=ascii)
def test_each_hostile_example_is_refused_as_a_batch_key(hostile: str) -> None:
    with pytest.raises(SubmitRejectedError):
        checked_key(hostile)


@PROPERTY
@given(value=st.one_of(PLAIN_KEYS, ANY_TEXT))
def test_a_batch_key_is_accepted_only_when_it_is_plain_alphanumeric(value: str) -> None:
    try:
        key = checked_key(value)
    except SubmitRejectedError:
        assert not re.fullmatch(r"[A-Za-z0-9]{1,64}", value, flags=re.ASCII)
        return
    assert re.fullmatch(r"[A-Za-z0-9]{1,64}", key, flags=re.ASCII)
    assert plain_segment(key)


@settings(PROPERTY, max_examples=100)
@given(
    ids=st.lists(ACCEPTED_IDS, min_size=1, max_size=6),
    fences=st.lists(st.integers(0, 10**6), min_size=6, max_size=6),
    path=st.sampled_from(Path),
)
def test_the_cycle_only_makes_batch_keys_the_adapters_accept(
    ids: list[str], fences: list[int], path: Path
) -> None:
    records = [
        ConversionRecord(cid, 1, {}, ConversionState.CLAIMED, path, fence=fence)
        for cid, fence in zip(ids, fences, strict=False)
    ]
    key = batch_key(path, records)
    assert checked_key(key) == key


@PROPERTY
@given(key=PLAIN_KEYS, cid=ACCEPTED_IDS, prefix=PREFIXES, path=st.sampled_from(Path))
@example(key="N" * 64, cid="x" * 128, prefix="team-a/cutover/manifests/", path=Path.NEW)
def test_manifest_and_result_keys_stay_under_their_batch_prefix(
    key: str, cid: str, prefix: str, path: Path
) -> None:
    store = STORES[prefix]
    batch_dir = f"{prefix}{path.value}/{checked_key(key)}/"
    manifest = store.key(path.value, key)
    result = store.key(path.value, key, "results/") + f"{validate_conversion_id(cid)}.json"
    assert manifest == batch_dir + "manifest.json"
    assert result == batch_dir + "results/" + cid + ".json"
    for object_key in (manifest, result):
        assert posixpath.normpath(object_key) == object_key  # no "..", ".", "//" to collapse
        assert ".." not in object_key.split("/")
        assert all(plain_segment(part) for part in object_key.split("/"))
        assert len(object_key.encode()) <= S3_KEY_MAX_BYTES
        assert store.key_of(store.uri(object_key)) == object_key
