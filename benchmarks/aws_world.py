"""The AWS world of the chaos run: a moto server on loopback, and a player doing what the jobs would.

moto never runs a CodeBuild build or a Batch container. This process hosts moto's server (with
the gaps the testing notes list filled: a build keeps its environment and its status, StopBuild
stops it, UpdateComputeEnvironment keeps maxvCpus) and a player that takes their place:

- a CodeBuild build is worked as the old path's batch would work it: its manifest read from
  moto's S3 through the job contract (``cutover_job``), ``CUTOVER_THREADS`` conversions at once;
  StopBuild stops it (work under way is dropped, as a killed container's would be);
- a Batch job (or array child) waits RUNNABLE until the compute environment's maxvCpus, divided by
  the vCPUs of a job, leaves room, then runs its conversion; CancelJob / TerminateJob stop it;
- a conversion takes ``--work-seconds`` (at random, at most), then its result is written through
  the job contract to S3 and one line (``conversion_id``, ``path``, ``started_at``,
  ``finished_at``, ``output``, ``job_id``) is appended to ``<output>/produced.jsonl`` with an
  output file beside it, as the sample worker does, so the chaos run judges duplicates, lost
  conversions, wrong paths and the peak of work at once from what was really worked.

Started by ``benchmarks/chaos.py --backend aws``; it writes its URL to ``--ready-file`` once the
resources exist, and runs until SIGTERM. Test code: the product has no part of it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path as FsPath
from typing import Any

REPO = FsPath(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.aws.moto_world import (  # noqa: E402
    ACCOUNT,
    COMPUTE_ENVIRONMENT,
    REGION,
    MotoServer,
    World,
    codebuild_as_documented,
)

VCPUS_PER_JOB = 2


class Stopped(BaseException):
    """The build or job was stopped while a conversion was under way. Not an ``Exception``: the job
    contract's helper turns those into a failed result, and a stopped container writes nothing."""


class Record:
    """``produced.jsonl`` and the output files, written as the sample worker writes them."""

    def __init__(self, output: FsPath) -> None:
        self.output = output
        output.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def produced(self, conversion_id: str, path: str, job_id: str, started: float, finished: float) -> str:
        target = self.output / path / f"{conversion_id}.out"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(job_id)
        line = {
            "conversion_id": conversion_id,
            "path": path,
            "job_id": job_id,
            "started_at": started,
            "finished_at": finished,
            "output": str(target),
        }
        with self._lock, (self.output / "produced.jsonl").open("a") as fh:
            fh.write(json.dumps(line) + "\n")
        return str(target)


