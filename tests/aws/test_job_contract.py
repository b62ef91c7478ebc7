"""The job contract over the wire (moto server): what the adapters send is what the job helper
reads, what the helper writes is what the adapters read, and a job writes only its own results.

The round trips start the sample worker as a process with the environment the adapter sent (moto
runs no containers or builds), then put the job or build into the state its exit status implies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path as FsPath
from typing import Any

import pytest

import cutover_job
from controller.core.domain import DispatchBatch, DispatchItem, JobRef, JobStatus, Path
from controller.plumbing.aws import ManifestStore, Retrier
from controller.plumbing.localproc import SAMPLE_WORKER, result_state
from cutover_job import ArrayIndexError, ManifestError, NotAssignedError, Shape, Status
from legacy_adapter.codebuild import CodeBuildBackend
from new_adapter.batch import BatchBackend
from tests.aws.moto_world import BUCKET, JOB_DEFINITION, PROJECT, QUEUE, World

OUTPUT_URI = f"s3://{BUCKET}/outputs/"  # where the examples' workbooks go in these tests


@pytest.fixture
def aws(world: World) -> World:
    world.bucket()
    world.calls.clear()
    return world


def store(aws: World, retrier: Retrier) -> ManifestStore:
    return ManifestStore(aws.client("s3"), BUCKET, "manifests/", retrier)


def codebuild(aws: World, retrier: Retrier) -> CodeBuildBackend:
    aws.codebuild()
    return CodeBuildBackend(aws.client("codebuild"), store(aws, retrier), project=PROJECT, retrier=retrier)


def batch(aws: World, retrier: Retrier) -> BatchBackend:
    aws.batch()
    return BatchBackend(
        aws.client("batch"),
        store(aws, retrier),
        job_queue=QUEUE,
        job_definition=JOB_DEFINITION,
        retrier=retrier,
    )


def build_env(aws: World) -> dict[str, str]:
    """The environment overrides of the last StartBuild (as recorded on the way out)."""
    sent = aws.calls.params("StartBuild")[-1]
    return {v["name"]: v["value"] for v in sent["environmentVariablesOverride"]}


def job_envs(aws: World) -> list[dict[str, str]]:
    """The container environment of every SubmitJob, in order."""
    return [
        {p["name"]: p["value"] for p in sent["containerOverrides"]["environment"]}
        for sent in aws.calls.params("SubmitJob")
    ]


def s3_keys(aws: World, prefix: str) -> list[str]:
    answer = aws.client("s3", hooked=False).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in answer.get("Contents", []))


def s3_json(aws: World, key: str) -> dict[str, Any]:
    body = aws.client("s3", hooked=False).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return dict(json.loads(body))


def item(cid: str, tenant: int = 5, fence: int = 1, **params: str) -> DispatchItem:
    return DispatchItem(cid, tenant, dict(params), "v7", fence)


def run_worker(
    aws: World, env: dict[str, str], out: FsPath, **extra: str
) -> subprocess.CompletedProcess[str]:
    """The sample worker as the platform would start it: the adapter's environment, AWS at moto."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CUTOVER_", "AWS_"))}
    return subprocess.run(
        [sys.executable, str(SAMPLE_WORKER)],
        env={**base, **aws.env(), **env, "CUTOVER_OUTPUT_DIR": str(out), **extra},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- manifest in, conversions out ----------------------------------------------------------------------


def test_a_build_reads_the_manifest_the_codebuild_adapter_wrote(aws: World, retrier: Retrier) -> None:
    """A manifest too big to inline is read from S3: every conversion, the threads, the batch."""
    items = tuple(item(f"conv-{i}", 10 + i, fence=3, note="x" * 1200) for i in range(3))
    codebuild(aws, retrier).submit(DispatchBatch("Lread", Path.LEGACY, items, 4))
    env = build_env(aws)
    assert "CUTOVER_MANIFEST_JSON" not in env
    aws.calls.clear()
    job = cutover_job.from_env(env, s3_client=aws.client("s3"))
    assert aws.calls.count("GetObject") == 1
    assert (job.shape, job.path, job.batch, job.threads, job.flag_version) == (
        Shape.MANIFEST,
        "legacy",
        "Lread",
        4,
        "v7",
    )
    assert [
        (c.conversion_id, c.tenant_id, dict(c.params), c.flag_version, c.fence) for c in job.conversions
    ] == [(i.conversion_id, i.tenant_id, i.params, i.flag_version, i.fence) for i in items]
    assert job.result_locations["conv-1"] == f"s3://{BUCKET}/manifests/legacy/Lread/results/conv-1.json"


def test_an_inlined_manifest_is_used_without_reading_s3(aws: World, retrier: Retrier) -> None:
    codebuild(aws, retrier).submit(DispatchBatch("Linline", Path.LEGACY, (item("a"), item("b")), 2))
    env = build_env(aws)
    assert "CUTOVER_MANIFEST_JSON" in env
    aws.calls.clear()
    job = cutover_job.from_env(env, s3_client=aws.client("s3"))
    assert [c.conversion_id for c in job.conversions] == ["a", "b"]
    assert aws.calls.count("GetObject") == 0


def test_array_children_own_one_entry_each_and_an_index_past_the_manifest_is_refused(
    aws: World, retrier: Retrier
) -> None:
    items = tuple(item(f"conv-{i}", 20 + i) for i in range(3))
    batch(aws, retrier).submit(DispatchBatch("Narray", Path.NEW, items, 0))
    (env,) = job_envs(aws)
    s3 = aws.client("s3")
    owned = [
        cutover_job.from_env({**env, "AWS_BATCH_JOB_ARRAY_INDEX": str(i)}, s3_client=s3) for i in range(3)
    ]
    assert [job.shape for job in owned] == [Shape.ARRAY_CHILD] * 3
    assert [[c.conversion_id for c in job.conversions] for job in owned] == [
        ["conv-0"],
        ["conv-1"],
        ["conv-2"],
    ]
    assert [job.conversions[0].tenant_id for job in owned] == [20, 21, 22]
    assert {job.threads for job in owned} == {1}
    uri = f"s3://{BUCKET}/manifests/new/Narray/manifest.json"
    with pytest.raises(
        ArrayIndexError, match=rf"AWS_BATCH_JOB_ARRAY_INDEX=3 .* manifest {uri} has 3 conversions"
    ):
        cutover_job.from_env({**env, "AWS_BATCH_JOB_ARRAY_INDEX": "3"}, s3_client=s3)


def test_a_single_job_takes_its_conversion_from_the_environment_or_its_manifest_entry(
    aws: World, retrier: Retrier
) -> None:
    """Parameters too large for the environment are read from the job's manifest entry."""
    backend = batch(aws, retrier)
    backend.submit(
        DispatchBatch("Nsmall", Path.NEW, (item("inv.2026-04.t42", 42, fence=3, form="orders"),), 0)
    )
    backend.submit(DispatchBatch("Nlarge", Path.NEW, (item("big-1", 43, fence=4, blob="y" * 9000),), 0))
    small, large = job_envs(aws)
    assert "CUTOVER_PARAMS" not in large
    s3 = aws.client("s3")
    aws.calls.clear()
    job = cutover_job.from_env(small, s3_client=s3)
    assert aws.calls.count("GetObject") == 0
    (conv,) = job.conversions
    assert (job.shape, job.fence, conv.conversion_id, conv.tenant_id, dict(conv.params)) == (
        Shape.CONVERSION,
        3,
        "inv.2026-04.t42",
        42,
        {"form": "orders"},
    )
    assert job.result_locations == {conv.conversion_id: small["CUTOVER_RESULT_URI"]}
    job = cutover_job.from_env(large, s3_client=s3)
    assert aws.calls.count("GetObject") == 1
    assert dict(job.conversions[0].params) == {"blob": "y" * 9000}
    assert job.fence == 4


# -- refused inputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "code"),
    [
        (f"s3://{BUCKET}/manifests/legacy/Lnone/manifest.json", "NoSuchKey"),
        ("s3://no-such-bucket/manifests/legacy/Lnone/manifest.json", "NoSuchBucket"),
    ],
)
def test_a_missing_manifest_is_named_with_its_variable(aws: World, uri: str, code: str) -> None:
    env = {
        "CUTOVER_MANIFEST_URI": uri,
        "CUTOVER_RESULTS_URI": f"s3://{BUCKET}/manifests/legacy/Lnone/results/",
    }
    with pytest.raises(
        ManifestError, match=rf"CUTOVER_MANIFEST_URI: manifest {uri} does not exist \({code}\)"
    ):
        cutover_job.from_env(env, s3_client=aws.client("s3"))
    with pytest.raises(ManifestError, match="CUTOVER_MANIFEST_URI"):
        cutover_job.from_env({**env, "AWS_BATCH_JOB_ARRAY_INDEX": "0"}, s3_client=aws.client("s3"))


