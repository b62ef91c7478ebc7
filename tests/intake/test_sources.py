"""The shipped finders and the SQS intake against real protocols: moto S3/SQS over HTTP, SQLite
and (where the machine has it) a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from controller.core.domain import ConversionState
from controller.core.schedule import parse_schedule
from controller.intake.finder import FinderContext, FinderRunner
from controller.intake.finder_s3 import compile_pattern
from controller.intake.finder_sql import find_with
from controller.intake.sqs import SQSIntake
from controller.intake.validation import IntakeLimits
from controller.settings import Settings


def test_s3_finder_maps_new_keys_and_reads_only_what_is_new(aws, sqlite_ledger, clock):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="exports-bucket")
    for key in (
        "in/exports/7/monthly/2026-11-01.json",
        "in/exports/8/weekly/2026-11-02.json",
        "in/readme.txt",
    ):
        s3.put_object(Bucket="exports-bucket", Key=key, Body=b"{}")
    settings = Settings(finder_s3_uri="s3://exports-bucket/in/", target_finder="controller.finder_s3:find")
    from controller.intake.finder_s3 import find

    r = FinderRunner(
        "s3",
        find,
        parse_schedule("60"),
        ledger=sqlite_ledger,
        settings=settings,
        clock=clock,
        holder="a",
        timeout=30,
    )
    assert r.run_due()
    assert r.stats.last_error == ""
    records, _ = sqlite_ledger.query(limit=10)
    by_tenant = {rec.tenant_id: rec for rec in records}
    assert set(by_tenant) == {7, 8}
    assert by_tenant[7].params == {
        "report": "monthly",
        "date": "2026-11-01",
        "s3_key": "in/exports/7/monthly/2026-11-01.json",
    }
    first_mark = r.stats.watermark
    assert first_mark is not None
    time.sleep(1.1)  # S3 times have one-second resolution
    s3.put_object(Bucket="exports-bucket", Key="in/exports/9/daily/2026-11-03.json", Body=b"{}")
    s3.put_object(Bucket="exports-bucket", Key="in/z/exports/10/x/y.json", Body=b"{}")
    clock.advance(60)
    assert r.run_due()
    assert sqlite_ledger.counts().state(ConversionState.RECEIVED) == 3
    # only the watermark's own second is read again (folded as duplicates), nothing older
    assert (r.stats.found, r.stats.accepted, r.stats.duplicates) == (5, 3, 2)
    assert r.stats.watermark > first_mark


def test_s3_finder_skips_a_key_whose_tenant_id_intake_rejects_and_takes_the_rest(aws, sqlite_ledger, clock):
    """The key pattern admits a tenant id past 2^53-1, which intake refuses: that object is skipped
    and reported by its key, the others are taken in, and the watermark moves past it."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="exports-bucket")
    bad = "in/exports/9007199254740993/monthly/2026-11-01.json"
    for key in ("in/exports/7/monthly/2026-11-01.json", bad, "in/exports/8/weekly/2026-11-02.json"):
        s3.put_object(Bucket="exports-bucket", Key=key, Body=b"{}")
    settings = Settings(finder_s3_uri="s3://exports-bucket/in/", target_finder="controller.finder_s3:find")
    from controller.intake.finder_s3 import find

    r = FinderRunner(
        "s3",
        find,
        parse_schedule("60"),
        ledger=sqlite_ledger,
        settings=settings,
        clock=clock,
        holder="a",
        timeout=30,
    )
    assert r.run_due()
    records, _ = sqlite_ledger.query(limit=10)
    assert {rec.tenant_id for rec in records} == {7, 8}
    assert r.stats.malformed == 1
    assert bad in r.stats.last_error
    assert r.stats.watermark is not None


