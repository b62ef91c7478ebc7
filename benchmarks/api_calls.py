"""AWS API economy: the calls it takes to submit 10,000 conversions and track them to their end.

Runs against a moto server on 127.0.0.1 (the one the AWS tests use, ``tests.aws.moto_world``),
with the resources a deployment has: a Fargate compute environment, job queue and job definition,
a CodeBuild project and the manifest bucket. Every AWS call is counted by operation with a
botocore ``before-call`` hook: on ours, on the session every client of the composition root is
made from; on the naive side, on its own clients.

Ours is what ``cutover run`` wires with ``CUTOVER_BACKEND=aws`` (``bootstrap.make_backends``, the
SQLite ledger, the flag file, ``cycle_config``): ``Controller.run_cycle`` is called until every
conversion is SUCCEEDED or FAILED. Two arrival patterns, each on a fresh moto state:

- burst: all conversions wait in the ledger before the first cycle;
- stream: ``--per-cycle`` (1,000) new conversions arrive before each cycle.

The naive side makes one SubmitJob (or one StartBuild) per conversion, then asks after each job
(or build) on its own, one DescribeJobs (or BatchGetBuilds) per job per round, until it has ended.

New path (every tenant migrated): moto's Batch finishes a job as it is submitted, so each side
sees its jobs end at its first look. Old path (no tenant migrated): moto's CodeBuild is made to
behave as documented (``codebuild_as_documented``); after each cycle (or after the naive side's
submissions) a stand-in for the worker writes each conversion's result object, as the legacy
build does, and ends the build SUCCEEDED. The stand-in's own calls are not counted.

"Submission" counts SubmitJob / StartBuild and the manifest PutObject; "tracking" counts
DescribeJobs, ListJobs, BatchGetBuilds and the result objects' ListObjectsV2 / GetObject; the
rest (capacity settings and quota reads) is shown as "capacity". Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path as FsPath
from typing import Any

from harness import FLAG_KEY, arguments, emit, goal, machine

import controller.plumbing.aws
from controller.bootstrap import cycle_config, make_backends, make_ledger
from controller.core.domain import ConversionRequest, ConversionState, Path
from controller.engine.cycle import Controller
from controller.plumbing.tally import ReconcileTally
from controller.settings import Settings
from flags.document import values_document
from flags.file_source import FileFlagSource, write_json_atomically
from flags.lkg import LastKnownGood
from tests.aws.moto_world import (
    BUCKET,
    JOB_DEFINITION,
    PROJECT,
    QUEUE,
    MotoServer,
    World,
    codebuild_as_documented,
)

TENANTS = 100
GOAL_SUBMISSION_PER_1000 = 1.0
SUBMISSION = frozenset({"batch:SubmitJob", "codebuild:StartBuild", "s3:PutObject"})
TRACKING = frozenset(
    {
        "batch:DescribeJobs",
        "batch:ListJobs",
        "codebuild:BatchGetBuilds",
        "s3:ListObjectsV2",
        "s3:GetObject",
    }
)


def _options(parser: Any) -> None:
    parser.add_argument("--conversions", type=int, default=10_000)
    parser.add_argument("--per-cycle", type=int, default=1_000, help="arrivals per cycle when streaming")


class CallCounter:
    """AWS calls by ``service:Operation``, from botocore's ``before-call`` event (one per call)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def record(self, event_name: str, **_: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        self.calls[f"{service}:{operation}"] += 1

    def hook(self, client: Any) -> Any:
        client.meta.events.register("before-call", self.record)
        return client


@contextmanager
def counted_sessions(counter: CallCounter) -> Iterator[None]:
    """Every client the composition root makes meanwhile reports its calls to ``counter``."""
    real = controller.plumbing.aws.session

    def session(region: str | None = None) -> Any:
        made = real(region)
        made.events.register("before-call", counter.record)
        return made

    controller.plumbing.aws.session = session  # type: ignore[assignment]
    try:
        yield
    finally:
        controller.plumbing.aws.session = real  # type: ignore[assignment]


