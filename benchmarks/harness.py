"""What every benchmark shares: the import path, the command line, figures and one JSON line out.

Also a loopback server that answers like the AppConfig Agent (``GET /applications/{app}/
environments/{env}/configurations/{profile}?flag=KEY`` → ``{"enabled", "tenant_ids"}`` with a
``Configuration-Version`` header), and a backend port implementation in memory whose cost does not
grow with the work it has already finished.

Importing this module puts the repository first on ``sys.path``, so a benchmark measures the code
beside it (and can use ``tests``), whatever is installed.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import platform
import resource
import sqlite3
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path as FsPath
from typing import Any

REPO = FsPath(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from controller.core.domain import DispatchBatch, JobRef, JobState, JobStatus, Path  # noqa: E402
from controller.core.errors import FlagUnavailableError  # noqa: E402

APP, ENV, PROFILE, FLAG_KEY = "cutover", "bench", "migration-flags", "migrated_tenants"
AGENT_PATH = f"/applications/{APP}/environments/{ENV}/configurations/{PROFILE}?flag={FLAG_KEY}"


def arguments(doc: str | None, add: Callable[[argparse.ArgumentParser], None] | None = None) -> Any:
    """The command line: ``--smoke`` for a seconds-long run of the same code, plus the script's own."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run of the same code")
    if add is not None:
        add(parser)
    return parser.parse_args()


def machine() -> dict[str, Any]:
    """Where the figures come from: the load average tells how shared the machine was."""
    model = ""
    try:
        for line in FsPath("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(terse=True),
    }


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def goal(value: float, target: float, rule: str = ">=") -> dict[str, Any]:
    """A goal (``value`` ``rule`` ``target``, rule one of >=, <=, <) and whether it is met."""
    met = {">=": value >= target, "<=": value <= target, "<": value < target}[rule]
    return {"rule": rule, "target": target, "value": round(value, 3), "met": met}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports kilobytes)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024, 1)


def emit(result: dict[str, Any]) -> None:
    """Print the run's one JSON object."""
    sys.stdout.write(json.dumps(result, sort_keys=False) + "\n")
    sys.stdout.flush()


class Timer:
    """Wall-clock and CPU seconds of a block, both: on a shared machine they tell different things."""

    def __enter__(self) -> Timer:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


# -- the AppConfig Agent on loopback -------------------------------------------------------------


class Agent:
    """A loopback HTTP server that answers for one feature flag as the AppConfig Agent does."""

    def __init__(self, tenant_ids: Sequence[int], *, enabled: bool = True, version: str = "1") -> None:
        body: dict[str, Any] = {"enabled": enabled}
        if enabled:
            body["tenant_ids"] = list(tenant_ids)
        self.body = json.dumps(body).encode()
        self.version = version
        self.requests = 0
        agent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the agent and any sane client use
            disable_nagle_algorithm = True  # headers and body leave at once, as from a real server

            def do_GET(self) -> None:
                agent.requests += 1
                if self.path != AGENT_PATH:
                    self._answer(404, b"ResourceNotFoundException", "application/text")
                    return
                self._answer(200, agent.body, "application/json")

            def _answer(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Configuration-Version", agent.version)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="agent", daemon=True)

    def __enter__(self) -> Agent:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)


def get_flag(conn: http.client.HTTPConnection) -> tuple[bytes, str | None]:
    """One GET of the flag on a kept-alive connection: the body and its version."""
    conn.request("GET", AGENT_PATH)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise FlagUnavailableError(f"agent answered {response.status}")
    return body, response.getheader("Configuration-Version")


# -- a backend in memory ---------------------------------------------------------------------------


class MemoryBackend:
    """The backend port in memory: every submitted conversion runs for ``ticks`` ticks, then succeeds.

    Unlike the test doubles, it forgets a job once it has reported its end, so that its own cost
    stays proportional to the work in flight and a long run measures the controller, not the fake.
    """

    def __init__(self, path: Path, *, ticks: int = 1) -> None:
        self.path = path
        self.ticks = ticks
        self.running: dict[str, int] = {}  # job id -> ticks left
        self.finished: set[str] = set()  # done, not yet reported by a poll
        self.submitted = 0

    def submit(self, batch: DispatchBatch) -> list[JobRef]:
        refs = []
        for item in batch.items:
            job_id = f"{batch.key}/{item.conversion_id}"
            self.running[job_id] = self.ticks
            refs.append(JobRef(job_id, item.conversion_id))
        self.submitted += len(refs)
        return refs

    def poll(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        out: dict[JobRef, JobState] = {}
        for ref in refs:
            if ref.job_id in self.running:
                out[ref] = JobState(JobStatus.RUNNING)
            elif ref.job_id in self.finished:
                self.finished.discard(ref.job_id)
                out[ref] = JobState(JobStatus.SUCCEEDED, output=f"{ref.conversion_id}.xlsx")
            else:
                out[ref] = JobState(JobStatus.UNKNOWN)
        return out

    def find(self, intents: Sequence[tuple[str, str]]) -> dict[str, JobRef]:
        found = {}
        for cid, key in intents:
            job_id = f"{key}/{cid}"
            if job_id in self.running or job_id in self.finished:
                found[cid] = JobRef(job_id, cid)
        return found

    def cancel(self, ref: JobRef) -> None:
        self.running.pop(ref.job_id, None)

    def set_capacity(self, slots: int) -> int | None:
        return max(slots, len(self.running))

    def in_use(self) -> int:
        return len(self.running)

    def close(self) -> None:
        return None

    def tick(self) -> None:
        """Advance the work by one step; what ends moves to ``finished``."""
        done = []
        for job_id, left in self.running.items():
            if left <= 1:
                done.append(job_id)
            else:
                self.running[job_id] = left - 1
        for job_id in done:
            del self.running[job_id]
            self.finished.add(job_id)