def test_s3_keys_map_to_stable_valid_ids_that_cannot_escape():
    pattern = compile_pattern("exports/{tenant_id}/{report}/{date}.json")
    assert pattern.fullmatch("exports/12/a/b.json")
    assert not pattern.fullmatch("exports/0/a/b.json")
    assert not pattern.fullmatch("exports/12/a/../b.json")
    from controller.intake.finder_s3 import conversion_id
    from controller.intake.validation import validate_conversion_id

    hostile = "exports/1/..%2F..\n/\x00 weird key.json"
    assert validate_conversion_id(conversion_id(hostile)) == conversion_id(hostile)
    assert conversion_id("a/b") != conversion_id("a-b")


SQL_QUERY = (
    "SELECT id AS conversion_id, tenant AS tenant_id, report, updated AS watermark "
    "FROM exports WHERE updated > :watermark ORDER BY updated"
)


def _seed(execute):
    execute("CREATE TABLE exports (id TEXT, tenant INTEGER, report TEXT, updated TEXT)")
    execute(
        "INSERT INTO exports VALUES ('e1', 3, 'monthly', '2026-11-01T00:00'), ('e2', 4, 'weekly', '2026-11-02T00:00')"
    )


def test_sql_finder_on_sqlite(tmp_path: Path):
    import sqlite3

    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        _seed(conn.execute)
    url = f"sqlite:///{db}"
    first = find_with(url, SQL_QUERY, None, 0.0)
    assert [c["conversion_id"] for c in first.conversions] == ["e1", "e2"]
    assert first.conversions[0]["params"] == {"report": "monthly"}
    assert first.watermark == "2026-11-02T00:00"
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO exports VALUES ('e3', 5, 'daily', '2026-11-03T00:00')")
    second = find_with(url, SQL_QUERY, first.watermark, 0.0)
    assert [c["conversion_id"] for c in second.conversions] == ["e3"]


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL on 127.0.0.1, where the machine has one (skipped elsewhere)."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    pytest.importorskip("pg8000")
    home = Path(tempfile.mkdtemp(prefix="cutover-pg-"))  # not under pytest's root-only tmp dir
    home.chmod(0o755)
    data = home / "pg"
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: PostgreSQL will not start")
        run_as = ["runuser", "-u", "postgres", "--"]
        data.mkdir()
        shutil.chown(data, "postgres")
    subprocess.run(
        [*run_as, initdb, "-D", str(data), "-U", "cutover", "--auth=trust"], check=True, capture_output=True
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {data}"
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    start = [*run_as, pg_ctl, "-D", str(data), "-o", opts, "-l", str(data / "server.log"), "-w", "start"]
    subprocess.run(start, check=True, timeout=60, **quiet)
    try:
        yield f"postgresql+pg8000://cutover@127.0.0.1:{port}/postgres"
    finally:
        stop = [*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"]
        subprocess.run(stop, check=False, timeout=60, **quiet)
        shutil.rmtree(home, ignore_errors=True)


def test_sql_finder_on_postgresql(postgres):
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres)
    with engine.begin() as conn:
        _seed(lambda sql: conn.execute(text(sql)))
    engine.dispose()
    found = find_with(postgres, SQL_QUERY, "2026-11-01T00:00", 0.0)
    assert [(c["conversion_id"], c["tenant_id"]) for c in found.conversions] == [("e2", 4)]
    assert found.watermark == "2026-11-02T00:00"


def test_sql_finder_through_the_runner_with_settings(tmp_path, sqlite_ledger, clock):
    import sqlite3

    from controller.intake.finder_sql import find

    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        _seed(conn.execute)
    settings = Settings(finder_sql_url=f"sqlite:///{db}", finder_sql_query=SQL_QUERY)
    r = FinderRunner(
        "sql",
        find,
        parse_schedule("60"),
        ledger=sqlite_ledger,
        settings=settings,
        clock=clock,
        holder="a",
        timeout=30,
    )
    r.run_due()
    assert sqlite_ledger.get("e1").tenant_id == 3
    assert r.stats.watermark == "2026-11-02T00:00"
    ctx = FinderContext(clock(), 0.0, None, None, Settings())  # type: ignore[arg-type]
    with pytest.raises(Exception, match="CUTOVER_FINDER_SQL_URL"):
        find(ctx)


# -- SQS -------------------------------------------------------------------------------------


@pytest.fixture
def queue(aws):
    sqs = boto3.client("sqs")
    dlq = sqs.create_queue(QueueName="intake-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName="intake",
        Attributes={
            "VisibilityTimeout": "1",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}),
        },
    )["QueueUrl"]
    return sqs, url, dlq