def figures(calls: Counter[str], conversions: int, seconds: float, **extra: Any) -> dict[str, Any]:
    """A side's calls, grouped, and per 1,000 conversions."""
    submission = sum(n for op, n in calls.items() if op in SUBMISSION)
    tracking = sum(n for op, n in calls.items() if op in TRACKING)
    total = sum(calls.values())
    return {
        "calls": dict(sorted(calls.items())),
        "submission_calls": submission,
        "tracking_calls": tracking,
        "capacity_calls": total - submission - tracking,
        "total_calls": total,
        "per_1000": {
            "submission": round(submission * 1000 / conversions, 3),
            "tracking": round(tracking * 1000 / conversions, 3),
            "total": round(total * 1000 / conversions, 3),
        },
        "seconds": round(seconds, 2),
        **extra,
    }


def fresh(world: World) -> None:
    """An empty moto with the resources a deployment has."""
    world.server.reset()
    world.bucket()
    world.batch()
    world.codebuild()


def requests(n: int, start: int = 0) -> list[ConversionRequest]:
    return [
        ConversionRequest(f"conv-{i:06d}", 1 + i % TENANTS, {"report": "monthly"})
        for i in range(start, start + n)
    ]


# -- the stand-in for the legacy worker ------------------------------------------------------------


def finish_builds(world: World, s3: Any) -> int:
    """End every build in progress SUCCEEDED; with ``s3``, first write the result object of each
    conversion in its manifest, as the legacy build does. Returns how many builds it ended."""
    ended = 0
    for build in world.builds():
        if build["buildStatus"] != "IN_PROGRESS":
            continue
        if s3 is not None:
            env = {v["name"]: v["value"] for v in build["environment"]["environmentVariables"]}
            manifest_key = env["CUTOVER_MANIFEST_URI"].removeprefix(f"s3://{BUCKET}/")
            results = env["CUTOVER_RESULTS_URI"].removeprefix(f"s3://{BUCKET}/")
            manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())
            for c in manifest["conversions"]:
                cid = c["conversion_id"]
                body = {"conversion_id": cid, "status": "succeeded", "output": f"out/{cid}.xlsx"}
                s3.put_object(Bucket=BUCKET, Key=f"{results}{cid}.json", Body=json.dumps(body).encode())
        world.put_build(build, "SUCCEEDED")
        ended += 1
    return ended


# -- ours: the controller's cycles on the adapters the composition root wires ---------------------


