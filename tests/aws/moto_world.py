"""The AWS world the adapter tests run in: a moto server on 127.0.0.1, the resources the adapters
need (Batch on Fargate, a CodeBuild project, a manifest bucket, a ledger table), and the few
places where a test sets state in moto's in-process backends or fills a gap moto leaves.

The server handles one request at a time, so a conditional write is checked and applied
without another request in between, as DynamoDB does for one item.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = "cutover-manifests"
PROJECT = "cutover-legacy"
QUEUE = "cutover-jobs"
JOB_DEFINITION = "cutover-convert"
COMPUTE_ENVIRONMENT = "cutover-fargate"
TABLE = "cutover-ledger"

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class MotoAdmin:
    """moto's own API at ``url``: configuration and reset."""

    url: str

    def post(self, path: str, body: dict[str, Any] | None = None) -> None:
        data = json.dumps(body or {}).encode()
        request = urllib.request.Request(self.url + path, data=data, method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()

    def reset(self) -> None:
        self.post("/moto-api/reset")


class MotoProcess(MotoAdmin):
    """moto's server in a process of its own on a free loopback port, Batch without Docker.

    For what runs beside other work for long: moto's state is global to a process, so a server in
    this one would share it (and the interpreter lock) with every other moto server here."""

    def __init__(self, log: Path, *, start_seconds: float = 60.0) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + start_seconds
        while True:
            try:
                self.post("/moto-api/config", {"batch": {"use_docker": False}})
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the moto server did not start; see {log}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class MotoServer(MotoAdmin):
    """moto's WSGI app on a werkzeug server that serves one request at a time."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", 0, app, threaded=False, request_handler=MotoRequestHandler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)
        self._thread.start()
        self.post("/moto-api/config", {"batch": {"use_docker": False}})

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)


_SHARED: list[MotoServer] = []


def shared_server() -> MotoServer:
    """The one moto server of this test process, started on first use (every suite shares it)."""
    if not _SHARED:
        _SHARED.append(MotoServer())
    return _SHARED[0]


@dataclass
class Calls:
    """What clients sent, operation by operation, recorded with botocore's event hooks."""

    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def hook(self, client: Any) -> Any:
        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            self.sent.append((model.name, dict(params)))

        client.meta.events.register("provide-client-params", record)
        return client

    def count(self, operation: str) -> int:
        return sum(1 for name, _ in self.sent if name == operation)

    def params(self, operation: str) -> list[dict[str, Any]]:
        return [p for name, p in self.sent if name == operation]

    def clear(self) -> None:
        self.sent.clear()


@dataclass
class World:
    """Clients on the moto server, and helpers that set up or inspect what is in it."""

    server: MotoAdmin
    calls: Calls = field(default_factory=Calls)

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, service: str, *, hooked: bool = True) -> Any:
        made = boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.url,
            region_name=REGION,
            config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
            **CREDENTIALS,
        )
        return self.calls.hook(made) if hooked else made

    def env(self) -> dict[str, str]:
        """Environment for a process that talks to this server as if it were AWS."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }

    # -- resources ---------------------------------------------------------------------------

    def bucket(self) -> None:
        self.client("s3", hooked=False).create_bucket(Bucket=BUCKET)

    def batch(self, *, vcpus: str = "2", max_vcpus: int = 40) -> None:
        """A Fargate compute environment, a queue and a job definition with the retry strategy."""
        iam = self.client("iam", hooked=False)
        ec2 = self.client("ec2", hooked=False)
        batch = self.client("batch", hooked=False)
        role = iam.create_role(RoleName="cutover-batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName="cutover", Description="jobs", VpcId=vpc)["GroupId"]
        batch.create_compute_environment(
            computeEnvironmentName=COMPUTE_ENVIRONMENT,
            type="MANAGED",
            state="ENABLED",
            computeResources={
                "type": "FARGATE",
                "maxvCpus": max_vcpus,
                "subnets": [subnet],
                "securityGroupIds": [group],
            },
            serviceRole=role,
        )
        batch.create_job_queue(
            jobQueueName=QUEUE,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": COMPUTE_ENVIRONMENT}],
        )
        batch.register_job_definition(
            jobDefinitionName=JOB_DEFINITION,
            type="container",
            platformCapabilities=["FARGATE"],
            containerProperties={
                "image": "cutover-worker:latest",
                "resourceRequirements": [
                    {"type": "VCPU", "value": vcpus},
                    {"type": "MEMORY", "value": "4096"},
                ],
                "executionRoleArn": role,
                "networkConfiguration": {"assignPublicIp": "DISABLED"},
            },
            retryStrategy={
                "attempts": 3,
                "evaluateOnExit": [
                    {"onStatusReason": "Host EC2*", "action": "RETRY"},
                    {"onStatusReason": "CannotPullContainerError*", "action": "RETRY"},
                    {"onStatusReason": "ResourceInitializationError*", "action": "RETRY"},
                    {"onReason": "*", "action": "EXIT"},
                ],
            },
        )

    def codebuild(self) -> None:
        self.client("codebuild", hooked=False).create_project(
            name=PROJECT,
            source={"type": "S3", "location": f"{BUCKET}/legacy/source.zip"},
            artifacts={"type": "NO_ARTIFACTS"},
            environment={
                "type": "LINUX_CONTAINER",
                "image": "cutover-legacy:latest",
                "computeType": "BUILD_GENERAL1_MEDIUM",
            },
            serviceRole=f"arn:aws:iam::{ACCOUNT}:role/cutover-codebuild",
        )

    # -- moto's in-process state -------------------------------------------------------------

    @staticmethod
    def batch_job(job_id: str) -> Any:
        from moto.batch.models import batch_backends

        return batch_backends[ACCOUNT][REGION]._jobs[job_id]

    def set_job(self, job_id: str, status: str, reason: str | None = None) -> None:
        """Put one Batch job (or array child) into ``status`` as AWS would report it."""
        job = self.batch_job(job_id)
        if status in ("SUCCEEDED", "FAILED"):
            job.job_stopped = False
            job.job_stopped_reason = reason
            job._mark_stopped(success=status == "SUCCEEDED")
            return
        job.job_stopped = False
        job.job_stopped_reason = reason
        job.status = status

    @staticmethod
    def batch_jobs() -> list[Any]:
        from moto.batch.models import batch_backends

        return list(batch_backends[ACCOUNT][REGION]._jobs.values())

    @staticmethod
    def builds() -> list[dict[str, Any]]:
        from moto.codebuild.models import codebuild_backends

        backend = codebuild_backends[ACCOUNT][REGION]
        return [b for history in backend.build_metadata_history.values() for b in history]

    def build(self, build_id: str) -> dict[str, Any]:
        return next(b for b in self.builds() if b["id"] == build_id)

    def set_build(self, build_id: str, status: str, phase: str = "BUILD", message: str = "") -> None:
        """Put one build into ``status`` (and ``phase``) as CodeBuild would report it."""
        self.put_build(self.build(build_id), status, phase, message)

    @staticmethod
    def put_build(build: dict[str, Any], status: str, phase: str = "BUILD", message: str = "") -> None:
        """Put a build found in ``builds()`` into ``status`` (and ``phase``), as ``set_build`` does."""
        build["buildStatus"] = status
        build["currentPhase"] = "COMPLETED" if status != "IN_PROGRESS" else phase
        build["buildComplete"] = status != "IN_PROGRESS"
        build["phases"] = [{"phaseType": phase, "phaseStatus": "FAILED" if message else "SUCCEEDED"}]
        if message:
            build["phases"][0]["contexts"] = [{"statusCode": "COMMAND_EXECUTION_ERROR", "message": message}]


@contextmanager
def codebuild_as_documented() -> Iterator[None]:
    """Fill the gaps moto's CodeBuild leaves (see the testing notes), server-side:

    - a build keeps the environment overrides it was started with, as AWS shows them;
    - a repeated ``idempotencyToken`` returns the build it started (AWS keeps it 5 minutes);
    - a build keeps the status it has instead of turning SUCCEEDED on the first read;
    - ``StopBuild`` leaves the build STOPPED.
    """
    from moto.codebuild.models import CodeBuildBackend
    from moto.codebuild.responses import CodeBuildResponse

    original_start = CodeBuildResponse.start_build
    original_get = CodeBuildBackend.batch_get_builds
    original_stop = CodeBuildBackend.stop_build
    tokens: dict[str, str] = {}

    def start_build(self: Any) -> Any:
        token = self._get_param("idempotencyToken")
        backend = self.codebuild_backend
        known = tokens.get(token) if token else None
        # A reset server forgot the build the token started: then it is a new start, as on AWS
        # once the token's five minutes are over.
        build = next(
            (b for h in backend.build_metadata_history.values() for b in h if b["id"] == known), None
        )
        if build is not None:
            from moto.core.responses import ActionResult

            return ActionResult({"build": build})
        result = original_start(self)
        build = backend.build_metadata[self._get_param("projectName")].build_metadata
        overrides = self._get_param("environmentVariablesOverride") or []
        build["environment"] = dict(build["environment"])
        build["environment"]["environmentVariables"] = [
            {"name": v["name"], "value": v["value"], "type": v.get("type", "PLAINTEXT")} for v in overrides
        ]
        build["currentPhase"] = "QUEUED"
        if token:
            tokens[token] = build["id"]
        return result

    def batch_get_builds(self: Any, ids: list[str]) -> list[dict[str, Any]]:
        return [b for h in self.build_metadata_history.values() for b in h if b["id"] in ids]

    def stop_build(self: Any, build_id: str) -> dict[str, Any] | None:
        for h in self.build_metadata_history.values():
            for b in h:
                if b["id"] == build_id:
                    if b["buildStatus"] == "IN_PROGRESS":
                        b["buildStatus"] = "STOPPED"
                        b["currentPhase"] = "COMPLETED"
                        b["buildComplete"] = True
                    return dict(b)
        return None

    CodeBuildResponse.start_build = start_build  # type: ignore[method-assign]
    CodeBuildBackend.batch_get_builds = batch_get_builds  # type: ignore[method-assign]
    CodeBuildBackend.stop_build = stop_build  # type: ignore[method-assign]
    try:
        yield
    finally:
        CodeBuildResponse.start_build = original_start  # type: ignore[method-assign]
        CodeBuildBackend.batch_get_builds = original_get  # type: ignore[method-assign]
        CodeBuildBackend.stop_build = original_stop  # type: ignore[method-assign]


@contextmanager
def batch_jobs_fail() -> Iterator[None]:
    """Every Batch job submitted meanwhile ends FAILED (moto's documented switch)."""
    os.environ["MOTO_SIMPLE_BATCH_FAIL_AFTER"] = "0"
    try:
        yield
    finally:
        os.environ.pop("MOTO_SIMPLE_BATCH_FAIL_AFTER", None)


def no_sleep() -> tuple[list[float], Callable[[float], None]]:
    """A sleep that records what it was asked to wait instead of waiting."""
    waited: list[float] = []
    return waited, waited.append