def intake(sqs, url, ledger, clock) -> SQSIntake:
    return SQSIntake(
        sqs, url, ledger=ledger, clock=clock, limits=IntakeLimits(), wait_seconds=0, max_messages=10
    )


def drain(i: SQSIntake, rounds: int = 5) -> None:
    for _ in range(rounds):
        if i.poll_once() == 0 and i.stats.malformed == 0:
            break


def test_sqs_duplicates_in_the_queue_become_one_conversion_each(queue, sqlite_ledger, clock):
    sqs, url, _ = queue
    one = json.dumps({"conversion_id": "q1", "tenant_id": 4, "params": {"r": "m"}})
    batch = json.dumps(
        {
            "conversions": [
                {"conversion_id": "q2", "tenant_id": 5},
                {"conversion_id": "q1", "tenant_id": 4, "params": {"r": "m"}},  # q1 sent again as it was
            ]
        }
    )
    for body in (one, one, batch):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    i = intake(sqs, url, sqlite_ledger, clock)
    drain(i)
    assert sqlite_ledger.counts().state(ConversionState.RECEIVED) == 2
    assert sqlite_ledger.get("q1").params == {"r": "m"}
    assert i.stats.accepted == 2
    assert i.stats.duplicates == 2
    assert (
        int(
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
                "Attributes"
            ]["ApproximateNumberOfMessages"]
        )
        == 0
    )


def test_sqs_a_message_resending_an_id_with_other_content_stays_queued_and_the_rest_is_recorded(
    queue, sqlite_ledger, clock
):
    sqs, url, _ = queue
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"conversion_id": "q1", "tenant_id": 4}))
    i = intake(sqs, url, sqlite_ledger, clock)
    drain(i)
    for body in (
        json.dumps({"conversion_id": "q1", "tenant_id": 5}),
        json.dumps({"conversion_id": "q3", "tenant_id": 6}),
    ):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    i.record(i.receive())
    assert sqlite_ledger.get("q1").tenant_id == 4
    assert sqlite_ledger.get("q3") is not None
    assert i.stats.malformed == 1


def test_sqs_kill_between_receive_and_delete_loses_nothing(queue, sqlite_ledger, clock):
    sqs, url, _ = queue
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"conversion_id": "k1", "tenant_id": 1}))
    dying = intake(sqs, url, sqlite_ledger, clock)
    messages = dying.receive()
    dying.record(messages)  # durable ... then the process dies before acknowledging
    time.sleep(1.2)  # the visibility timeout
    restarted = intake(sqs, url, sqlite_ledger, clock)
    assert restarted.poll_once() == 1
    assert restarted.stats.duplicates == 1
    assert sqlite_ledger.counts().state(ConversionState.RECEIVED) == 1
    assert restarted.receive() == []


def test_sqs_kill_before_the_ledger_write_redelivers_and_records(queue, sqlite_ledger, clock):
    sqs, url, _ = queue
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"conversion_id": "k2", "tenant_id": 1}))
    intake(sqs, url, sqlite_ledger, clock).receive()  # received, then the process died
    time.sleep(1.2)
    restarted = intake(sqs, url, sqlite_ledger, clock)
    assert restarted.poll_once() == 1
    assert sqlite_ledger.get("k2") is not None