def ours(world: World, workdir: FsPath, path: Path, n: int, per_cycle: int) -> dict[str, Any]:
    fresh(world)
    flag_file = workdir / f"flags-{path.value}-{per_cycle}.json"
    migrated = range(1, TENANTS + 1) if path is Path.NEW else []
    write_json_atomically(flag_file, values_document(FLAG_KEY, True, migrated))
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        backend="aws",
        ledger=f"sqlite:///{workdir / f'ledger-{path.value}-{per_cycle}.db'}",
        flag_source="file",
        flag_file=flag_file,
        legacy_project=PROJECT,
        batch_job_queue=QUEUE,
        batch_job_definition=JOB_DEFINITION,
        manifest_bucket=BUCKET,
    )
    counter = CallCounter()
    worker_s3 = world.client("s3", hooked=False) if path is Path.LEGACY else None
    with counted_sessions(counter):
        backends = make_backends(settings, time.time, ReconcileTally())
    ledger = make_ledger(settings)
    controller = Controller(
        ledger=ledger,
        flags=LastKnownGood(FileFlagSource(flag_file, FLAG_KEY, time.time), ledger, time.time),
        backends=backends,
        config=cycle_config(settings),
    )
    errors: list[str] = []
    cycles, taken = 0, 0
    t0 = time.perf_counter()
    try:
        # A legacy build takes at most CUTOVER_LEGACY_MAX_THREADS x MAX_ROUNDS (16 x 32 = 512) of a
        # backlog, one build a cycle: a burst on the old path takes a cycle per 512 to hand over.
        limit = 10 + 2 * (n // per_cycle + 1) + (n // 256 if path is Path.LEGACY else 0)
        while cycles < limit:
            if taken < n:
                ledger.accept(requests(min(per_cycle, n - taken), taken), time.time())
                taken += min(per_cycle, n - taken)
            report = controller.run_cycle()
            cycles += 1
            errors.extend(report.errors)
            if path is Path.LEGACY:
                finish_builds(world, worker_s3)
            counts = ledger.counts()
            ended = counts.state(ConversionState.SUCCEEDED) + counts.state(ConversionState.FAILED)
            if taken == n and ended == n:
                break
        seconds = time.perf_counter() - t0
        succeeded = ledger.counts().state(ConversionState.SUCCEEDED)
    finally:
        ledger.close()
        for backend in backends.values():
            backend.close()
    return figures(counter.calls, n, seconds, cycles=cycles, succeeded=succeeded, cycle_errors=errors[:5])


# -- the naive side: one job (or build) per conversion, asked after one by one ---------------------


def naive(world: World, path: Path, n: int) -> dict[str, Any]:
    fresh(world)
    counter = CallCounter()
    client = counter.hook(world.client("batch" if path is Path.NEW else "codebuild", hooked=False))
    t0 = time.perf_counter()
    jobs: list[str] = []
    for request in requests(n):
        env = [
            {"name": "CUTOVER_CONVERSION_ID", "value": request.conversion_id},
            {"name": "CUTOVER_TENANT_ID", "value": str(request.tenant_id)},
            {"name": "CUTOVER_PARAMS", "value": json.dumps(request.params)},
        ]
        if path is Path.NEW:
            answer = client.submit_job(
                jobName=f"naive-{request.conversion_id}",
                jobQueue=QUEUE,
                jobDefinition=JOB_DEFINITION,
                containerOverrides={"environment": env},
            )
            jobs.append(answer["jobId"])
        else:
            answer = client.start_build(
                projectName=PROJECT, environmentVariablesOverride=[{**v, "type": "PLAINTEXT"} for v in env]
            )
            jobs.append(answer["build"]["id"])
    if path is Path.LEGACY:
        finish_builds(world, None)  # a build of one conversion tells its outcome by its status
    succeeded, rounds = 0, 0
    waiting = jobs
    while waiting and rounds < 10:
        rounds += 1
        still: list[str] = []
        for job in waiting:
            if path is Path.NEW:
                status = client.describe_jobs(jobs=[job])["jobs"][0]["status"]
            else:
                status = client.batch_get_builds(ids=[job])["builds"][0]["buildStatus"]
            if status == "SUCCEEDED":
                succeeded += 1
            elif status not in ("FAILED", "FAULT", "TIMED_OUT", "STOPPED"):
                still.append(job)
        waiting = still
    seconds = time.perf_counter() - t0
    client.close()
    return figures(counter.calls, n, seconds, rounds=rounds, succeeded=succeeded)


def compare(ours_side: dict[str, Any], naive_side: dict[str, Any]) -> dict[str, float]:
    return {
        kind: round(naive_side[f"{kind}_calls"] / max(ours_side[f"{kind}_calls"], 1), 1)
        for kind in ("submission", "tracking", "total")
    }


def main() -> None:
    args = arguments(__doc__, _options)
    if args.smoke:
        args.conversions, args.per_cycle = 300, 100
    n, per_cycle = args.conversions, args.per_cycle
    server = MotoServer()
    world = World(server)
    os.environ.update(world.env())  # the composition root's clients find the server this way
    result: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp, codebuild_as_documented():
            for path in (Path.NEW, Path.LEGACY):
                burst = ours(world, FsPath(tmp), path, n, n)
                stream = ours(world, FsPath(tmp), path, n, per_cycle)
                simple = naive(world, path, n)
                result[path.value] = {
                    "ours_burst": burst,
                    "ours_stream": stream,
                    "naive": simple,
                    "ratio_burst": compare(burst, simple),
                    "ratio_stream": compare(stream, simple),
                }
    finally:
        server.stop()
    new, legacy = result[Path.NEW.value], result[Path.LEGACY.value]
    sides = [side for r in result.values() for key, side in r.items() if not key.startswith("ratio")]
    emit(
        {
            "benchmark": "api_calls",
            "smoke": args.smoke,
            "machine": machine(),
            "inputs": {"conversions": n, "tenants": TENANTS, "stream_per_cycle": per_cycle},
            "new_path": new,
            "legacy_path": legacy,
            "goals": {
                "new_path_submission_calls_per_1000_burst": goal(
                    new["ours_burst"]["per_1000"]["submission"], GOAL_SUBMISSION_PER_1000, "<="
                ),
                f"new_path_submission_calls_per_1000_stream_of_{per_cycle}": goal(
                    new["ours_stream"]["per_1000"]["submission"], GOAL_SUBMISSION_PER_1000, "<="
                ),
            },
            "checks": {
                "all_succeeded": all(side["succeeded"] == n for side in sides),
                "no_cycle_errors": not any(side.get("cycle_errors") for side in sides),
            },
            "seconds": round(time.perf_counter() - t0, 1),
        }
    )


if __name__ == "__main__":
    main()