@pytest.mark.parametrize("hostile", ["../Lother/results/conv-1", "conv/../../x", "..", "conv\r\n"])
def test_a_manifest_with_an_id_that_could_escape_the_results_prefix_is_refused(
    aws: World, hostile: str
) -> None:
    s3 = aws.client("s3")
    body = {"contract": 1, "conversions": [{"conversion_id": hostile, "tenant_id": 1, "params": {}}]}
    s3.put_object(Bucket=BUCKET, Key="manifests/legacy/Lbad/manifest.json", Body=json.dumps(body).encode())
    env = {
        "CUTOVER_MANIFEST_URI": f"s3://{BUCKET}/manifests/legacy/Lbad/manifest.json",
        "CUTOVER_RESULTS_URI": f"s3://{BUCKET}/manifests/legacy/Lbad/results/",
    }
    aws.calls.clear()
    with pytest.raises(ManifestError, match="not a safe conversion id"):
        cutover_job.from_env(env, s3_client=s3)
    assert aws.calls.count("PutObject") == 0
    assert s3_keys(aws, "manifests/") == ["manifests/legacy/Lbad/manifest.json"]


def test_a_manifest_of_a_newer_contract_is_refused(aws: World) -> None:
    s3 = aws.client("s3")
    body = {"contract": 2, "conversions": [{"conversion_id": "c1", "tenant_id": 1}]}
    s3.put_object(Bucket=BUCKET, Key="manifests/legacy/Lnext/manifest.json", Body=json.dumps(body).encode())
    env = {
        "CUTOVER_MANIFEST_URI": f"s3://{BUCKET}/manifests/legacy/Lnext/manifest.json",
        "CUTOVER_RESULTS_URI": f"s3://{BUCKET}/manifests/legacy/Lnext/results/",
    }
    with pytest.raises(ManifestError, match="job contract 2; this helper knows version 1"):
        cutover_job.from_env(env, s3_client=s3)


