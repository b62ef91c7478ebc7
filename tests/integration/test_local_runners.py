"""The local runners with the real sample worker: one process per conversion or per build."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from openpyxl import load_workbook

from controller.core.domain import DispatchBatch, DispatchItem, JobRef, JobStatus
from controller.core.domain import Path as Route
from controller.plumbing.localproc import worker_command
from legacy_adapter.local import LocalBuildRunner
from new_adapter.local import LocalParallelRunner


def items(n: int, **params: str) -> tuple[DispatchItem, ...]:
    return tuple(DispatchItem(f"c{i}", 100 + i, dict(params), "v1", 1) for i in range(n))


def wait_terminal(runner, refs: list[JobRef], timeout: float = 60.0, watch=None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if watch:
            watch()
        states = runner.poll(refs)
        if all(s.status.terminal for s in states.values()):
            return states
        time.sleep(0.05)
    raise AssertionError(f"not finished: {runner.poll(refs)}")


@pytest.fixture
def new_runner(tmp_path: Path):
    runner = LocalParallelRunner(tmp_path / "state", worker_command(None), tmp_path / "out", timeout=30)
    yield runner
    runner.close()


@pytest.fixture
def legacy_runner(tmp_path: Path):
    runner = LocalBuildRunner(tmp_path / "state", worker_command(None), tmp_path / "out", build_timeout=60)
    yield runner
    runner.close()


def produced(tmp_path: Path) -> list[dict]:
    lines = (tmp_path / "out" / "produced.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def overlap(lines: list[dict]) -> int:
    events = sorted([(x["started_at"], 1) for x in lines] + [(x["finished_at"], -1) for x in lines])
    best = cur = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best


def test_new_runner_runs_one_process_per_conversion_within_its_cap(new_runner, tmp_path):
    """Five jobs, cap two: never more than two at work; each writes a real workbook stamped 'new'."""
    assert new_runner.set_capacity(2) == 2
    submitted = time.time()
    refs = new_runner.submit(DispatchBatch("N1", Route.NEW, items(5, work_seconds="0.4"), 0))
    seen = []
    states = wait_terminal(new_runner, refs, watch=lambda: seen.append(new_runner.in_use()))
    assert {s.status for s in states.values()} == {JobStatus.SUCCEEDED}
    assert max(seen) <= 2
    # Each job's slot was told: taken before its worker's own clock started, after its submit.
    for state in states.values():
        assert state.slot_at is not None
        assert state.work_started_at is not None
        assert submitted <= state.slot_at <= state.work_started_at
    lines = produced(tmp_path)
    assert sorted(x["conversion_id"] for x in lines) == [f"c{i}" for i in range(5)]
    assert len({x["job_id"] for x in lines}) == 5
    assert overlap(lines) <= 2
    book = load_workbook(tmp_path / "out" / "100" / "c0.xlsx")
    assert book.properties.keywords == "path=new"
    sheet = book.worksheets[0]
    assert [c.value for c in sheet[1]] == ["Record ID", "Submitted at", "Customer", "Amount", "Approved"]
    assert isinstance(sheet["A2"].value, int)
    assert isinstance(sheet["E2"].value, bool)


def test_new_runner_queues_until_capacity_is_given(new_runner):
    new_runner.set_capacity(0)
    refs = new_runner.submit(DispatchBatch("N2", Route.NEW, items(2), 0))
    time.sleep(0.3)
    assert {s.status for s in new_runner.poll(refs).values()} == {JobStatus.QUEUED}
    new_runner.set_capacity(5)
    assert {s.status for s in wait_terminal(new_runner, refs).values()} == {JobStatus.SUCCEEDED}


@pytest.mark.parametrize(
    ("simulate", "reason"),
    [
        ("fail", "simulated failure"),
        ("crash", "worker exited with status 3"),
        ("hang", "timed out after 1s"),
    ],
)
def test_new_runner_fails_a_conversion_whose_worker_fails_crashes_or_hangs(tmp_path, simulate, reason):
    runner = LocalParallelRunner(tmp_path / "state", worker_command(None), tmp_path / "out", timeout=1)
    try:
        runner.set_capacity(1)
        refs = runner.submit(DispatchBatch("N3", Route.NEW, items(1, simulate=simulate), 0))
        state = wait_terminal(runner, refs, timeout=30)[refs[0]]
        assert state.status is JobStatus.FAILED
        assert reason in state.reason
        assert runner.in_use() == 0
    finally:
        runner.close()


def test_new_runner_submit_is_idempotent_and_find_sees_submitted_jobs(new_runner):
    batch = DispatchBatch("N4", Route.NEW, items(2), 0)
    first = new_runner.submit(batch)
    second = new_runner.submit(batch)
    assert first == second
    assert len(list(new_runner.queue.iterdir())) == 2
    found = new_runner.find([("c0", "N4"), ("c1", "N4"), ("c0", "N5")])
    assert found == {"c0": first[0], "c1": first[1]}


CRASHING_CONTROLLER = """
import os, sys, time
from pathlib import Path
from controller.core.domain import DispatchBatch, DispatchItem, JobStatus, Path as Route
from controller.plumbing.localproc import worker_command
from new_adapter.local import LocalParallelRunner
root = Path(sys.argv[1])
runner = LocalParallelRunner(root / "state", worker_command(None), root / "out", timeout=30)
runner.set_capacity(1)
item = DispatchItem("c0", 100, {"work_seconds": "1"}, "v1", 1)
refs = runner.submit(DispatchBatch("N6", Route.NEW, (item,), 0))
while not (runner.running / "N6.c0.pid").exists():  # the worker is started and recorded
    time.sleep(0.02)
