"""The old path on one machine: a local stand-in for the CodeBuild batch.

One build per dispatch: ONE worker process that works through a manifest of all its conversions
with a fixed number of threads, as the old batch did, writing one result file per conversion.
Builds live in files under a directory several controller processes may share; a build key
already started is not started again (like CodeBuild's idempotency token).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path as FsPath
from typing import NoReturn

from controller.core.domain import DispatchBatch, JobRef, JobState, JobStatus, Path
from controller.core.errors import BackendUnavailableError, SubmitRejectedError
from controller.plumbing.localproc import (
    detach,
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
from cutover_job.contract import CONTRACT_VERSION, manifest_document


class LocalBuildRunner:
    """One worker process per build, ``batch.concurrency`` threads inside it."""

    path = Path.LEGACY

    def __init__(
        self,
        state_dir: FsPath,
        command: list[str],
        output_dir: FsPath,
        *,
        build_timeout: float,
        clock: Callable[[], float] = time.time,
        tick_seconds: float = 0.1,
        quarantine: str | None = None,
        name: str = "legacy",
    ) -> None:
        self.builds = state_dir / name / "builds"
        # A shadow runner: every build is a shadow whose outputs go under <quarantine>/<build key>/.
        self.quarantine = quarantine
        self.builds.mkdir(parents=True, exist_ok=True)
        self.command = command
        self.output_dir = output_dir
        self.build_timeout = build_timeout
        self._clock = clock
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._ticker = Ticker("cutover-legacy-runner", self.reap, tick_seconds)

    # -- the port ----------------------------------------------------------------------------

    def submit(self, batch: DispatchBatch) -> list[JobRef]:
        build = self.builds / batch.key
        refs = [JobRef(batch.key, item.conversion_id) for item in batch.items]
        if (build / "manifest.json").exists():
            return refs
        now = self._clock()
        # "build_id" named the batch key before the job contract; local workers written then may
        # still read it. The merge keeps "contract" first and "build_id" second, as they always were.
        manifest = {"contract": CONTRACT_VERSION, "build_id": batch.key} | manifest_document(
            batch.key, Path.LEGACY.value, batch.items, threads=batch.concurrency
        )
        try:
            (build / "results").mkdir(parents=True, exist_ok=True)
            write_json(build / "manifest.json", manifest)
            env = {
                "CUTOVER_JOB_ID": batch.key,
                "CUTOVER_PATH": Path.LEGACY.value,
                "CUTOVER_BATCH": batch.key,
                "CUTOVER_MANIFEST": str(build / "manifest.json"),
                "CUTOVER_RESULTS_DIR": str(build / "results"),
                "CUTOVER_THREADS": str(batch.concurrency),
                "CUTOVER_FLAG_VERSION": ",".join(sorted({i.flag_version for i in batch.items})),
                "CUTOVER_OUTPUT_DIR": str(self.output_dir),
                "CUTOVER_DEADLINE": str(now + self.build_timeout),
                **shadow_env(self.quarantine, batch.key),
            }
            popen = spawn(self.command, env, build / "build.log")
        except OSError as exc:
            raise SubmitRejectedError(f"local legacy build {batch.key}: {exc}") from exc
        try:
            write_json(
                build / "build.json",
                {
                    "pid": popen.pid,
                    "proc": process_identity(popen.pid),
                    "started_at": now,
                    "threads": batch.concurrency,
                    "size": len(refs),
                },
            )
        except OSError as exc:
            self._undo_start(batch.key, popen, exc)
        self._procs[batch.key] = popen
        self._ticker.start()
        return refs

    def _undo_start(self, key: str, popen: subprocess.Popen[bytes], exc: OSError) -> NoReturn:
        """The worker started but could not be recorded (a full disk): no one could tell it runs,
        so it would be taken for dead and its conversions run again. Stop it and refuse the submit;
        should it have written a result already, the outcome is unknown and the build stays."""
        kill(popen.pid)
        popen.wait()
        build = self.builds / key
        if _count(build / "results"):
            with contextlib.suppress(OSError):  # else the start-up grace ends it: the worker is gone
                self._mark_done(key, f"build stopped: its start could not be recorded ({exc})")
            raise BackendUnavailableError(f"local legacy build {key}: {exc}") from exc
        (build / "manifest.json").unlink(missing_ok=True)
        raise SubmitRejectedError(f"local legacy build {key}: {exc}; its worker was stopped") from exc

    def poll(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        self._ticker.start()
        ended: dict[str, bool] = {}
        out: dict[JobRef, JobState] = {}
        for ref in refs:
            build = self.builds / ref.job_id
            state = result_state(
                read_json(build / "results" / f"{ref.conversion_id}.json"), ref.conversion_id
            )
            if state is None:
                if ref.job_id not in ended:
                    ended[ref.job_id] = self._ended(ref.job_id)
                if not (build / "manifest.json").exists():
                    state = JobState(JobStatus.UNKNOWN, "no such build")
                elif ended[ref.job_id]:
                    done = read_json(build / "done.json") or {}
                    why = done.get("reason", "build ended")
                    state = JobState(JobStatus.FAILED, f"{why} without a result for this conversion")
                else:
                    state = JobState(JobStatus.RUNNING)
            out[ref] = state
        return out

    def find(self, intents: Sequence[tuple[str, str]]) -> dict[str, JobRef]:
        found: dict[str, JobRef] = {}
        manifests: dict[str, set[str]] = {}
        for conversion_id, key in intents:
            if key not in manifests:
                doc = read_json(self.builds / key / "manifest.json") or {}
                manifests[key] = {c["conversion_id"] for c in doc.get("conversions", [])}
            if conversion_id in manifests[key]:
                found[conversion_id] = JobRef(key, conversion_id)
        return found

    def cancel(self, ref: JobRef) -> None:
        info = read_json(self.builds / ref.job_id / "build.json")
        if info is not None and not self._ended(ref.job_id):
            kill(int(info["pid"]))  # _ended checked the pid still names the build's own process
            self._mark_done(ref.job_id, "build stopped")

    def set_capacity(self, slots: int) -> int | None:
        """A build's threads are fixed when it starts; there is no cap to set."""
        return None

    def in_use(self) -> int:
        """Threads held by builds still working: each holds min(threads, conversions left)."""
        held = 0
        for entry in os.scandir(self.builds):
            if (FsPath(entry.path) / "done.json").exists() or self._ended(entry.name):
                continue
            info = read_json(FsPath(entry.path) / "build.json") or {}
            left = int(info.get("size", 0)) - _count(FsPath(entry.path) / "results")
            held += max(0, min(int(info.get("threads", 0)), left))
        return held

    def close(self) -> None:
        self._ticker.stop()
        detach(list(self._procs.values()))
        self._procs.clear()

    # -- the machine -------------------------------------------------------------------------

    def reap(self) -> None:
        """Record builds that ended, and stop builds past their timeout."""
        now = self._clock()
        for key, popen in list(self._procs.items()):
            code = popen.poll()
            if code is not None:
                self._mark_done(key, "build finished" if code == 0 else f"build exited with status {code}")
                del self._procs[key]
                continue
            info = read_json(self.builds / key / "build.json") or {}
            if now - float(info.get("started_at", now)) > self.build_timeout:
                kill(popen.pid)
                popen.wait()
                self._mark_done(key, f"build timed out after {self.build_timeout:.0f}s")
                del self._procs[key]

    def _ended(self, key: str) -> bool:
        build = self.builds / key
        if (build / "done.json").exists():
            return True
        if key in self._procs:
            return False
        info = read_json(build / "build.json")
        if info is None:
            # a build whose process was never recorded: give it the start-up grace, then call it gone
            manifest = build / "manifest.json"
            return manifest.exists() and self._clock() - manifest.stat().st_mtime > 30
        if pid_alive(int(info["pid"]), info.get("proc")):
            return False
        self._mark_done(key, "build process ended")
        return True

    def _mark_done(self, key: str, reason: str) -> None:
        path = self.builds / key / "done.json"
        if not path.exists():
            write_json(path, {"reason": reason, "finished_at": self._clock()})


def _count(directory: FsPath) -> int:
    try:
        return sum(1 for name in os.listdir(directory) if name.endswith(".json"))
    except FileNotFoundError:
        return 0
