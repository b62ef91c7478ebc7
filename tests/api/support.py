"""Test doubles and builders for the service tests: an in-memory backend, a ledger that can be
switched off, and a ``Service`` wired around a real SQLite ledger in a temporary directory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

import httpx
import uvicorn

from controller.bootstrap import cycle_config
from controller.core.domain import (
    ConversionRecord,
    ConversionState,
    DispatchBatch,
    JobRef,
    JobState,
    JobStatus,
    Path,
)
from controller.core.errors import FlagUnavailableError, LedgerError
from controller.core.ports import Backend, Ledger
from controller.engine.cycle import Controller
from controller.ledger.sqlite import SQLiteLedger
from controller.service import Service
from controller.settings import Settings
from flags.document import values_document
from flags.file_source import FileFlagSource, write_json_atomically
from flags.lkg import LastKnownGood
from flags.snapshot import FlagSnapshot

TOKEN = "s3cret-token-for-tests"
REPO = FsPath(__file__).resolve().parents[2]


class FakeBackend:
    """An in-memory execution path: every job is queued on submit and finished by the next poll
    (SUCCEEDED, or FAILED for conversions listed in ``failing``)."""

    def __init__(self, path: Path, failing: Sequence[str] = ()) -> None:
        self.path = path
        self.failing = set(failing)
        self.jobs: dict[str, str] = {}  # conversion id -> job id
        self.submitted = 0
        self._lock = threading.Lock()

    def submit(self, batch: DispatchBatch) -> list[JobRef]:
        with self._lock:
            refs = []
            for item in batch.items:
                job = f"{self.path.value}-{batch.key}-{item.conversion_id}"
                self.jobs[item.conversion_id] = job
                refs.append(JobRef(job, item.conversion_id))
            self.submitted += len(refs)
            return refs

    def poll(self, refs: Sequence[JobRef]) -> dict[JobRef, JobState]:
        out = {}
        for ref in refs:
            if ref.conversion_id in self.failing:
                out[ref] = JobState(JobStatus.FAILED, "worker exited with status 3: no such form")
            else:
                out[ref] = JobState(JobStatus.SUCCEEDED, "", f"s3://out/{ref.conversion_id}.xlsx")
        return out

    def find(self, intents: Sequence[tuple[str, str]]) -> dict[str, JobRef]:
        return {cid: JobRef(self.jobs[cid], cid) for cid, _ in intents if cid in self.jobs}

    def cancel(self, ref: JobRef) -> None:
        return None

    def set_capacity(self, slots: int) -> int | None:
        return slots

    def in_use(self) -> int:
        return 0

    def close(self) -> None:
        return None


class CountingSource:
    """A flag source that counts its reads and can be made to fail or to hang."""

    name = "file"

    def __init__(self, inner: FileFlagSource) -> None:
        self.inner = inner
        self.reads = 0
        self.hang = threading.Event()
        self.unavailable = False

    def fetch(self) -> FlagSnapshot:
        self.reads += 1
        if self.hang.is_set():
            time.sleep(30)
        if self.unavailable:
            raise FlagUnavailableError("agent did not answer")
        return self.inner.fetch()


class SwitchableLedger:
    """A real ledger that can be made to stop answering, as a store outage looks to the service."""

    def __init__(self, inner: SQLiteLedger) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name == "close":
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise LedgerError(f"ledger {self.inner.path}: read failed (database is locked)")
            return attr(*args, **kwargs)

        return call


def write_flag(path: FsPath, tenants: Sequence[int], *, enabled: bool = True) -> None:
    """Publish a flag document in the values form, as the file source reads it."""
    write_json_atomically(path, values_document("migrated_tenants", enabled, list(tenants)))


def write_rollout(path: FsPath, groups: Mapping[str, Sequence[int]]) -> None:
    """Write a rollout plan: ``{"groups": [{"name", "tenant_ids"}]}``."""
    write_json_atomically(path, {"groups": [{"name": n, "tenant_ids": list(t)} for n, t in groups.items()]})


def make_settings(tmp: FsPath, **overrides: Any) -> Settings:
    """Settings for a service whose files all live under ``tmp``."""
    values: dict[str, Any] = {
        "flag_source": "file",
        "flag_file": tmp / "flags.json",
        "ledger": f"sqlite:///{tmp / 'ledger.db'}",
        "backend": "local",
        "local_state_dir": tmp / "state",
        "output_dir": tmp / "output",
        "rollout_file": tmp / "rollout.json",
        "cycle_seconds": 0.2,
        "budget": 20,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def make_service(
    tmp: FsPath,
    *,
    settings: Settings | None = None,
    backends: Mapping[Path, Backend] | None = None,
    ledger: Ledger | None = None,
    on_finished: Callable[[ConversionRecord, ConversionState, str], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[Service, CountingSource]:
    """A service around a real SQLite ledger and in-memory backends (no processes started)."""
    settings = settings or make_settings(tmp)
    ledger = ledger or SQLiteLedger(tmp / "ledger.db")
    source = CountingSource(FileFlagSource(settings.flag_file, settings.flag_key, clock))
    flags = LastKnownGood(source, ledger, clock)
    backends = dict(backends or {Path.LEGACY: FakeBackend(Path.LEGACY), Path.NEW: FakeBackend(Path.NEW)})
    controller = Controller(
        ledger=ledger,
        flags=flags,
        backends=backends,
        config=cycle_config(settings),
        clock=clock,
        holder="test",
        on_finished=on_finished,
    )
    return Service(settings, ledger, flags, backends, controller, clock), source


def client(app: Any, token: str | None = None) -> httpx.AsyncClient:
    """An HTTP client speaking to the app in process (no server, no threads of its own)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://cutover.test", headers=headers
    )


