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


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists and has not exited (a zombie has exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: existence is all we can know
    return stat.rpartition(")")[2].split()[0] != "Z"


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


def spawn(cmd: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a worker in its own session, output to ``log_path``; it outlives a crashed controller."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            cmd,
            env={**os.environ, **env},
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
    status = JobStatus.SUCCEEDED if result.status is Status.SUCCEEDED else JobStatus.FAILED
    return JobState(status, result.reason, result.output, result.started_at, result.finished_at)


def failed_result(conversion_id: str, reason: str, **fields: Any) -> dict[str, Any]:
    """The result document a runner writes for a job that ended without writing its own."""
    return Result(conversion_id, Status.FAILED, reason, **fields).document()