def test_sqs_malformed_messages_are_left_to_the_redrive_policy(queue, sqlite_ledger, clock):
    sqs, url, dlq = queue
    for body in ("not json", json.dumps({"conversion_id": "m1", "tenant_id": "5"}), json.dumps([1, 2])):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"conversion_id": "good", "tenant_id": 5}))
    i = intake(sqs, url, sqlite_ledger, clock)
    for _ in range(3):
        i.poll_once()
        time.sleep(1.1)
    assert sqlite_ledger.counts().state(ConversionState.RECEIVED) == 1
    assert sqlite_ledger.get("m1") is None
    assert i.stats.malformed >= 3
    dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    assert len(dead) == 3


def test_sql_finder_watermark_is_the_largest_value_not_the_largest_string(tmp_path: Path):
    """An integer watermark column read in pages of 1,000: as strings '999' > '1000', so the
    watermark would stick at 999 and every run would return the same page again."""
    import sqlite3

    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE exports (id INTEGER, tenant INTEGER)")
        conn.executemany("INSERT INTO exports VALUES (?, ?)", [(i, 1 + i % 7) for i in range(1, 2501)])
    query = (
        "SELECT 'e' || id AS conversion_id, tenant AS tenant_id, id AS watermark FROM exports "
        "WHERE id > CAST(:watermark AS INTEGER) ORDER BY id LIMIT 1000"
    )
    url = f"sqlite:///{db}"
    pages, mark = [], None
    for _ in range(4):
        found = find_with(url, query, mark, 0.0)
        pages.append(len(found.conversions))
        mark = found.watermark
    assert pages == [1000, 1000, 500, 0]
    assert mark == "2500"


class MultipartBucket:
    """An S3 listing as S3 gives it: a multipart upload's object bears the time the upload was
    initiated, and appears only once the upload completes; ``ListMultipartUploads`` shows it
    meanwhile."""

    def __init__(self) -> None:
        self.objects: dict[str, dt.datetime] = {}
        self.uploads: dict[str, dt.datetime] = {}

    def get_paginator(self, name: str) -> MultipartBucket:
        assert name == "list_objects_v2"
        return self

    def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, Any]]:
        contents = [
            {"Key": k, "LastModified": t} for k, t in sorted(self.objects.items()) if k.startswith(Prefix)
        ]
        return [{"Contents": contents}]

    def list_multipart_uploads(self, Bucket: str, Prefix: str, **_: Any) -> dict[str, Any]:
        uploads = [{"Key": k, "Initiated": t} for k, t in self.uploads.items() if k.startswith(Prefix)]
        return {"Uploads": uploads, "IsTruncated": False}


def test_s3_finder_does_not_skip_an_object_whose_multipart_upload_outlasted_a_run():
    """A large export uploaded in parts bears its upload's start time. A run while it was still
    uploading moved the watermark past that time (a small object came in meanwhile); without
    holding the watermark below uploads in progress, the finished export would never be taken in."""
    from controller.intake.finder_s3 import find_in

    t0 = dt.datetime(2026, 11, 1, 12, 0, 0, tzinfo=dt.UTC)
    bucket = MultipartBucket()
    big, small = "in/exports/7/monthly/2026-11-01.json", "in/exports/8/weekly/2026-11-01.json"
    bucket.uploads[big] = t0
    bucket.objects[small] = t0 + dt.timedelta(minutes=5)
    pattern = compile_pattern("exports/{tenant_id}/{report}/{date}.json")
    first = find_in(bucket, "b", "in/", pattern, None)
    assert [c["tenant_id"] for c in first.conversions] == [8]
    del bucket.uploads[big]
    bucket.objects[big] = t0  # completed: listed now, with the upload's start as its time
    second = find_in(bucket, "b", "in/", pattern, first.watermark)
    assert 7 in [c["tenant_id"] for c in second.conversions]
    assert second.watermark is not None
    assert second.watermark >= (t0 + dt.timedelta(minutes=5)).isoformat()  # and then it moves on
