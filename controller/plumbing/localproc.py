"""Process and file plumbing shared by the local runners (the embedded stand-ins for CodeBuild and
Batch): worker command lines, atomic JSON files, pid checks, and reading results written under the
job contract (``cutover_job``).

No decisions here; the runners translate what these report into ``JobState`` values.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controller.core.domain import JobState, JobStatus
from cutover_job.contract import Result, Status, parse_result
from cutover_job.storage import write_file_atomically as write_atomically

SAMPLE_WORKER = Path(__file__).resolve().parents[2] / "examples" / "sample_worker.py"


def worker_command(configured: str | None) -> list[str]:
    """The command a local runner starts: the configured one, or the sample worker."""
    if configured:
        return shlex.split(configured)
    return [sys.executable, str(SAMPLE_WORKER)]


def shadow_env(quarantine: str | None, job: str) -> dict[str, str]:
    """The job contract's shadow variables for one job of a shadow runner (none for a real one):
    its outputs go under ``<quarantine>/<job>/``, a directory or an S3 prefix."""
    if quarantine is None:
        return {}
    separator = "" if quarantine.endswith("/") else "/"
    return {"CUTOVER_SHADOW": "1", "CUTOVER_QUARANTINE_URI": f"{quarantine}{separator}{job}/"}


def write_json(path: Path, doc: Any) -> None:
    """Write ``doc`` to ``path`` atomically (write, fsync, rename)."""
    write_atomically(path, json.dumps(doc, separators=(",", ":")).encode())


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing or not (yet) a whole object."""
    try:
        with path.open() as fh:
            doc = json.load(fh)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def process_identity(pid: int) -> str | None:
    """Who holds ``pid`` now: the boot and the process's start time (clock ticks since boot), or
    None without procfs. PIDs are reused; a pid with its identity names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "?"
    fields = stat.rpartition(")")[2].split()
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None  # field 22 of proc(5): starttime


def pid_alive(pid: int, identity: str | None = None) -> bool:
    """True when a process with ``pid`` exists and has not exited (a zombie has exited) and, when the
    ``identity`` recorded at its start is given, is still that process and not a later one."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, someone else's: whether it is ours is the identity's to say
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: existence is all we can know
    if stat.rpartition(")")[2].split()[0] == "Z":
        return False
    return identity is None or process_identity(pid) in (identity, None)


# Workers outlive the runner that started them (a restarted runner adopts them). Their handles are
# kept here so that dropping a runner neither warns about nor waits for a worker still at work.
_DETACHED: list[subprocess.Popen[bytes]] = []


def detach(procs: list[subprocess.Popen[bytes]]) -> None:
    """Let go of workers that are still running; whoever polls their files next sees them finish.

    Each is still reaped when it ends, so it neither lingers as a zombie nor is reported as running.
    """
    import threading

    for proc in procs:
        if proc.poll() is None:
            _DETACHED.append(proc)
            threading.Thread(target=proc.wait, name="cutover-reaper", daemon=True).start()


# What a worker process needs to run besides its assignment: where programs and Python modules are,
# a home, a locale and a temporary directory. Nothing else of the controller's environment reaches
# a job: it holds the controller's secrets (CUTOVER_API_TOKEN, the finder's database URL, AWS keys).
RUN_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")


def job_environment(assignment: Mapping[str, str]) -> dict[str, str]:
    """A job's whole environment: the job contract's variables and ``RUN_VARIABLES``, no more."""
    return {**{k: os.environ[k] for k in RUN_VARIABLES if k in os.environ}, **assignment}


def spawn(cmd: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a worker in its own session with ``env`` (the contract's variables) and what it needs to
    run, output to ``log_path``; it outlives a crashed controller."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            cmd,
            env=job_environment(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill(pid: int) -> None:
    """Kill a worker's whole session; a vanished process is not an error."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return


def result_state(doc: Mapping[str, Any] | None, conversion_id: str) -> JobState | None:
    """Translate a result a job wrote (the job contract's result document, read from a file or an
    S3 object) into a ``JobState``; None when it says nothing usable about ``conversion_id``."""
    result = parse_result(doc, conversion_id)
    if result is None:
        return None
    work = None
    if result.started_at is not None and result.finished_at is not None:
        work = max(0.0, result.finished_at - result.started_at)
    status = JobStatus.SUCCEEDED if result.status is Status.SUCCEEDED else JobStatus.FAILED
    return JobState(status, result.reason, result.output, work)


def failed_result(conversion_id: str, reason: str, **fields: Any) -> dict[str, Any]:
    """The result document a runner writes for a job that ended without writing its own."""
    return Result(conversion_id, Status.FAILED, reason, **fields).document()