def run_until_settled(service: Service, max_cycles: int = 20) -> None:
    """Run cycles until nothing is received, owned or in flight."""
    for _ in range(max_cycles):
        service.controller.run_cycle()
        counts = service.ledger.counts()
        busy = sum(
            counts.state(s)
            for s in (
                ConversionState.RECEIVED,
                ConversionState.CLAIMED,
                ConversionState.DISPATCHING,
                ConversionState.DISPATCHED,
            )
        )
        if busy == 0:
            return
    raise AssertionError("conversions did not settle")


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """The app on a real loopback port (uvicorn in a thread); yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass(frozen=True)
class RunningController:
    """A ``cutover run`` process on loopback: its base URL, process id and combined log file."""

    base: str
    proc: subprocess.Popen[bytes]
    log: FsPath

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has stopped (after the ``with`` block)."""
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def peak_rss_bytes(self) -> int:
        """The process's high-water mark of resident memory (``VmHWM``) so far."""
        return _proc_status_kib(self.pid, "VmHWM") * 1024


def _proc_status_kib(pid: int, field: str) -> int:
    for line in FsPath(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/status has no {field}")


@contextlib.contextmanager
def run_controller(workdir: FsPath, env: Mapping[str, str] | None = None) -> Iterator[RunningController]:
    """``cutover run`` as an operator starts it, files under ``workdir``, settings from ``env`` on
    top of the environment without any ``CUTOVER_`` variable; stopped with SIGTERM afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    full = {k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_")}
    full.update(
        {
            "PYTHONPATH": str(REPO),
            "CUTOVER_FLAG_FILE": str(workdir / "flags.json"),
            "CUTOVER_LEDGER": f"sqlite:///{workdir / 'ledger.db'}",
            "CUTOVER_LOCAL_STATE_DIR": str(workdir / "state"),
            "CUTOVER_OUTPUT_DIR": str(workdir / "output"),
            "CUTOVER_CYCLE_SECONDS": "0.25",
            **(env or {}),
        }
    )
    log_path = workdir / "controller.log"
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "run", "--port", str(port)],
            cwd=workdir,
            env=full,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise AssertionError("cutover run exited:\n" + log_path.read_text())
                try:
                    if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError("cutover run did not come up:\n" + log_path.read_text())
                time.sleep(0.1)
            yield RunningController(base, proc, log_path)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