# -- results -------------------------------------------------------------------------------------------


def test_a_result_written_twice_is_the_second_and_the_adapters_reader_sees_it(
    aws: World, retrier: Retrier
) -> None:
    batch(aws, retrier).submit(DispatchBatch("Ntwice", Path.NEW, (item("c0"), item("c1"), item("c2")), 0))
    (env,) = job_envs(aws)
    child = cutover_job.from_env({**env, "AWS_BATCH_JOB_ARRAY_INDEX": "1"}, s3_client=aws.client("s3"))
    child.write_result("c1", Status.FAILED, reason="first attempt lost its database connection")
    child.write_result("c1", Status.SUCCEEDED, output="s3://out/c1.xlsx", started_at=5.0, finished_at=9.0)
    assert s3_keys(aws, "manifests/new/Ntwice/results/") == ["manifests/new/Ntwice/results/c1.json"]
    doc = s3_json(aws, "manifests/new/Ntwice/results/c1.json")
    assert (doc["contract"], doc["status"], doc["reason"], doc["output"]) == (
        1,
        "succeeded",
        "",
        "s3://out/c1.xlsx",
    )
    state = result_state(store(aws, retrier).get("manifests/new/Ntwice/results/c1.json", cached=False), "c1")
    assert state is not None
    assert (state.status, state.output) == (JobStatus.SUCCEEDED, "s3://out/c1.xlsx")