os._exit(9)
"""


def test_a_restarted_runner_adopts_jobs_started_before_the_crash(tmp_path):
    """The controller process dies while a worker runs: a new runner over the same state sees it finish."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", CRASHING_CONTROLLER, str(tmp_path)], check=False, timeout=60)
    second = LocalParallelRunner(tmp_path / "state", worker_command(None), tmp_path / "out", timeout=30)
    refs = [JobRef("N6.c0", "c0")]
    try:
        assert second.poll(refs)[refs[0]].status is JobStatus.RUNNING
        assert second.in_use() == 1
        assert wait_terminal(second, refs)[refs[0]].status is JobStatus.SUCCEEDED
        assert [x["conversion_id"] for x in produced(tmp_path)] == ["c0"]
    finally:
        second.close()


def test_a_run_two_runners_close_keeps_the_result_the_worker_wrote(tmp_path):
    """Two controller processes share the state: one closes a finished run as an orphan (its
    worker is the other's exited child), then the one that started it reaps its child. The
    worker's success must stand; it was once overwritten with a failure naming no conversion,
    which read as "no such job" and had the conversion run a second time."""
    from controller.plumbing.localproc import pid_alive, read_json

    def runner() -> LocalParallelRunner:
        return LocalParallelRunner(
            tmp_path / "state", worker_command(None), tmp_path / "out", timeout=30, tick_seconds=3600
        )

    starter, other = runner(), runner()
    try:
        starter.set_capacity(1)
        refs = starter.submit(DispatchBatch("N7", Route.NEW, items(1), 0))
        starter.pump()
        pid = int((read_json(starter.running / "N7.c0.pid") or {})["pid"])
        deadline = time.monotonic() + 60
        while pid_alive(pid):  # exited, not yet reaped by the process that started it
            assert time.monotonic() < deadline
            time.sleep(0.02)
        other.pump()
        starter.pump()
        for r in (starter, other):
            state = r.poll(refs)[refs[0]]
            assert state.status is JobStatus.SUCCEEDED, state
        assert [x["conversion_id"] for x in produced(tmp_path)] == ["c0"]
    finally:
        starter.close()
        other.close()


def test_legacy_build_works_a_manifest_with_fixed_threads_one_failure_does_not_fail_the_rest(
    legacy_runner, tmp_path
):
    batch_items = (*items(5, work_seconds="0.3"), DispatchItem("bad", 7, {"simulate": "fail"}, "v1", 1))
    refs = legacy_runner.submit(DispatchBatch("L1", Route.LEGACY, batch_items, 2))
    seen = []
    states = wait_terminal(legacy_runner, refs, watch=lambda: seen.append(legacy_runner.in_use()))
    by_id = {ref.conversion_id: s for ref, s in states.items()}
    assert by_id.pop("bad").status is JobStatus.FAILED
    assert {s.status for s in by_id.values()} == {JobStatus.SUCCEEDED}
    lines = produced(tmp_path)
    assert {x["job_id"] for x in lines} == {"L1"}
    assert {x["path"] for x in lines} == {"legacy"}
    assert overlap(lines) <= 2
    assert max(seen) <= 2
    assert legacy_runner.in_use() == 0
    assert load_workbook(tmp_path / "out" / "100" / "c0.xlsx").properties.keywords == "path=legacy"


