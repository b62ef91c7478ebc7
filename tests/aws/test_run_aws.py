"""`cutover run` against AWS (a moto server on 127.0.0.1): conversions posted over HTTP end up in
CodeBuild builds and Batch jobs exactly as the flag says, none in both, and the controller's
metrics reach CloudWatch. The legacy build's work is played by a stand-in worker that writes each conversion's
result next to the manifest, as a real build would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path as FsPath
from typing import Any

from controller.core.domain import ConversionRequest, ConversionState
from controller.ledger.sqlite import SQLiteLedger
from flags.document import values_document
from flags.file_source import write_json_atomically
from tests.aws.moto_world import BUCKET, JOB_DEFINITION, PROJECT, QUEUE, World

REPO = FsPath(__file__).resolve().parents[2]
MIGRATED = {2, 4}
TENANTS = range(1, 7)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except urllib.error.URLError:
        return 0, None  # not listening yet


def read_s3_json(world: World, uri: str) -> dict[str, Any]:
    key = uri.removeprefix(f"s3://{BUCKET}/")
    body = world.client("s3", hooked=False).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return dict(json.loads(body))


class LegacyWorker(threading.Thread):
    """Plays the old batch inside each CodeBuild build: works through its manifest, writes a result
    per conversion next to it, then ends the build."""

    def __init__(self, world: World) -> None:
        super().__init__(daemon=True)
        self.world = world
        self.stop = threading.Event()

    def run(self) -> None:
        s3 = self.world.client("s3", hooked=False)
        while not self.stop.wait(0.1):
            for build in self.world.builds():
                if build["buildStatus"] != "IN_PROGRESS":
                    continue
                env = {v["name"]: v["value"] for v in build["environment"]["environmentVariables"]}
                manifest = read_s3_json(self.world, env["CUTOVER_MANIFEST_URI"])
                results = env["CUTOVER_RESULTS_URI"].removeprefix(f"s3://{BUCKET}/")
                for c in manifest["conversions"]:
                    doc = {"conversion_id": c["conversion_id"], "status": "succeeded", "output": "xlsx"}
                    s3.put_object(
                        Bucket=BUCKET,
                        Key=f"{results}{c['conversion_id']}.json",
                        Body=json.dumps(doc).encode(),
                    )
                self.world.set_build(build["id"], "SUCCEEDED")


def metric_names(cloudwatch: Any) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    metrics = cloudwatch.list_metrics(Namespace="Cutover")["Metrics"]
    return {(m["MetricName"], tuple((d["Name"], d["Value"]) for d in m["Dimensions"])) for m in metrics}


def conversions_in_builds(world: World) -> list[str]:
    """Every conversion a CodeBuild build was started for, read from the manifest in its environment."""
    out: list[str] = []
    for build in world.builds():
        env = {v["name"]: v["value"] for v in build["environment"]["environmentVariables"]}
        out.extend(
            c["conversion_id"] for c in read_s3_json(world, env["CUTOVER_MANIFEST_URI"])["conversions"]
        )
    return out


def conversions_in_jobs(world: World) -> list[str]:
    """Every conversion a Batch job (or array child) was submitted for, from the job's environment
    and the manifest slice it names."""
    out: list[str] = []
    for job in world.batch_jobs():
        if ":" in job.job_id:
            continue
        env: dict[str, str] = {}
        for pair in job.container_overrides.get("environment", []):
            env.setdefault(pair["name"], pair["value"])
        size = int(job.array_properties.get("size", 1))
        offset = int(env["CUTOVER_MANIFEST_OFFSET"])
        manifest = read_s3_json(world, env["CUTOVER_MANIFEST_URI"])
        out.extend(c["conversion_id"] for c in manifest["conversions"][offset : offset + size])
    return out


def test_cutover_run_on_aws_sends_each_conversion_to_the_path_the_flag_names(
    world: World, tmp_path: FsPath
) -> None:
    """With CUTOVER_BACKEND=aws, conversions posted to /conversions run as Batch jobs for the
    migrated tenants and in CodeBuild builds for the others; no conversion is in both, none is
    left out, every one succeeds, and the per-path success counts reach CloudWatch."""
    world.bucket()
    world.batch()
    world.codebuild()
    flag_file = tmp_path / "flags.json"
    write_json_atomically(flag_file, values_document("migrated_tenants", True, sorted(MIGRATED)))
    db = tmp_path / "ledger.db"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUTOVER_", "AWS_"))}
    env.update(world.env())
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "CUTOVER_BACKEND": "aws",
            "CUTOVER_LEDGER": f"sqlite:///{db}",
            "CUTOVER_FLAG_SOURCE": "file",
            "CUTOVER_FLAG_FILE": str(flag_file),
            "CUTOVER_LEGACY_PROJECT": PROJECT,
            "CUTOVER_BATCH_JOB_QUEUE": QUEUE,
            "CUTOVER_BATCH_JOB_DEFINITION": JOB_DEFINITION,
            "CUTOVER_MANIFEST_BUCKET": BUCKET,
            "CUTOVER_BUDGET": "10",
            "CUTOVER_CYCLE_SECONDS": "0.3",
            "CUTOVER_RESUBMITS": "0",
        }
    )
    requests = [ConversionRequest(f"t{t}-c{n:02d}", t, {"form": "all"}) for t in TENANTS for n in range(8)]
    worker = LegacyWorker(world)
    worker.start()
    log = (tmp_path / "controller.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "run", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while http("GET", f"{base}/healthz")[0] != 200:
            assert proc.poll() is None, (tmp_path / "controller.log").read_text()
            assert time.monotonic() < deadline, "the controller never answered /healthz"
            time.sleep(0.1)
        body = {
            "conversions": [
                {"conversion_id": r.conversion_id, "tenant_id": r.tenant_id, "params": r.params}
                for r in requests
            ]
        }
        status, answer = http("POST", f"{base}/conversions", body)
        assert status == 202
        assert sorted(answer["accepted"]) == sorted(r.conversion_id for r in requests)
        assert answer["duplicates"] == []
        ledger = SQLiteLedger(db)
        deadline = time.monotonic() + 60
        while ledger.counts().state(ConversionState.SUCCEEDED) < len(requests):
            assert proc.poll() is None, (tmp_path / "controller.log").read_text()
            assert ledger.counts().state(ConversionState.FAILED) == 0, ledger.query(
                state=ConversionState.FAILED
            )
            assert time.monotonic() < deadline, (
                ledger.counts(),
                (tmp_path / "controller.log").read_text()[-3000:],
            )
            time.sleep(0.2)
        status, doc = http("GET", f"{base}/status")
        assert status == 200
        assert doc["conversions"]["succeeded"] == len(requests)
        cloudwatch = world.client("cloudwatch", hooked=False)
        wanted = {
            ("ConversionsSucceeded", (("Path", "new"),)),
            ("ConversionsSucceeded", (("Path", "legacy"),)),
            ("CyclesCompleted", ()),
            ("FlagStateNotOk", ()),
        }
        deadline = time.monotonic() + 30
        while not wanted <= metric_names(cloudwatch):  # sent every few seconds, off the cycle
            assert time.monotonic() < deadline, metric_names(cloudwatch)
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        worker.stop.set()
        worker.join(timeout=5)
        log.close()

    expected_new = sorted(r.conversion_id for r in requests if r.tenant_id in MIGRATED)
    expected_legacy = sorted(r.conversion_id for r in requests if r.tenant_id not in MIGRATED)
    in_jobs, in_builds = conversions_in_jobs(world), conversions_in_builds(world)
    assert sorted(in_jobs) == expected_new
    assert sorted(in_builds) == expected_legacy
    assert not set(in_jobs) & set(in_builds)
    records, _ = ledger.query(limit=1000)
    assert {(r.conversion_id, r.path.value if r.path else None) for r in records} == {
        (c, "new") for c in expected_new
    } | {(c, "legacy") for c in expected_legacy}
    ledger.close()