def test_a_result_for_a_conversion_the_job_does_not_own_is_refused_and_nothing_is_written(
    aws: World, retrier: Retrier
) -> None:
    backend = batch(aws, retrier)
    backend.submit(DispatchBatch("Nown", Path.NEW, (item("c0"), item("c1"), item("c2")), 0))
    backend.submit(DispatchBatch("Nother", Path.NEW, (item("x9"),), 0))
    array_env, single_env = job_envs(aws)
    s3 = aws.client("s3")
    child = cutover_job.from_env({**array_env, "AWS_BATCH_JOB_ARRAY_INDEX": "0"}, s3_client=s3)
    single = cutover_job.from_env(single_env, s3_client=s3)
    aws.calls.clear()
    for job, other in ((child, "c1"), (child, "x9"), (child, "../Nother/results/x9"), (single, "c0")):
        with pytest.raises(NotAssignedError, match="is not assigned to this job"):
            job.write_result(other, Status.SUCCEEDED, output="stolen")
    assert aws.calls.count("PutObject") == 0
    assert [k for k in s3_keys(aws, "manifests/") if "/results/" in k] == []


# -- round trips: adapter → sample worker → adapter ----------------------------------------------------


def test_a_build_the_codebuild_adapter_started_works_its_manifest_and_the_adapter_reads_the_results(
    aws: World, retrier: Retrier, tmp_path: FsPath
) -> None:
    backend = codebuild(aws, retrier)
    items = (item("ok-1", 5), item("bad-2", 6, simulate="fail"), item("ok-3", 7, note="n" * 3000))
    refs = backend.submit(DispatchBatch("Lround", Path.LEGACY, items, 2))
    env = build_env(aws)
    assert "CUTOVER_MANIFEST_JSON" not in env  # so the worker reads the manifest from S3
    done = run_worker(aws, env, tmp_path / "out", CODEBUILD_BUILD_ID=refs[0].job_id)
    assert done.returncode == 0, done.stderr
    aws.set_build(refs[0].job_id, "SUCCEEDED")

    states = backend.poll(refs)
    assert [states[r].status for r in refs] == [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.SUCCEEDED]
    assert states[refs[1]].reason == "simulated failure"
    assert states[refs[0]].output == str(tmp_path / "out" / "5" / "ok-1.xlsx")
    assert FsPath(str(states[refs[2]].output)).is_file()
    doc = s3_json(aws, "manifests/legacy/Lround/results/ok-1.json")
    assert (doc["contract"], doc["fence"], doc["job_id"]) == (1, 1, refs[0].job_id)
    produced = [json.loads(x) for x in (tmp_path / "out" / "produced.jsonl").read_text().splitlines()]
    assert sorted((p["conversion_id"], p["path"]) for p in produced) == [
        ("ok-1", "legacy"),
        ("ok-3", "legacy"),
    ]