def test_legacy_build_is_started_once_per_key_and_found_after_a_crash(legacy_runner):
    batch = DispatchBatch("L2", Route.LEGACY, items(2), 1)
    assert legacy_runner.submit(batch) == legacy_runner.submit(batch)
    assert len(list(legacy_runner.builds.iterdir())) == 1
    found = legacy_runner.find([("c0", "L2"), ("c9", "L2"), ("c0", "L3")])
    assert set(found) == {"c0"}
    wait_terminal(legacy_runner, [JobRef("L2", "c0"), JobRef("L2", "c1")])


def test_legacy_build_that_dies_fails_the_conversions_it_did_not_finish(legacy_runner):
    batch_items = (
        DispatchItem("ok", 1, {}, "v1", 1),
        DispatchItem("boom", 2, {"simulate": "crash"}, "v1", 1),
    )
    refs = legacy_runner.submit(DispatchBatch("L4", Route.LEGACY, batch_items, 1))
    states = wait_terminal(legacy_runner, refs)
    by_id = {ref.conversion_id: s for ref, s in states.items()}
    assert by_id["ok"].status is JobStatus.SUCCEEDED
    assert by_id["boom"].status is JobStatus.FAILED
    assert "without a result" in by_id["boom"].reason


def test_legacy_build_whose_start_cannot_be_recorded_is_stopped_and_runs_once_after(
    legacy_runner, tmp_path, monkeypatch
):
    """The disk filled up after the build's worker started, before its process was recorded: that
    worker is stopped and the submit refused (nothing runs), so the resubmission is the only run;
    left going, it would be taken for dead 30 s later, failed and resubmitted while still at work."""
    import errno

    import legacy_adapter.local as local
    from controller.core.errors import SubmitRejectedError

    real = local.write_json

    def full_disk(path: Path, doc: object) -> None:
        if path.name == "build.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, doc)

    monkeypatch.setattr(local, "write_json", full_disk)
    first = DispatchBatch("L5", Route.LEGACY, items(3, work_seconds="0.2"), 3)
    with pytest.raises(SubmitRejectedError, match="No space left"):
        legacy_runner.submit(first)
    assert legacy_runner.find([("c0", "L5")]) == {}
    time.sleep(2.0)  # long enough for a worker left running to write its results
    assert not (tmp_path / "out" / "produced.jsonl").exists()
    monkeypatch.setattr(local, "write_json", real)
    refs = legacy_runner.submit(DispatchBatch("L6", Route.LEGACY, items(3, work_seconds="0.2"), 3))
    states = wait_terminal(legacy_runner, refs)
    assert {s.status for s in states.values()} == {JobStatus.SUCCEEDED}
    assert sorted(x["conversion_id"] for x in produced(tmp_path)) == ["c0", "c1", "c2"]


def test_new_job_whose_start_cannot_be_recorded_is_stopped_and_waits_its_turn_again(tmp_path, monkeypatch):
    """The same on the new path: a worker whose pid could not be written is stopped and its job goes
    back to the queue (left running unrecorded, it would be called vanished and run a second time);
    once the disk has room the job runs, once."""
    import errno

    import new_adapter.local as local

    real = local.write_json
    refused: list[Path] = []

    def full_disk(path: Path, doc: object) -> None:
        if path.suffix == ".pid" and not refused:
            refused.append(path)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, doc)

    monkeypatch.setattr(local, "write_json", full_disk)
    runner = LocalParallelRunner(
        tmp_path / "state", worker_command(None), tmp_path / "out", timeout=30, tick_seconds=3600
    )
    try:
        runner.set_capacity(1)
        (ref,) = runner.submit(DispatchBatch("N9", Route.NEW, items(1, work_seconds="0.2"), 0))
        with pytest.raises(OSError, match="No space left"):
            runner.pump()  # the ticker keeps the error and pumps on
        assert refused
        assert runner.poll([ref])[ref].status is JobStatus.QUEUED
        assert runner.in_use() == 0
        runner.pump()
        states = wait_terminal(runner, [ref], watch=runner.pump)
        assert states[ref].status is JobStatus.SUCCEEDED
        assert [x["conversion_id"] for x in produced(tmp_path)] == ["c0"]
    finally:
        runner.close()


ENV_DUMP = """
import json, os, sys
name = os.environ.get("CUTOVER_JOB_ID", "job")
with open(os.path.join(sys.argv[1], name + ".env.json"), "w") as fh:
    json.dump(dict(os.environ), fh)
"""