class Player:
    """Works builds and jobs in moto as CodeBuild and Batch would, one thread per build or job."""

    def __init__(self, url: str, record: Record, work_seconds: float, seed: int) -> None:
        import boto3

        self.s3 = boto3.client(
            "s3",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.record = record
        self.work_seconds = work_seconds
        self.rng = random.Random(seed)
        self.started: set[str] = set()
        self.running_jobs: set[str] = set()
        self._lock = threading.Lock()
        self.stop = threading.Event()

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._builds()
                self._jobs()
            except Exception as exc:  # a world that stops playing would hang the run: keep going
                sys.stderr.write(f"player: {type(exc).__name__}: {exc}\n")
            time.sleep(0.05)

    def _builds(self) -> None:
        for build in World.builds():
            if build["buildStatus"] == "IN_PROGRESS" and build["id"] not in self.started:
                self.started.add(build["id"])
                threading.Thread(target=self._build, args=(build,), daemon=True).start()

    def _jobs(self) -> None:
        from moto.batch.models import batch_backends

        backend = batch_backends[ACCOUNT][REGION]
        ce = backend.get_compute_environment_by_name(COMPUTE_ENVIRONMENT)
        slots = int(int(ce.compute_resources.get("maxvCpus", 0)) // VCPUS_PER_JOB)
        jobs = [j for j in list(backend._jobs.values()) if not j._child_jobs]
        for job in jobs:
            if job.status == "RUNNABLE" and job.stop:
                job._mark_stopped(success=False)
        with self._lock:
            free = slots - len(self.running_jobs)
        for job in sorted((j for j in jobs if j.status == "RUNNABLE"), key=lambda j: j.job_created_at):
            if free <= 0:
                break
            with self._lock:
                self.running_jobs.add(job.job_id)
            job.status = "RUNNING"
            free -= 1
            threading.Thread(target=self._job, args=(job,), daemon=True).start()

    # -- one build, one job --------------------------------------------------------------------

    def _build(self, build: dict[str, Any]) -> None:
        import cutover_job

        env = {v["name"]: v["value"] for v in build["environment"].get("environmentVariables", [])}
        build["currentPhase"] = "BUILD"
        stopped = lambda: build["buildStatus"] == "STOPPED"  # noqa: E731
        try:
            assignment = cutover_job.from_env(env, s3_client=self.s3)
            assignment.work(lambda c: self._convert(c, "legacy", build["id"], stopped))
        except Stopped:
            return
        except Exception as exc:
            sys.stderr.write(f"player: build {build['id']}: {type(exc).__name__}: {exc}\n")
            World.put_build(build, "FAILED", "BUILD", str(exc))
            return
        if not stopped():
            World.put_build(build, "SUCCEEDED", "COMPLETED")

    def _job(self, job: Any) -> None:
        import cutover_job

        env = {e["name"]: e["value"] for e in (job.container_overrides or {}).get("environment", [])}
        index = (job.array_properties or {}).get("index")
        if index is not None:
            env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(index)
        job.job_started_at = datetime.datetime.now()
        job._start_attempt()
        ok = False
        try:
            assignment = cutover_job.from_env(env, s3_client=self.s3)
            results = assignment.work(lambda c: self._convert(c, "new", job.job_id, lambda: bool(job.stop)))
            ok = all(r.status.value == "succeeded" for r in results)
        except Stopped:
            ok = False
        except Exception as exc:
            sys.stderr.write(f"player: job {job.job_id}: {type(exc).__name__}: {exc}\n")
        finally:
            job._mark_stopped(success=ok and not job.stop)
            with self._lock:
                self.running_jobs.discard(job.job_id)

    def _convert(self, c: Any, path: str, job_id: str, stopped: Any) -> Any:
        import cutover_job

        started = time.time()
        with self._lock:
            seconds = self.rng.uniform(0.2, 1.0) * self.work_seconds
        deadline = started + seconds
        while time.time() < deadline:
            if stopped():
                raise Stopped(job_id)
            time.sleep(min(0.05, max(0.0, deadline - time.time())))
        if stopped():
            raise Stopped(job_id)
        output = self.record.produced(c.conversion_id, path, job_id, started, time.time())
        return cutover_job.Outcome.succeeded(output)


def keep_max_vcpus() -> None:
    """moto accepts UpdateComputeEnvironment's maxvCpus without storing it: store it."""
    from moto.batch.models import BatchBackend

    original = BatchBackend.update_compute_environment

    def update(
        self: Any, compute_environment_name: str, state: Any, compute_resources: Any, service_role: Any
    ) -> Any:
        answer = original(self, compute_environment_name, state, compute_resources, service_role)
        ce = self.get_compute_environment(compute_environment_name)
        if ce is not None and compute_resources and "maxvCpus" in compute_resources:
            ce.compute_resources["maxvCpus"] = int(compute_resources["maxvCpus"])
        return answer

    BatchBackend.update_compute_environment = update  # type: ignore[method-assign]


def jobs_wait_for_the_player() -> None:
    """A Batch job moves to RUNNABLE and waits there: the player starts it when capacity allows.
    (moto's Batch without Docker would mark it SUCCEEDED as it is submitted.)"""
    from moto.batch_simple.models import BatchSimpleBackend

    def submitted(self: Any, include_start_attempt: bool, job: Any) -> None:
        self.backend._jobs[job.job_id] = job
        job.log_stream_name = job._stream_name
        # A job of one conversion or an array child waits its turn; an array's parent only tracks.
        job.status = "RUNNABLE" if include_start_attempt else "PENDING"

    BatchSimpleBackend._mark_job_as_finished = submitted  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description="moto and a player standing in for CodeBuild and Batch")
    parser.add_argument("--ready-file", type=FsPath, required=True)
    parser.add_argument("--output", type=FsPath, required=True)
    parser.add_argument("--work-seconds", type=float, default=0.3)
    parser.add_argument("--max-vcpus", type=int, default=2 * VCPUS_PER_JOB)
    parser.add_argument("--table", default=None, help="a ledger table to create as well")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    keep_max_vcpus()
    jobs_wait_for_the_player()
    with codebuild_as_documented():
        server = MotoServer()
        world = World(server)
        world.bucket()
        world.codebuild()
        world.batch(vcpus=str(VCPUS_PER_JOB), max_vcpus=args.max_vcpus)
        if args.table:
            from controller.ledger.dynamodb import create_table

            create_table(world.client("dynamodb", hooked=False), args.table)
        player = Player(server.url, Record(args.output), args.work_seconds, args.seed)
        threading.Thread(target=player.run, name="player", daemon=True).start()
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(server.url)
        os.replace(tmp, args.ready_file)
        done.wait()
        player.stop.set()
        server.stop()


if __name__ == "__main__":
    main()
