"""The new path on one machine: a local stand-in for AWS Batch on Fargate.

Each conversion is its own job and its own worker process. Jobs wait in a queue directory and
start as capacity allows, like RUNNABLE jobs under a compute environment's maxvCpus. The state
lives in files (``queue/`` → ``running/`` → ``results/``) under a directory that several
controller processes may share; starting is serialised with a file lock and a rename, so the
cap holds across processes and no job starts twice. When a job takes its slot (its worker is
started) is kept beside its result (``results/<job>.slot``) and reported with it, so the forecast
can tell a worker's own start-up from the wait for a slot.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path as FsPath

from controller.core.domain import DispatchBatch, JobRef, JobState, JobStatus, Path
from controller.core.errors import SubmitRejectedError
from controller.plumbing.localproc import (
    detach,
    failed_result,
    kill,
    pid_alive,
    process_identity,
    read_json,
    result_state,
    shadow_env,
    spawn,
    write_json,
)
from controller.plumbing.ticker import Ticker
from cutover_job.contract import manifest_entry
from cutover_job.storage import is_s3


@dataclass(slots=True)
class _Proc:
    popen: subprocess.Popen[bytes]
    deadline: float


class LocalParallelRunner:
    """One worker process per conversion, at most ``capacity`` running at once."""

    path = Path.NEW

    def __init__(
        self,
        state_dir: FsPath,
        command: list[str],
        output_dir: FsPath,
        *,
        timeout: float,
        clock: Callable[[], float] = time.time,
        tick_seconds: float = 0.05,
        quarantine: str | None = None,
        name: str = "new",
    ) -> None:
        self.root = state_dir / name
        # A shadow runner: every job is a shadow whose outputs go under <quarantine>/<job id>/.
        self.quarantine = quarantine
        self.queue = self.root / "queue"
        self.running = self.root / "running"
        self.results = self.root / "results"
        self.logs = self.root / "logs"
        for d in (self.queue, self.running, self.results, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self._capacity_file = self.root / "capacity"
        self._lock_file = self.root / "lock"
        self.command = command
        self.output_dir = output_dir
        self.timeout = timeout
        self._clock = clock
        self._procs: dict[str, _Proc] = {}
        self._ticker = Ticker("cutover-new-runner", self.pump, tick_seconds)

    # -- the port ----------------------------------------------------------------------------

    def submit(self, batch: DispatchBatch) -> list[JobRef]:
        refs: list[JobRef] = []
        now = self._clock()
        try:
            for item in batch.items:
                job_id = f"{batch.key}.{item.conversion_id}"
                if self._where(job_id) is None:
                    spec = {"job_id": job_id, "batch": batch.key, **manifest_entry(item), "submitted_at": now}
                    write_json(self.queue / f"{job_id}.json", spec)
                refs.append(JobRef(job_id, item.conversion_id))
        except OSError as exc:
            raise SubmitRejectedError(f"local new-path queue: {exc}") from exc
        self._ticker.start()
        return refs

    def poll(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        self._ticker.start()
        return {ref: self._state(ref) for ref in refs}

    def find(self, intents: Sequence[tuple[str, str]]) -> dict[str, JobRef]:
        found: dict[str, JobRef] = {}
        for conversion_id, key in intents:
            job_id = f"{key}.{conversion_id}"
            if self._where(job_id) is not None:
                found[conversion_id] = JobRef(job_id, conversion_id)
        return found

    def cancel(self, ref: JobRef) -> None:
        with self._locked():
            queued = self.queue / f"{ref.job_id}.json"
            if queued.exists():
                self._finish(ref.job_id, ref.conversion_id, "cancelled before it started")
                queued.unlink(missing_ok=True)
                return
            proc = self._procs.pop(ref.job_id, None)
            if proc is not None:
                # Stopped and closed at once, so the slot it held is free when cancel returns.
                kill(proc.popen.pid)
                proc.popen.wait()
                self._close_run(ref.job_id, "cancelled while running")
                self._discard(ref.job_id)
                return
            info = read_json(self.running / f"{ref.job_id}.pid")
            if info is not None and pid_alive(int(info["pid"]), info.get("proc")):
                kill(int(info["pid"]))
                self._discard(ref.job_id)

    def _discard(self, job_id: str) -> None:
        """A stopped shadow's outputs in a local quarantine: its attempt is void and no comparison
        will read or clean them (an S3 quarantine keeps them until its own expiry rule)."""
        if self.quarantine is None or is_s3(self.quarantine):
            return
        shutil.rmtree(FsPath(self.quarantine) / job_id, ignore_errors=True)

    def set_capacity(self, slots: int) -> int:
        with self._locked():
            write_json(self._capacity_file, {"capacity": max(0, slots)})
            running = _count_specs(self.running)
        self._ticker.start()
        return max(slots, running)

    def in_use(self) -> int:
        return _count_specs(self.running)

    def close(self) -> None:
        self._ticker.stop()
        detach([p.popen for p in self._procs.values()])
        self._procs.clear()

    # -- the machine -------------------------------------------------------------------------

    def pump(self) -> None:
        """Reap finished or overdue workers, then start queued jobs while capacity allows."""
        with self._locked():
            self._reap()
            capacity = int((read_json(self._capacity_file) or {}).get("capacity", 0))
            free = capacity - _count_specs(self.running)
            if free <= 0:
                return
            queued = sorted(os.scandir(self.queue), key=lambda e: e.stat().st_mtime_ns)
            for entry in queued[:free]:
                if entry.name.startswith("."):
                    continue
                self._start(entry.name.removesuffix(".json"))

    def _start(self, job_id: str) -> None:
        spec_path = self.running / f"{job_id}.json"
        os.replace(self.queue / f"{job_id}.json", spec_path)
        os.utime(spec_path)  # its time is now the start, which orphan checks measure from
        spec = read_json(spec_path) or {}
        now = self._clock()
        with suppress(OSError):  # a timing only: without it the job runs all the same
            write_json(self.results / f"{job_id}.slot", {"slot_at": now})
        env = {
            "CUTOVER_JOB_ID": job_id,
            "CUTOVER_PATH": Path.NEW.value,
            # a job queued before the batch key was kept carries it in its id: "<key>.<conversion>"
            "CUTOVER_BATCH": str(spec.get("batch") or job_id.split(".", 1)[0]),
            "CUTOVER_CONVERSION_ID": str(spec.get("conversion_id", "")),
            "CUTOVER_TENANT_ID": str(spec.get("tenant_id", "")),
            "CUTOVER_PARAMS": _json(spec.get("params", {})),
            "CUTOVER_FLAG_VERSION": str(spec.get("flag_version", "")),
            "CUTOVER_FENCE": str(spec.get("fence", "")),
            "CUTOVER_OUTPUT_DIR": str(self.output_dir),
            "CUTOVER_RESULT_FILE": str(self.results / f"{job_id}.json"),
            "CUTOVER_DEADLINE": str(now + self.timeout),
            **shadow_env(self.quarantine, job_id),
        }
        try:
            popen = spawn(self.command, env, self.logs / f"{job_id}.log")
        except OSError:
            os.replace(spec_path, self.queue / f"{job_id}.json")  # nothing started: it waits its turn
            raise
        try:
            write_json(
                self.running / f"{job_id}.pid",
                {"pid": popen.pid, "proc": process_identity(popen.pid), "started_at": now},
            )
        except OSError:
            # A worker no one could tell runs (a full disk) would be taken for vanished and its
            # conversion run again: stop it, and put the job back unless it already wrote a result.
            kill(popen.pid)
            popen.wait()
            if not (self.results / f"{job_id}.json").exists():
                os.replace(spec_path, self.queue / f"{job_id}.json")
                raise
        self._procs[job_id] = _Proc(popen, now + self.timeout)

    def _reap(self) -> None:
        now = self._clock()
        for job_id, proc in list(self._procs.items()):
            code = proc.popen.poll()
            if code is None and now > proc.deadline:
                kill(proc.popen.pid)
                proc.popen.wait()
                self._close_run(job_id, f"timed out after {self.timeout:.0f}s and was killed")
            elif code is not None:
                self._close_run(job_id, None if code == 0 else f"worker exited with status {code}")
            else:
                continue
            del self._procs[job_id]
        for entry in os.scandir(self.running):
            if not entry.name.endswith(".json"):
                continue
            job_id = entry.name.removesuffix(".json")
            if job_id in self._procs:
                continue
            self._reap_orphan(job_id, entry.stat().st_mtime, now)

    def _reap_orphan(self, job_id: str, since: float, now: float) -> None:
        """A worker started by a controller process that is gone (or by another one)."""
        info = read_json(self.running / f"{job_id}.pid")
        if info is None:
            # the starter died between starting the worker and recording it: the result decides
            if (self.results / f"{job_id}.json").exists():
                self._close_run(job_id, None)
            elif now - since > self.timeout + 5:
                self._close_run(job_id, "worker vanished before its process was recorded")
            return
        pid = int(info["pid"])
        if pid_alive(pid, info.get("proc")):
            if now - float(info["started_at"]) > self.timeout:
                kill(pid)
                self._close_run(job_id, f"timed out after {self.timeout:.0f}s and was killed")
            return
        self._close_run(job_id, None)

    def _close_run(self, job_id: str, failure: str | None) -> None:
        spec = read_json(self.running / f"{job_id}.json")
        if spec is None:
            # Another process sharing this state closed the run first (it saw the worker, this
            # process's exited child, as gone); its outcome stands and must not be overwritten.
            (self.running / f"{job_id}.pid").unlink(missing_ok=True)
            return
        conversion_id = str(spec.get("conversion_id", ""))
        reported = result_state(read_json(self.results / f"{job_id}.json"), conversion_id)
        if reported is None:
            self._finish(job_id, conversion_id, failure or "worker ended without writing a result")
        elif failure is not None and reported.status is JobStatus.SUCCEEDED:
            # the exit status has the last word: a worker that failed after writing success failed
            self._finish(job_id, conversion_id, failure)
        (self.running / f"{job_id}.pid").unlink(missing_ok=True)
        (self.running / f"{job_id}.json").unlink(missing_ok=True)

    def _finish(self, job_id: str, conversion_id: str, reason: str) -> None:
        write_json(self.results / f"{job_id}.json", failed_result(conversion_id, reason, job_id=job_id))

    # -- reading state -----------------------------------------------------------------------

    def _where(self, job_id: str) -> str | None:
        for name, d in (
            ("queue", self.queue),
            ("running", self.running),
            ("results", self.results),
        ):
            if (d / f"{job_id}.json").exists():
                return name
        return None

    def _state(self, ref: JobRef) -> JobState:
        if (self.queue / f"{ref.job_id}.json").exists():
            return JobState(JobStatus.QUEUED)
        if (self.running / f"{ref.job_id}.json").exists():
            return JobState(JobStatus.RUNNING)
        state = result_state(read_json(self.results / f"{ref.job_id}.json"), ref.conversion_id)
        if state is None:
            return JobState(JobStatus.UNKNOWN, "no such job")
        slot = (read_json(self.results / f"{ref.job_id}.slot") or {}).get("slot_at")
        return replace(state, slot_at=float(slot)) if isinstance(slot, int | float) else state

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock_file.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _count_specs(directory: FsPath) -> int:
    return sum(1 for name in os.listdir(directory) if name.endswith(".json"))


def _json(value: object) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), sort_keys=True)
