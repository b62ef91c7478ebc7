"""One replica of the chaos run: ``cutover run`` as the CLI runs it, with faults injected into submits.

Started by ``benchmarks/chaos.py`` as its own OS process, with its settings in ``CUTOVER_*``
environment variables like any ``cutover run``. The service is built by the same code the CLI
runs (``controller.cli.app.serve``); the only difference is that each backend is wrapped in
``FaultyBackend``, which makes a share of submits fail the ways the backend port documents:

- ``rejected``: ``SubmitRejectedError`` before anything is submitted;
- ``unavailable``: ``BackendUnavailableError`` before anything is submitted (outcome unknown to
  the caller, nothing started);
- ``lost_response``: the submit goes through, then ``BackendUnavailableError`` is raised, as when
  the answer of a call that worked is lost on the way back.

Each fault is appended as one JSON line to ``--fault-log``, which the harness counts: it cannot
see inside this process, and a killed replica's counters die with it.

With ``--aws-fault-rate`` (``chaos.py --backend aws``) every AWS client the replica makes also
goes through the fault layer of the AWS tests (``tests/aws/faults.py``): throttling, 5xx, slow
and lost answers and lagging listings as the services send them, on a seeded schedule.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path as FsPath
from typing import Any

REPO = FsPath(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from controller.core.domain import DispatchBatch, JobRef  # noqa: E402
from controller.core.errors import BackendUnavailableError, SubmitRejectedError  # noqa: E402
from controller.core.ports import Backend  # noqa: E402
from controller.plumbing.forwarding import ForwardingBackend  # noqa: E402

FAULT_KINDS = ("rejected", "unavailable", "lost_response")


class FaultyBackend(ForwardingBackend):
    """A backend that fails ``rate`` of its submits (one of ``FAULT_KINDS`` each), logging each one;
    every other call goes to the wrapped backend unchanged."""

    def __init__(self, inner: Backend, rate: float, rng: random.Random, log_path: FsPath) -> None:
        super().__init__(inner)
        self.rate = rate
        self._rng = rng
        self._log_path = log_path

    def submit(self, batch: DispatchBatch) -> list[JobRef]:
        if self._rng.random() >= self.rate:
            return self.inner.submit(batch)
        kind = self._rng.choice(FAULT_KINDS)
        self._log(kind, batch)
        if kind == "rejected":
            raise SubmitRejectedError(f"injected fault: {self.path.value} submit rejected")
        if kind == "lost_response":
            self.inner.submit(batch)
        raise BackendUnavailableError(f"injected fault: {self.path.value} submit {kind}")

    def _log(self, kind: str, batch: DispatchBatch) -> None:
        log_fault(
            self._log_path,
            {"path": self.path.value, "kind": kind, "batch": batch.key, "items": len(batch.items)},
        )


def log_fault(log_path: FsPath, fields: dict[str, object]) -> None:
    """Append one fault as a JSON line (one write: lines of several processes do not mix)."""
    line = {"at": time.time(), "pid": os.getpid(), **fields}
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())
    finally:
        os.close(fd)


def inject_aws_faults(rate: float, seed: int, log_path: FsPath) -> None:
    """Every boto3 session the controller makes from now on carries the fault layer's hooks."""
    import controller.plumbing.aws as aws
    from tests.aws.faults import FaultInjector, FaultSchedule

    schedule = FaultSchedule.scaled(
        rate,
        seed=seed,
        slow_seconds=5.0,  # the client's read timeout: the answer comes too late to be read
        lag_seconds=3.0,
        on_fault=lambda operation, kind: log_fault(log_path, {"aws": operation, "kind": kind}),
    )
    injector = FaultInjector(schedule)
    make_session = aws.session

    def session(region: str | None = None) -> Any:
        made = make_session(region)
        injector.install_on_session(made.events)
        return made

    aws.session = session  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description="one chaos replica: cutover run with submit faults")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of submits that fail")
    parser.add_argument("--fault-log", type=FsPath, required=True, help="one JSON line per fault")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--aws-fault-rate", type=float, default=None, help="AWS faults, 1.0 = a peak's")
    args = parser.parse_args()
    if args.aws_fault_rate is not None:
        inject_aws_faults(args.aws_fault_rate, args.seed, args.fault_log)

    from controller.cli.app import serve
    from controller.core.errors import CutoverError
    from controller.settings import load_settings

    rng = random.Random(args.seed)

    def faulty(backend: Backend) -> Backend:
        return FaultyBackend(backend, args.fault_rate, rng, args.fault_log)

    try:
        serve(load_settings(), "127.0.0.1", args.port, wrap_backend=faulty)
    except CutoverError as exc:
        sys.stderr.write(f"chaos replica: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
