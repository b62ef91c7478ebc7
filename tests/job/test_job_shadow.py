"""Shadow runs in the job contract (still version 1): ``CUTOVER_SHADOW=1`` and a quarantine; the
helper refuses a shadow's output anywhere else, and the sample worker publishes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cutover_job
from controller.core.parity import CompareOptions
from controller.shadow.xlsx import compare_workbooks
from cutover_job import AssignmentError, QuarantineError
from cutover_job.contract import within_quarantine

ROOT = Path(__file__).resolve().parents[2]


def single_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "CUTOVER_PATH": "new",
        "CUTOVER_CONVERSION_ID": "c-7",
        "CUTOVER_TENANT_ID": "7",
        "CUTOVER_PARAMS": "{}",
        "CUTOVER_FENCE": "1",
        "CUTOVER_RESULT_FILE": str(tmp_path / "results" / "c-7.json"),
        **extra,
    }


def test_a_shadow_knows_it_is_one_and_where_its_quarantine_is(tmp_path: Path) -> None:
    quarantine = tmp_path / "q" / "job-1"
    job = cutover_job.from_env(
        single_env(tmp_path, CUTOVER_SHADOW="1", CUTOVER_QUARANTINE_URI=str(quarantine))
    )
    assert job.shadow
    assert job.quarantine == str(quarantine)
    assert job.quarantined("7", "c-7.xlsx") == f"{quarantine}/7/c-7.xlsx"
    plain = cutover_job.from_env(single_env(tmp_path))
    assert not plain.shadow
    assert plain.quarantine is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"CUTOVER_SHADOW": "1"}, "CUTOVER_SHADOW=1 without CUTOVER_QUARANTINE_URI"),
        ({"CUTOVER_SHADOW": "yes", "CUTOVER_QUARANTINE_URI": "/q"}, "CUTOVER_SHADOW='yes' is not 1 or 0"),
        ({"CUTOVER_SHADOW": "1", "CUTOVER_QUARANTINE_URI": "s3://"}, "CUTOVER_QUARANTINE_URI"),
    ],
)
def test_a_malformed_shadow_assignment_is_refused_by_name(
    tmp_path: Path, extra: dict[str, str], message: str
) -> None:
    with pytest.raises(AssignmentError, match=message):
        cutover_job.from_env(single_env(tmp_path, **extra))


def test_a_shadow_writing_outside_its_quarantine_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    quarantine = tmp_path / "q" / "job-1"
    job = cutover_job.from_env(
        single_env(tmp_path, CUTOVER_SHADOW="1", CUTOVER_QUARANTINE_URI=str(quarantine))
    )
    result = tmp_path / "results" / "c-7.json"
    for outside in (
        tmp_path / "output" / "7" / "c-7.xlsx",  # where real outputs go
        quarantine / ".." / "job-2" / "c-7.xlsx",  # a way out
        tmp_path / "q" / "job-1-x" / "c-7.xlsx",  # a sibling sharing the prefix
        "s3://exports/7/c-7.xlsx",
    ):
        with pytest.raises(QuarantineError, match="outside the quarantine"):
            job.write_result("c-7", "succeeded", output=outside)
        assert not result.exists()
    with pytest.raises(QuarantineError, match="not a name"):
        job.quarantined("..", "x")
    job.write_result("c-7", "succeeded", output=quarantine / "7" / "c-7.xlsx")
    assert json.loads(result.read_text())["output"] == str(quarantine / "7" / "c-7.xlsx")


def test_work_turns_an_output_outside_the_quarantine_into_a_failure(tmp_path: Path) -> None:
    """A job that tries to publish from a shadow fails that conversion, naming why."""
    quarantine = tmp_path / "q"
    job = cutover_job.from_env(
        single_env(tmp_path, CUTOVER_SHADOW="1", CUTOVER_QUARANTINE_URI=str(quarantine))
    )
    [result] = job.work(lambda c: cutover_job.Outcome.succeeded(str(tmp_path / "published.xlsx")))
    assert result.status is cutover_job.Status.FAILED
    assert "outside the quarantine" in result.reason
    assert result.output is None
    written = json.loads((tmp_path / "results" / "c-7.json").read_text())
    assert (written["status"], written["output"]) == ("failed", None)


def test_within_quarantine_on_s3_and_files() -> None:
    assert within_quarantine("s3://b/q/j1/7/c.xlsx", "s3://b/q/j1/")
    assert within_quarantine("s3://b/q/j1/7/c.xlsx", "s3://b/q/j1")
    assert not within_quarantine("s3://b/q/j1x/c.xlsx", "s3://b/q/j1")
    assert not within_quarantine("s3://b/q/j1/../j2/c.xlsx", "s3://b/q/j1/")
    assert not within_quarantine("s3://b/q/j1/", "s3://b/q/j1/")
    assert not within_quarantine("/q/j1/c.xlsx", "s3://b/q/j1/")
    assert within_quarantine("/q/j1/7/c.xlsx", "/q/j1")
    assert not within_quarantine("/q/j1/../x", "/q/j1")
    assert not within_quarantine("relative/c.xlsx", "/q")


def _run_worker(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sample_worker.py")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_sample_worker_as_a_shadow_writes_only_into_its_quarantine(tmp_path: Path) -> None:
    """Same workbook as the real run, in the quarantine; nothing in the outputs or produced.jsonl."""
    out = tmp_path / "output"
    real = _run_worker(single_env(tmp_path, CUTOVER_OUTPUT_DIR=str(out)))
    assert real.returncode == 0, real.stderr
    produced = (out / "produced.jsonl").read_text()
    quarantine = tmp_path / "quarantine" / "job-s"
    shadow_env = single_env(
        tmp_path,
        CUTOVER_OUTPUT_DIR=str(out),
        CUTOVER_SHADOW="1",
        CUTOVER_QUARANTINE_URI=str(quarantine),
        CUTOVER_RESULT_FILE=str(tmp_path / "shadow-result.json"),
        CUTOVER_PATH="new",
    )
    shadow = _run_worker(shadow_env)
    assert shadow.returncode == 0, shadow.stderr
    assert (out / "produced.jsonl").read_text() == produced
    output = json.loads((tmp_path / "shadow-result.json").read_text())["output"]
    assert output == str(quarantine / "7" / "c-7.xlsx")
    assert sorted(p.name for p in out.rglob("*.xlsx")) == ["c-7.xlsx"]  # only the real one
    assert compare_workbooks(out / "7" / "c-7.xlsx", Path(output), CompareOptions()).equal
