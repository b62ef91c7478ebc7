"""The job helper on local files (the local runners' variant): the assignment read from the
environment, results written whole and only for owned conversions, inputs checked and named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import cutover_job
from controller.core.domain import CONVERSION_ID_PATTERN as CONTROLLER_ID_PATTERN
from controller.core.domain import JobStatus
from controller.plumbing.localproc import read_json, result_state
from cutover_job import (
    ArrayIndexError,
    AssignmentError,
    ManifestError,
    NotAssignedError,
    Outcome,
    Shape,
    Status,
)

ROOT = Path(__file__).resolve().parents[2]


def conversion(cid: str, tenant: int = 7, **params: str) -> dict[str, Any]:
    return {"conversion_id": cid, "tenant_id": tenant, "params": params, "flag_version": "v3", "fence": 2}


def manifest_file(tmp_path: Path, conversions: list[dict[str, Any]], **extra: Any) -> Path:
    path = tmp_path / "build" / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"conversions": conversions, **extra}))
    return path


def build_env(tmp_path: Path, manifest: Path, **extra: str) -> dict[str, str]:
    return {
        "CUTOVER_PATH": "legacy",
        "CUTOVER_MANIFEST": str(manifest),
        "CUTOVER_RESULTS_DIR": str(tmp_path / "build" / "results"),
        **extra,
    }


def files_in(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


# -- what a job receives -----------------------------------------------------------------------------


def test_a_build_owns_every_conversion_of_its_manifest_with_the_threads_it_was_given(tmp_path: Path) -> None:
    manifest = manifest_file(
        tmp_path, [conversion("a1"), conversion("a2", 8, form="x")], threads=3, batch="L1"
    )
    job = cutover_job.from_env(build_env(tmp_path, manifest, CUTOVER_JOB_ID="L1"))
    assert job.shape is Shape.MANIFEST
    assert job.path == "legacy"
    assert job.batch == "L1"
    assert job.job_id == "L1"
    assert job.threads == 3
    assert job.flag_version == "v3"
    assert [(c.conversion_id, c.tenant_id, dict(c.params), c.fence) for c in job.conversions] == [
        ("a1", 7, {}, 2),
        ("a2", 8, {"form": "x"}, 2),
    ]
    assert job.result_locations["a2"] == str(tmp_path / "build" / "results" / "a2.json")


def test_the_threads_variable_wins_over_the_manifest(tmp_path: Path) -> None:
    manifest = manifest_file(tmp_path, [conversion("a1")], threads=3)
    assert cutover_job.from_env(build_env(tmp_path, manifest, CUTOVER_THREADS="5")).threads == 5
    assert cutover_job.from_env(build_env(tmp_path, manifest)).threads == 3


def test_a_single_conversion_comes_from_the_environment(tmp_path: Path) -> None:
    result_file = tmp_path / "results" / "N1.c9.json"
    env = {
        "CUTOVER_PATH": "new",
        "CUTOVER_JOB_ID": "N1.c9",
        "CUTOVER_CONVERSION_ID": "c9",
        "CUTOVER_TENANT_ID": "42",
        "CUTOVER_PARAMS": '{"form":"orders"}',
        "CUTOVER_FLAG_VERSION": "v8",
        "CUTOVER_FENCE": "4",
        "CUTOVER_RESULT_FILE": str(result_file),
        "CUTOVER_DEADLINE": "1900000000.5",
    }
    job = cutover_job.from_env(env)
    assert job.shape is Shape.CONVERSION
    assert job.threads == 1
    assert job.fence == 4
    assert job.deadline == 1900000000.5
    (only,) = job.conversions
    assert (only.conversion_id, only.tenant_id, dict(only.params), only.flag_version, only.fence) == (
        "c9",
        42,
        {"form": "orders"},
        "v8",
        4,
    )
    assert job.result_locations == {"c9": str(result_file)}


def test_an_array_child_owns_the_entry_its_index_and_offset_point_at(tmp_path: Path) -> None:
    manifest = manifest_file(tmp_path, [conversion(f"c{i}") for i in range(5)])
    env = build_env(tmp_path, manifest, CUTOVER_PATH="new", CUTOVER_MANIFEST_OFFSET="1")
    job = cutover_job.from_env({**env, "AWS_BATCH_JOB_ARRAY_INDEX": "3"})
    assert job.shape is Shape.ARRAY_CHILD
    assert [c.conversion_id for c in job.conversions] == ["c4"]
    with pytest.raises(ArrayIndexError, match=r"AWS_BATCH_JOB_ARRAY_INDEX=4 .*entry 5.* has 5 conversions"):
        cutover_job.from_env({**env, "AWS_BATCH_JOB_ARRAY_INDEX": "4"})


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"CUTOVER_TENANT_ID": "forty"}, "CUTOVER_TENANT_ID"),
        ({"CUTOVER_TENANT_ID": ""}, "CUTOVER_TENANT_ID"),
        ({"CUTOVER_FENCE": "1.5"}, "CUTOVER_FENCE"),
        ({"CUTOVER_PARAMS": "[1]"}, "CUTOVER_PARAMS"),
        ({"CUTOVER_PARAMS": '{"n": 1}'}, "CUTOVER_PARAMS"),
        ({"CUTOVER_PARAMS": "{"}, "CUTOVER_PARAMS"),
        ({"CUTOVER_PATH": "sideways"}, "CUTOVER_PATH"),
        ({"CUTOVER_THREADS": "0"}, "CUTOVER_THREADS"),
        ({"CUTOVER_DEADLINE": "soon"}, "CUTOVER_DEADLINE"),
        ({"CUTOVER_CONVERSION_ID": "../c9"}, "CUTOVER_CONVERSION_ID"),
        ({"CUTOVER_RESULT_FILE": ""}, "CUTOVER_RESULT_URI or CUTOVER_RESULT_FILE"),
        ({"CUTOVER_RESULT_FILE": "", "CUTOVER_RESULTS_URI": "s3://bucket-only"}, "CUTOVER_RESULTS_URI"),
    ],
)
def test_a_malformed_variable_is_refused_by_name(tmp_path: Path, change: dict[str, str], named: str) -> None:
    env = {
        "CUTOVER_CONVERSION_ID": "c9",
        "CUTOVER_TENANT_ID": "42",
        "CUTOVER_PARAMS": "{}",
        "CUTOVER_RESULT_FILE": str(tmp_path / "r.json"),
        **change,
    }
    with pytest.raises(AssignmentError, match=named):
        cutover_job.from_env(env)


@pytest.mark.parametrize("index", ["-1", "two"])
def test_an_array_index_that_is_not_an_index_is_refused(tmp_path: Path, index: str) -> None:
    manifest = manifest_file(tmp_path, [conversion("c0")])
    with pytest.raises(AssignmentError, match="AWS_BATCH_JOB_ARRAY_INDEX"):
        cutover_job.from_env(build_env(tmp_path, manifest, AWS_BATCH_JOB_ARRAY_INDEX=index))


def test_a_missing_manifest_file_is_named(tmp_path: Path) -> None:
    env = build_env(tmp_path, tmp_path / "nowhere" / "manifest.json")
    with pytest.raises(
        ManifestError, match=r"CUTOVER_MANIFEST: manifest .*nowhere/manifest.json does not exist"
    ):
        cutover_job.from_env(env)


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        "[]",
        '{"conversions": {}}',
        '{"contract": 2, "conversions": []}',
        '{"contract": "1", "conversions": []}',
    ],
)
def test_a_manifest_that_is_not_one_this_helper_knows_is_refused(tmp_path: Path, body: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(body)
    with pytest.raises(ManifestError, match=str(path)):
        cutover_job.from_env(build_env(tmp_path, path))


@pytest.mark.parametrize(
    "hostile",
    ["../escape", "a/b", "..", ".hidden", "a\\b", "a\nb", "c\x00", "/abs", "x" * 129, "", 7, None],
)
def test_a_conversion_id_that_could_leave_the_results_prefix_is_refused(
    tmp_path: Path, hostile: object
) -> None:
    manifest = manifest_file(tmp_path, [conversion("fine"), {**conversion("x"), "conversion_id": hostile}])
    with pytest.raises(ManifestError, match=r"entry 1 .* is not a safe conversion id"):
        cutover_job.from_env(build_env(tmp_path, manifest))
    assert files_in(tmp_path) == ["build/manifest.json"]


def test_a_manifest_naming_a_conversion_twice_is_refused(tmp_path: Path) -> None:
    manifest = manifest_file(tmp_path, [conversion("c1"), conversion("c1")])
    with pytest.raises(ManifestError, match="names conversion c1 twice"):
        cutover_job.from_env(build_env(tmp_path, manifest))


@pytest.mark.parametrize(
    "cid", ["a", "A.b-c_d", "inv.2026-04.tenant_42", "x" * 128, "a..b", "a/b", "..", "-a", "a b", "é", "a\n"]
)
def test_the_helper_accepts_exactly_the_conversion_ids_the_controller_does(cid: str) -> None:
    assert cutover_job.valid_conversion_id(cid) == bool(CONTROLLER_ID_PATTERN.match(cid))


def test_the_controller_takes_its_conversion_id_rule_from_the_contract() -> None:
    """One definition: a change to the contract's character set changes the controller's intake too."""
    assert CONTROLLER_ID_PATTERN is cutover_job.CONVERSION_ID_PATTERN


# -- what a job writes back --------------------------------------------------------------------------


def test_results_are_written_whole_and_read_by_the_runners_reader(tmp_path: Path) -> None:
    manifest = manifest_file(tmp_path, [conversion("ok"), conversion("bad"), conversion("boom")], threads=2)
    job = cutover_job.from_env(build_env(tmp_path, manifest, CUTOVER_JOB_ID="L2"))

    def convert(c: cutover_job.Conversion) -> Outcome:
        if c.conversion_id == "boom":
            raise RuntimeError("disk full")
        if c.conversion_id == "bad":
            return Outcome.failed("no such form")
        return Outcome.succeeded(f"/out/{c.conversion_id}.xlsx")

    results = job.work(convert)
    assert [r.status for r in results] == [Status.SUCCEEDED, Status.FAILED, Status.FAILED]
    folder = tmp_path / "build" / "results"
    assert files_in(folder) == ["bad.json", "boom.json", "ok.json"]
    ok = read_json(folder / "ok.json")
    assert ok is not None
    assert ok["contract"] == cutover_job.CONTRACT_VERSION == 1
    assert (ok["status"], ok["output"], ok["fence"], ok["job_id"]) == ("succeeded", "/out/ok.xlsx", 2, "L2")
    assert ok["started_at"] <= ok["finished_at"]
    states = {cid: result_state(read_json(folder / f"{cid}.json"), cid) for cid in ("ok", "bad", "boom")}
    assert states["ok"] is not None
    assert states["ok"].status is JobStatus.SUCCEEDED
    assert states["ok"].output == "/out/ok.xlsx"
    assert states["bad"] is not None
    assert (states["bad"].status, states["bad"].reason) == (
        JobStatus.FAILED,
        "no such form",
    )
    assert states["boom"] is not None
    assert states["boom"].reason == "RuntimeError: disk full"
    assert (
        result_state(read_json(folder / "ok.json"), "bad") is None
    )  # one conversion's result never answers for another


def test_work_runs_up_to_the_threads_allowed_and_no_more(tmp_path: Path) -> None:
    manifest = manifest_file(tmp_path, [conversion(f"c{i}") for i in range(6)], threads=2)
    job = cutover_job.from_env(build_env(tmp_path, manifest))
    lock = threading.Lock()
    now = peak = 0
    both = threading.Barrier(2, timeout=30)

    def convert(c: cutover_job.Conversion) -> Outcome:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        both.wait()  # two run together, or this times out
        with lock:
            now -= 1
        return Outcome.succeeded()

    assert {r.status for r in job.work(convert)} == {Status.SUCCEEDED}
    assert peak == 2


def test_a_result_written_twice_is_the_second_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    manifest = manifest_file(tmp_path, [conversion("c1"), conversion("c2")])
    job = cutover_job.from_env(build_env(tmp_path, manifest))
    job.write_result("c2", Status.SUCCEEDED, output="/out/c2.xlsx")
    job.write_result("c1", "failed", reason="first attempt")
    job.write_result("c1", "succeeded", output="/out/c1.xlsx", started_at=10.0, finished_at=12.5)
    folder = tmp_path / "build" / "results"
    assert files_in(folder) == ["c1.json", "c2.json"]
    state = result_state(read_json(folder / "c1.json"), "c1")
    assert state is not None
    assert (state.status, state.output) == (JobStatus.SUCCEEDED, "/out/c1.xlsx")
    assert read_json(folder / "c1.json") == {
        "contract": 1,
        "conversion_id": "c1",
        "status": "succeeded",
        "reason": "",
        "output": "/out/c1.xlsx",
        "started_at": 10.0,
        "finished_at": 12.5,
        "fence": 2,
        "job_id": "",
    }
    assert (read_json(folder / "c2.json") or {}).get("output") == "/out/c2.xlsx"


def test_a_result_for_a_conversion_the_job_does_not_own_is_refused_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    manifest = manifest_file(tmp_path, [conversion(f"c{i}") for i in range(3)])
    env = build_env(tmp_path, manifest, CUTOVER_PATH="new")
    child = cutover_job.from_env({**env, "AWS_BATCH_JOB_ARRAY_INDEX": "1"})
    for other in ("c0", "c2", "../c1", "zz"):
        with pytest.raises(NotAssignedError, match=f"{other!r} is not assigned to this job"):
            child.write_result(other, Status.SUCCEEDED)
    assert files_in(tmp_path) == ["build/manifest.json"]
    single = cutover_job.from_env(
        {
            "CUTOVER_CONVERSION_ID": "c1",
            "CUTOVER_TENANT_ID": "1",
            "CUTOVER_PARAMS": "{}",
            "CUTOVER_RESULT_FILE": str(tmp_path / "r.json"),
        }
    )
    with pytest.raises(NotAssignedError):
        single.write_result("c2", Status.FAILED, reason="not mine")
    assert not (tmp_path / "r.json").exists()


def test_a_result_with_an_unknown_status_or_timing_is_refused(tmp_path: Path) -> None:
    manifest = manifest_file(tmp_path, [conversion("c1")])
    job = cutover_job.from_env(build_env(tmp_path, manifest))
    with pytest.raises(cutover_job.ResultWriteError, match="status 'done'"):
        job.write_result("c1", "done")
    with pytest.raises(cutover_job.ResultWriteError, match="started_at"):
        job.write_result("c1", Status.SUCCEEDED, started_at=float("nan"))
    assert not (tmp_path / "build" / "results").exists()


def test_the_helper_works_on_files_without_loading_boto3(tmp_path: Path) -> None:
    """A job image without AWS libraries can use the helper on files."""
    manifest = manifest_file(tmp_path, [conversion("c1")])
    script = (
        "import sys, cutover_job\n"
        "job = cutover_job.from_env()\n"
        "job.work(lambda c: cutover_job.Outcome.succeeded('x'))\n"
        "print(sorted(m for m in ('boto3', 'botocore', 'controller') if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, **build_env(tmp_path, manifest)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"
    assert (read_json(tmp_path / "build" / "results" / "c1.json") or {}).get("status") == "succeeded"


def test_the_sample_worker_says_what_is_wrong_with_its_assignment(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sample_worker.py")],
        env={
            **env,
            "CUTOVER_OUTPUT_DIR": str(tmp_path / "out"),
            "CUTOVER_MANIFEST": str(tmp_path / "none.json"),
            "CUTOVER_RESULTS_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "CUTOVER_MANIFEST: manifest" in done.stderr
    assert "does not exist" in done.stderr