def test_jobs_the_batch_adapter_submitted_write_results_the_adapter_reads(
    aws: World, retrier: Retrier, tmp_path: FsPath
) -> None:
    """A single job and an array job's children, each run as Batch would start it; each exit
    status becomes the job's status, and a failure's reason comes from the job's own result."""
    backend = batch(aws, retrier)
    refs = backend.submit(
        DispatchBatch("Nsingle", Path.NEW, (item("one-1", 3, fence=2, simulate="fail"),), 0)
    )
    refs += backend.submit(
        DispatchBatch(
            "Narr", Path.NEW, (item("arr-0", 4), item("arr-1", 4, simulate="fail"), item("arr-2", 5)), 0
        )
    )
    single_env, array_env = job_envs(aws)
    exits: dict[JobRef, int] = {}
    for ref in refs:
        if ":" in ref.job_id:
            index = ref.job_id.rsplit(":", 1)[1]
            env = {**array_env, "AWS_BATCH_JOB_ARRAY_INDEX": index}
        else:
            env = single_env
        done = run_worker(aws, env, tmp_path / "out", AWS_BATCH_JOB_ID=ref.job_id)
        exits[ref] = done.returncode
        aws.set_job(
            ref.job_id,
            "SUCCEEDED" if done.returncode == 0 else "FAILED",
            reason="Essential container in task exited",
        )
    aws.set_job(refs[1].job_id.split(":")[0], "FAILED", reason="Array Child Job failed")
    assert [exits[r] for r in refs] == [1, 0, 1, 0]

    states = backend.poll(refs)
    assert [states[r].status for r in refs] == [
        JobStatus.FAILED,
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.SUCCEEDED,
    ]
    for failed in (refs[0], refs[2]):
        assert states[failed].reason.startswith("simulated failure (Essential container in task exited")
    assert states[refs[1]].output == f"s3://{BUCKET}/manifests/new/Narr/results/arr-0.json"
    assert s3_keys(aws, "manifests/new/Narr/results/") == [
        f"manifests/new/Narr/results/arr-{i}.json" for i in range(3)
    ]
    single = s3_json(aws, "manifests/new/Nsingle/results/one-1.json")
    assert (single["status"], single["fence"], single["job_id"]) == ("failed", 2, refs[0].job_id)
    produced = [json.loads(x) for x in (tmp_path / "out" / "produced.jsonl").read_text().splitlines()]
    assert sorted((p["conversion_id"], p["path"]) for p in produced) == [("arr-0", "new"), ("arr-2", "new")]


def test_a_failed_job_without_a_result_keeps_the_reason_batch_gives(aws: World, retrier: Retrier) -> None:
    backend = batch(aws, retrier)
    (ref,) = backend.submit(DispatchBatch("Ngone", Path.NEW, (item("gone-1"),), 0))
    aws.set_job(ref.job_id, "FAILED", reason="Essential container in task exited")
    state = backend.poll([ref])[ref]
    assert state.status is JobStatus.FAILED
    assert state.reason.startswith("Essential container in task exited")


# -- the wiring examples -------------------------------------------------------------------------------

EXAMPLES = FsPath(__file__).resolve().parents[2] / "examples"


def python3_on_path(tmp_path: FsPath) -> str:
    """A PATH whose ``python3`` is this interpreter (the examples call ``python3``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "python3"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    return f"{bin_dir}:{os.environ.get('PATH', '')}"


def test_the_example_buildspec_works_the_manifest_the_codebuild_adapter_sends(
    aws: World, retrier: Retrier, tmp_path: FsPath
) -> None:
    import yaml

    spec = yaml.safe_load((EXAMPLES / "buildspec.yml").read_text())
    assert spec["version"] == 0.2
    backend = codebuild(aws, retrier)
    refs = backend.submit(DispatchBatch("Lspec", Path.LEGACY, (item("s-1"), item("s-2", simulate="fail")), 2))
    env = {
        **{k: str(v) for k, v in spec["env"]["variables"].items()},
        **build_env(aws),
        "CUTOVER_OUTPUT_DIR": str(tmp_path / "out"),
        "CUTOVER_OUTPUT_URI": OUTPUT_URI,
        "PATH": python3_on_path(tmp_path),
    }
    assert "CUTOVER_OUTPUT_URI" in spec["env"]["variables"]
    root = EXAMPLES.parent
    for command in spec["phases"]["build"]["commands"]:
        done = run_worker_shell(aws, command, env, root)
        assert done.returncode == 0, done.stderr
    aws.set_build(refs[0].job_id, "SUCCEEDED")
    states = backend.poll(refs)
    assert [states[r].status for r in refs] == [JobStatus.SUCCEEDED, JobStatus.FAILED]
    assert_workbook_put(aws, "Lspec", "s-1", 5)


def assert_workbook_put(aws: World, batch: str, conversion_id: str, tenant: int) -> None:
    """The conversion's result names its workbook under the output URI, and the workbook is there."""
    path = "legacy" if batch.startswith("L") else "new"
    result = s3_json(aws, f"manifests/{path}/{batch}/results/{conversion_id}.json")
    key = f"outputs/{tenant}/{conversion_id}.xlsx"
    assert result["output"] == f"s3://{BUCKET}/{key}"
    body = aws.client("s3", hooked=False).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert body[:2] == b"PK"  # an .xlsx is a zip archive