# What a job needs to run besides the contract: the executable search path, a home, a locale and a
# temporary directory, and where Python finds its modules.
RUN_VARIABLES = {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV"}


def contract_variables(table_heading: str) -> set[str]:
    """The variables of one of the README's job-contract tables (local spellings in parentheses)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split(table_heading, 1)[1].split("\n\n", 2)[1]
    import re

    names: set[str] = set()
    for row in section.splitlines()[2:]:
        first = row.split("|")[1]
        names.update(re.findall(r"`(CUTOVER_[A-Z_]+)`", first))
    return names


@pytest.mark.parametrize("route", [Route.NEW, Route.LEGACY])
def test_a_job_gets_the_contract_and_what_it_needs_to_run_never_the_controllers_secrets(
    tmp_path, monkeypatch, route
):
    """The controller's environment holds its API token and AWS keys; a job started by a local
    runner sees none of it: exactly the contract's variables (as the README's table lists them,
    in their local spellings) and the few a process needs to run."""
    import sys

    monkeypatch.setenv("CUTOVER_API_TOKEN", "controller-secret")
    monkeypatch.setenv("CUTOVER_FINDER_SQL_URL", "postgresql://app:password@db/app")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "controller-aws-secret")
    monkeypatch.setenv("SOMETHING_ELSE", "controller-only")
    script = tmp_path / "dump.py"
    script.write_text(ENV_DUMP)
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    command = [sys.executable, str(script), str(dumps)]
    batch_items = (DispatchItem("c0", 100, {"k": "v"}, "v1", 1), DispatchItem("c1", 101, {}, "v2", 1))
    if route is Route.NEW:
        runner: LocalParallelRunner | LocalBuildRunner = LocalParallelRunner(
            tmp_path / "state", command, tmp_path / "out", timeout=30
        )
        runner.set_capacity(1)
        batch_items = batch_items[:1]
    else:
        runner = LocalBuildRunner(tmp_path / "state", command, tmp_path / "out", build_timeout=30)
    try:
        refs = runner.submit(DispatchBatch("B7", route, batch_items, 2))
        wait_terminal(runner, refs)
    finally:
        runner.close()
    (dump,) = dumps.iterdir()
    env = json.loads(dump.read_text())
    assert "controller-secret" not in env.values()
    assert "controller-aws-secret" not in env.values()
    assert "SOMETHING_ELSE" not in env
    assert set(env) - RUN_VARIABLES <= {k for k in env if k.startswith("CUTOVER_")}
    given = {k for k in env if k.startswith("CUTOVER_")}
    local_extras = {"CUTOVER_JOB_ID", "CUTOVER_DEADLINE", "CUTOVER_OUTPUT_DIR"}
    if route is Route.NEW:
        table = contract_variables("**New path, one conversion**")
        # On AWS only: a Batch job's manifest (local jobs carry their conversion in the environment)
        aws_only = {
            "CUTOVER_RESULT_URI",
            "CUTOVER_MANIFEST_URI",
            "CUTOVER_MANIFEST_OFFSET",
            "CUTOVER_RESULTS_URI",
        }
        assert given == (table - aws_only) | local_extras
        assert env["CUTOVER_BATCH"] == "B7"
        assert env["CUTOVER_FLAG_VERSION"] == "v1"
    else:
        table = contract_variables("**Old path, one build per dispatch**")
        aws_only = {"CUTOVER_MANIFEST_URI", "CUTOVER_MANIFEST_JSON", "CUTOVER_RESULTS_URI"}
        assert given == (table - aws_only) | local_extras
        assert env["CUTOVER_FLAG_VERSION"] == "v1,v2"
    assert env["PATH"]


def test_a_recorded_pid_now_held_by_another_process_is_not_taken_for_the_worker(legacy_runner, tmp_path):
    """PIDs are reused: after a reboot, or once enough processes came and went, the pid a build
    recorded may belong to an unrelated process. The runner tells them apart by the process's start
    (boot and start time): the build counts as ended, and cancelling it kills nothing."""
    import subprocess

    from controller.plumbing.localproc import process_identity, write_json

    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        build = legacy_runner.builds / "L8"
        (build / "results").mkdir(parents=True)
        write_json(build / "manifest.json", {"contract": 1, "conversions": [{"conversion_id": "c0"}]})
        recorded = process_identity(stranger.pid)
        assert recorded is not None
        write_json(
            build / "build.json",
            {"pid": stranger.pid, "proc": recorded + "0", "started_at": time.time(), "threads": 1, "size": 1},
        )
        ref = JobRef("L8", "c0")
        state = legacy_runner.poll([ref])[ref]
        assert state.status is JobStatus.FAILED
        assert legacy_runner.in_use() == 0
        legacy_runner.cancel(ref)
        assert stranger.poll() is None  # still alive: not ours to kill
    finally:
        stranger.kill()
        stranger.wait()
