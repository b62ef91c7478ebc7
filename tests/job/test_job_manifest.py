"""The manifest document of the job contract, built in one place for every writer (the CodeBuild and
Batch adapters, the two local runners): its exact bytes, and that the job helper reads it back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import cutover_job
from controller.core.domain import DispatchItem
from cutover_job import Shape, manifest_document, manifest_entry

ITEMS = (
    DispatchItem("inv-2026-04.t42", 42, {"form": "orders", "a": 'ü"x'}, "v7", 3),
    DispatchItem("b_2", 7, {}, "v8", 1),
)

# What the writers wrote before they shared one definition: a manifest must not change by a byte,
# since the CodeBuild idempotency token is a digest of these bytes and jobs already out there read them.
SORTED_LEGACY = (
    b'{"batch":"Lkey","contract":1,"conversions":[{"conversion_id":"inv-2026-04.t42","fence":3,'
    b'"flag_version":"v7","params":{"a":"\\u00fc\\"x","form":"orders"},"tenant_id":42},'
    b'{"conversion_id":"b_2","fence":1,"flag_version":"v8","params":{},"tenant_id":7}],'
    b'"path":"legacy","threads":4}'
)
SORTED_NEW = (
    b'{"batch":"Nkey","contract":1,"conversions":[{"conversion_id":"inv-2026-04.t42","fence":3,'
    b'"flag_version":"v7","params":{"a":"\\u00fc\\"x","form":"orders"},"tenant_id":42},'
    b'{"conversion_id":"b_2","fence":1,"flag_version":"v8","params":{},"tenant_id":7}],"path":"new"}'
)
IN_ORDER_LEGACY = (
    b'{"contract":1,"batch":"Lkey","path":"legacy","threads":4,"conversions":['
    b'{"conversion_id":"inv-2026-04.t42","tenant_id":42,"params":{"form":"orders","a":"\\u00fc\\"x"},'
    b'"flag_version":"v7","fence":3},'
    b'{"conversion_id":"b_2","tenant_id":7,"params":{},"flag_version":"v8","fence":1}]}'
)


def sorted_bytes(doc: dict[str, Any]) -> bytes:
    """As the AWS adapters serialise a manifest (``controller.plumbing.aws.manifest_bytes``)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def in_order_bytes(doc: dict[str, Any]) -> bytes:
    """As the local runners serialise a file (``controller.plumbing.localproc.write_json``)."""
    return json.dumps(doc, separators=(",", ":")).encode()


def test_an_old_path_manifest_has_the_bytes_the_writers_always_wrote() -> None:
    doc = manifest_document("Lkey", "legacy", ITEMS, threads=4)
    assert sorted_bytes(doc) == SORTED_LEGACY
    assert in_order_bytes(doc) == IN_ORDER_LEGACY


def test_a_new_path_manifest_has_no_threads_and_the_bytes_the_writers_always_wrote() -> None:
    doc = manifest_document("Nkey", "new", ITEMS)
    assert "threads" not in doc
    assert sorted_bytes(doc) == SORTED_NEW


def test_an_entry_lists_the_conversion_fields_in_the_contract_order() -> None:
    """The local new-path runner writes one entry per queued job, between its own fields."""
    spec = {"job_id": "Nkey.b_2", **manifest_entry(ITEMS[1]), "submitted_at": 1000.0}
    assert in_order_bytes(spec) == (
        b'{"job_id":"Nkey.b_2","conversion_id":"b_2","tenant_id":7,"params":{},'
        b'"flag_version":"v8","fence":1,"submitted_at":1000.0}'
    )


def test_an_entry_is_a_copy_of_the_conversion_params() -> None:
    params = {"form": "orders"}
    entry = manifest_entry(DispatchItem("c1", 1, params, "v1", 1))
    entry["params"]["form"] = "changed"
    assert params == {"form": "orders"}


def test_a_build_reads_back_every_conversion_and_the_threads(tmp_path: Path) -> None:
    doc = manifest_document("Lkey", "legacy", ITEMS, threads=4)
    job = cutover_job.from_env(
        {
            "CUTOVER_MANIFEST_JSON": json.dumps(doc),
            "CUTOVER_RESULTS_DIR": str(tmp_path / "results"),
        }
    )
    assert (job.shape, job.path, job.batch, job.threads, job.flag_version) == (
        Shape.MANIFEST,
        "legacy",
        "Lkey",
        4,
        "v7,v8",
    )
    assert [
        (c.conversion_id, c.tenant_id, dict(c.params), c.flag_version, c.fence) for c in job.conversions
    ] == [(i.conversion_id, i.tenant_id, i.params, i.flag_version, i.fence) for i in ITEMS]


def test_an_array_child_reads_back_its_entry_and_a_job_can_write_the_manifest_again(tmp_path: Path) -> None:
    """The helper's own ``Conversion`` is a manifest entry too: what it read, it writes back the same."""
    manifest = tmp_path / "manifest.json"
    doc = manifest_document("Nkey", "new", ITEMS)
    manifest.write_bytes(sorted_bytes(doc))
    env = {
        "CUTOVER_MANIFEST": str(manifest),
        "CUTOVER_RESULTS_DIR": str(tmp_path / "results"),
        "AWS_BATCH_JOB_ARRAY_INDEX": "1",
    }
    job = cutover_job.from_env(env)
    assert (job.shape, job.path, job.batch, job.threads) == (Shape.ARRAY_CHILD, "new", "Nkey", 1)
    assert [c.conversion_id for c in job.conversions] == ["b_2"]
    whole = cutover_job.from_env({**env, "AWS_BATCH_JOB_ARRAY_INDEX": "", "CUTOVER_PATH": "new"})
    assert sorted_bytes(manifest_document("Nkey", "new", whole.conversions)) == SORTED_NEW


@pytest.mark.parametrize(
    ("path", "threads", "named"),
    [
        ("sideways", None, "manifest path 'sideways'"),
        ("", 2, "manifest path ''"),
        ("legacy", 0, "manifest threads 0"),
        ("legacy", -3, "manifest threads -3"),
        ("legacy", True, "manifest threads True"),
    ],
)
def test_a_manifest_a_job_would_refuse_is_not_built(path: str, threads: int | None, named: str) -> None:
    with pytest.raises(ValueError, match=f"^{named}"):
        manifest_document("Lkey", path, ITEMS, threads=threads)