def run_worker_shell(
    aws: World, command: str, env: dict[str, str], cwd: FsPath
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CUTOVER_", "AWS_"))}
    return subprocess.run(
        ["/bin/bash", "-c", command],
        env={**base, **aws.env(), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_example_job_definition_is_one_the_batch_adapter_accepts_and_runs(
    aws: World, retrier: Retrier, tmp_path: FsPath
) -> None:
    """Registered as it is, the example leaves the adapter no capacity or retry complaint, and its
    command works the conversion the adapter submits."""
    definition = json.loads((EXAMPLES / "batch-job-definition.json").read_text())
    aws.batch()
    aws.client("batch", hooked=False).register_job_definition(**definition)
    backend = BatchBackend(
        aws.client("batch"),
        store(aws, retrier),
        job_queue=QUEUE,
        job_definition=definition["jobDefinitionName"],
        fargate_quota=1000.0,
        retrier=retrier,
    )
    assert backend.set_capacity(3) == 3
    assert backend.capacity.vcpus_per_job == 2.0
    assert backend.warnings() == []

    (ref,) = backend.submit(DispatchBatch("Ndef", Path.NEW, (item("d-1", 9),), 0))
    container = definition["containerProperties"]
    env = {
        **{p["name"]: p["value"] for p in container["environment"]},
        **job_envs(aws)[0],
        "CUTOVER_OUTPUT_DIR": str(tmp_path / "out"),
        "CUTOVER_OUTPUT_URI": OUTPUT_URI,
        "PATH": python3_on_path(tmp_path),
        "AWS_BATCH_JOB_ID": ref.job_id,
    }
    assert "CUTOVER_OUTPUT_URI" in env
    done = run_worker_shell(aws, " ".join(container["command"]), env, EXAMPLES.parent)
    assert done.returncode == 0, done.stderr
    aws.set_job(ref.job_id, "SUCCEEDED")
    state = backend.poll([ref])[ref]
    assert state.status is JobStatus.SUCCEEDED
    assert s3_json(aws, "manifests/new/Ndef/results/d-1.json")["status"] == "succeeded"
    assert_workbook_put(aws, "Ndef", "d-1", 9)


@pytest.mark.parametrize(
    "uri", ["s3://cutover-manifests/", "https://example.com/out/", "s3://bucket/no-slash"]
)
def test_the_sample_worker_refuses_an_output_uri_that_is_not_an_s3_prefix(
    aws: World, retrier: Retrier, tmp_path: FsPath, uri: str
) -> None:
    backend = batch(aws, retrier)
    backend.submit(DispatchBatch("Nuri", Path.NEW, (item("u-1"),), 0))
    done = run_worker(aws, job_envs(aws)[0], tmp_path / "out", CUTOVER_OUTPUT_URI=uri)
    assert done.returncode == 2
    assert f"CUTOVER_OUTPUT_URI: {uri!r} is not s3://bucket/prefix/" in done.stderr
    assert s3_keys(aws, "manifests/new/Nuri/results/") == []


def test_a_workbook_that_cannot_be_put_in_place_fails_its_conversion(
    aws: World, retrier: Retrier, tmp_path: FsPath
) -> None:
    backend = batch(aws, retrier)
    backend.submit(DispatchBatch("Nput", Path.NEW, (item("p-1"),), 0))
    done = run_worker(aws, job_envs(aws)[0], tmp_path / "out", CUTOVER_OUTPUT_URI="s3://no-such-bucket/out/")
    assert done.returncode == 1
    result = s3_json(aws, "manifests/new/Nput/results/p-1.json")
    assert result["status"] == "failed"
    assert "could not put the workbook in place" in result["reason"]
