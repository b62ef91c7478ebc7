"""Process-level chaos: replicas of ``cutover run`` killed, flags flipped and broken, submits failing.

What runs, all real OS processes on this machine:

- ``--replicas`` controllers (``benchmarks/chaos_replica.py``: ``cutover run`` as the CLI builds
  it, with a share ``--fault-rate`` of submits failing the ways the backend port documents), each
  on its own loopback port, sharing one ledger (a SQLite file, or with ``--ledger dynamodb`` one
  table on a moto server this script starts), one flag file, and the local runners' state and
  output directories. The runners start the sample worker, which writes a real ``.xlsx`` and one
  line of ``produced.jsonl`` per conversion it converts.
- A load generator posting batches of conversions over HTTP (``POST /conversions``, bearer
  token) for the demo's 200 tenants, each in proportion to its activity (so the rollout's first
  groups, the least active tenants, carry little of it), to random replicas, retrying on
  connection errors (a killed replica) and sending again now and then ids it already had
  acknowledged, which must come back as duplicates. It keeps the backlog (accepted, not yet
  finished) under ``--max-backlog`` so the run measures the system, not a queue.
- A flag changer: every ``--flag-every`` seconds it advances the flag one rollout group or rolls
  it back one version, with the operations behind ``cutover flag advance|rollback``; now and then
  (``--invalid-share``) it replaces the flag file with an invalid document instead, left in place
  until the next change restores the version last in force. The controllers must keep the last
  good flag meanwhile: once per invalid document every replica up for a few seconds is asked
  (``/status``); one that has read the file since it broke must report it invalid and the version
  last in force as the one it routes by.
- A killer: every ``--kill-every`` seconds (0.5-1.5 times that, from ``--seed``) one replica,
  chosen at random, gets SIGKILL and is restarted a moment later. Workers its runners started run
  in their own sessions and outlive it; the replicas adopt them.
- With ``--backend aws`` the paths are CodeBuild and Batch instead of the local runners:
  ``benchmarks/aws_world.py`` hosts a moto server (builds, jobs, the manifest bucket, and the
  ledger's table with ``--ledger dynamodb``) and a player that does what the jobs would: it reads
  each manifest from moto's S3 through the job contract, works a build's conversions
  ``CUTOVER_THREADS`` at once and starts Batch jobs only as the compute environment's maxvCpus
  allows, writes the results, and records every conversion it worked as the sample worker does.
  Every AWS call of the replicas goes through the fault layer of the AWS tests
  (``tests/aws/faults.py``): throttling, 5xx, slow and lost answers and lagging listings as the
  services send them, ``--aws-fault-rate`` times as often as ``FaultSchedule.scaled`` puts a
  month-start peak.

After ``--seconds`` (or once ``--conversions`` were accepted) the load, the flag changes and the
kills stop, a valid flag is put back, and the replicas run until every accepted conversion is
terminal (at most ``--drain-seconds``); then they are stopped. The verdict comes from the worker
outputs and the ledger, not from the controllers' counters (``controller.cli.demo.outcome``, the
demo's check):

- ``duplicates``: successful worker outputs beyond the first for a conversion, on either path.
  A clone-and-resubmit after a failed run may legitimately run a conversion again, but the sample
  worker writes its output line only when it succeeds, so a second line is always a second
  successful run.
- ``lost``: accepted conversions that are not terminal in the ledger, or that the ledger records
  as succeeded without an output file.
- ``wrong_path``: an output made on a path other than the one the ledger records.
- ``max_in_flight``: the most conversions the workers were converting at one instant, from the
  start and end times in their output lines (the legacy build's threads count one each), against
  ``budget``.

Prints one JSON object. Exit status 1 when duplicates, lost or wrong_path is not 0, when
max_in_flight is over the budget, when an acknowledged id was accepted a second time, when a
replica lost the last good flag, or when the drain did not finish.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from harness import FLAG_KEY, arguments, emit, goal, machine

from controller.cli.demo import outcome, rollout_groups, tenant_activity
from controller.core.errors import ConflictError, CutoverError, InputError
from controller.core.ports import Ledger
from flags import ops
from flags.atomic import write_atomically, write_json_atomically
from flags.file_store import FileVersionStore
from flags.rollout import RolloutPlan, load_plan

REPLICA = FsPath(__file__).resolve().parent / "chaos_replica.py"
AWS_WORLD = FsPath(__file__).resolve().parent / "aws_world.py"
TERMINAL = ("succeeded", "failed")
INVALID_DOCUMENTS: tuple[tuple[str, bytes], ...] = (
    ("not JSON", b"{migrated_tenants: [1001,"),
    ("empty", b""),
    ("an array", b"[1001, 1002]"),
    ("tenant id 0", b'{"migrated_tenants": {"enabled": true, "tenant_ids": [0, 1001]}}'),
    ("ids as strings", b'{"migrated_tenants": {"enabled": true, "tenant_ids": ["1001"]}}'),
    ("no flag key", b'{"other_flag": {"enabled": true}}'),
)


def _options(parser: Any) -> None:
    parser.add_argument("--seconds", type=float, default=60.0, help="how long load, flags and kills go on")
    parser.add_argument(
        "--conversions", type=int, default=None, help="or until this many conversions were accepted"
    )
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=10.0, help="mean seconds between kills")
    parser.add_argument("--flag-every", type=float, default=3.0, help="seconds between flag changes")
    parser.add_argument(
        "--invalid-share", type=float, default=0.2, help="share of flag changes that break it"
    )
    parser.add_argument("--fault-rate", type=float, default=0.05, help="share of submits that fail")
    parser.add_argument("--budget", type=int, default=6)
    parser.add_argument("--work-seconds", type=float, default=0.1, help="most a conversion sleeps")
    parser.add_argument("--rate", type=float, default=40.0, help="conversions offered per second at most")
    parser.add_argument("--max-backlog", type=int, default=120, help="accepted, unfinished conversions")
    parser.add_argument("--cycle-seconds", type=float, default=0.5)
    parser.add_argument("--drain-seconds", type=float, default=180.0)
    parser.add_argument("--ledger", choices=("sqlite", "dynamodb"), default="sqlite")
    parser.add_argument(
        "--backend",
        choices=("local", "aws"),
        default="local",
        help="local runners, or CodeBuild and Batch on a moto server with a player doing the jobs' work",
    )
    parser.add_argument(
        "--aws-fault-rate",
        type=float,
        default=1.0,
        help="with --backend aws: AWS faults (throttling, 5xx, slow and lost answers), 1.0 = a peak's",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=FsPath, default=None, help="work in this directory and keep it")


# -- replicas ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    """One ``cutover run`` process on a fixed port, started again after each kill."""

    def __init__(
        self,
        index: int,
        env: dict[str, str],
        workdir: FsPath,
        fault_rate: float,
        seed: int,
        aws_fault_rate: float | None = None,
    ) -> None:
        self.index = index
        self.aws_fault_rate = aws_fault_rate
        self.port = free_port()
        self.env = env
        self.workdir = workdir
        self.fault_rate = fault_rate
        self.seed = seed
        self.starts = 0
        self.started_at = 0.0
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.lock:
            self.starts += 1
            self.started_at = time.monotonic()
            log = (self.workdir / f"replica-{self.index}.log").open("ab")
            with log:
                self.proc = subprocess.Popen(
                    [
                        sys.executable,
                        str(REPLICA),
                        "--port",
                        str(self.port),
                        "--fault-rate",
                        str(self.fault_rate),
                        "--fault-log",
                        str(self.workdir / "faults.jsonl"),
                        "--seed",
                        str(self.seed * 1000 + self.index * 100 + self.starts),
                        *(
                            ["--aws-fault-rate", str(self.aws_fault_rate)]
                            if self.aws_fault_rate is not None
                            else []
                        ),
                    ],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                )

    def kill(self) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                return
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_ready(replicas: list[Replica], timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    for r in replicas:
        while True:
            if not r.alive():
                raise RuntimeError(f"replica {r.index} exited at start; see replica-{r.index}.log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(r.url + "/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {r.index} not healthy within {timeout:.0f}s")
            time.sleep(0.2)


# -- the load ------------------------------------------------------------------------------------


@dataclass
class Load:
    acknowledged: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> item as sent
    requests: int = 0
    retries: int = 0
    repeats_sent: int = 0
    repeats_folded: int = 0
    repeats_accepted_again: int = 0
    refused: list[str] = field(default_factory=list)


def backlog(urls: list[str], token: str, client: Any) -> int | None:
    """Accepted, unfinished conversions, from one replica's ``/status``; None when none answers."""
    for url in urls:
        try:
            doc = client.get(url + "/status", headers={"Authorization": f"Bearer {token}"}).json()
            return sum(n for state, n in doc["conversions"].items() if state not in TERMINAL)
        except Exception:
            continue
    return None


def generate(
    replicas: list[Replica],
    token: str,
    tenants: list[int],
    weights: list[float],
    args: Any,
    rng: random.Random,
    stop: threading.Event,
    load: Load,
) -> None:
    """Post batches of conversions until ``stop``; every batch is retried until a replica takes it."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    tick = 0.25
    per_tick = max(1, round(args.rate * tick))
    sent_ids: list[str] = []
    n = 0
    with httpx.Client(timeout=10) as client:
        next_check = 0.0
        while not stop.is_set():
            started = time.monotonic()
            if started >= next_check:
                urls = [r.url for r in rng.sample(replicas, len(replicas))]
                pending = backlog(urls, token, client)
                next_check = started + 0.5
                if pending is None or pending >= args.max_backlog:
                    stop.wait(0.5)
                    continue
            items = []
            for _ in range(per_tick):
                n += 1
                params = {"report": "monthly", "work_seconds": f"{rng.uniform(0.0, args.work_seconds):.3f}"}
                roll = rng.random()
                if roll < 0.01:
                    params["simulate"] = "fail_first"
                elif roll < 0.015:
                    params["simulate"] = "fail"
                items.append(
                    {
                        "conversion_id": f"c{n:07d}",
                        "tenant_id": rng.choices(tenants, weights)[0],
                        "params": params,
                    }
                )
            repeats = []
            if sent_ids and rng.random() < 0.2:
                repeats = [load.acknowledged[cid] for cid in rng.sample(sent_ids, min(3, len(sent_ids)))]
            body = {"conversions": items + repeats}
            answer = _post(replicas, body, headers, client, rng, stop, load)
            if answer is None:
                return
            for item in items:
                load.acknowledged[item["conversion_id"]] = item
                sent_ids.append(item["conversion_id"])
            if args.conversions is not None and len(load.acknowledged) >= args.conversions:
                stop.set()
            again = {r["conversion_id"] for r in repeats}
            load.repeats_sent += len(repeats)
            load.repeats_folded += len(again & set(answer["duplicates"]))
            load.repeats_accepted_again += len(again & set(answer["accepted"]))
            stop.wait(max(0.0, tick - (time.monotonic() - started)))


def _post(
    replicas: list[Replica],
    body: dict[str, Any],
    headers: dict[str, str],
    client: Any,
    rng: random.Random,
    stop: threading.Event,
    load: Load,
) -> dict[str, Any] | None:
    import httpx

    give_up = time.monotonic() + 120
    while time.monotonic() < give_up:
        replica = rng.choice(replicas)
        load.requests += 1
        try:
            response = client.post(replica.url + "/conversions", json=body, headers=headers)
        except httpx.HTTPError:
            load.retries += 1
            time.sleep(0.1)
            continue
        if response.status_code == 202:
            return dict(response.json())
        if response.status_code >= 500:
            load.retries += 1
            time.sleep(0.2)
            continue
        load.refused.append(f"{response.status_code}: {response.text[:200]}")
        return {"accepted": [], "duplicates": []}
    load.refused.append("no replica took a batch within 120s")
    stop.set()
    return None


# -- the flag --------------------------------------------------------------------------------------


@dataclass
class FlagChanges:
    advances: int = 0
    rollbacks: int = 0
    invalid: int = 0
    restores: int = 0
    refused: int = 0
    last_good: int | None = None
    broken: bool = False
    broken_at: float = 0.0
    sampled: bool = True  # whether the replicas were asked about the current broken document
    kinds: dict[str, int] = field(default_factory=dict)
    # (wall-clock time, version) each time the valid version in the file changed
    in_force: list[tuple[float, int | None]] = field(default_factory=list)

    def was_in_force(self, version: str, at: float, slack: float = 1.0) -> bool:
        """Whether ``version`` was the valid version in the file at some moment within ``slack``
        seconds of ``at``."""
        for i, (since, v) in enumerate(self.in_force):
            until = self.in_force[i + 1][0] if i + 1 < len(self.in_force) else float("inf")
            if str(v) == version and since - slack <= at <= until + slack:
                return True
        return False


def change_flag(
    store: FileVersionStore, plan: RolloutPlan, rng: random.Random, share: float, fc: FlagChanges
) -> None:
    """One change: restore after a broken document, else break it, advance a group or roll back."""
    op = ops.Operator(by="chaos", clock=time.time)
    if fc.broken:
        ops.rollback(store, to_version=fc.last_good, op=op, text="restore after an invalid document")
        fc.broken = False
        fc.restores += 1
        return
    if fc.last_good is not None and rng.random() < share:
        name, doc = rng.choice(INVALID_DOCUMENTS)
        write_atomically(store.path, doc)
        fc.broken = True
        fc.broken_at = time.monotonic()
        fc.sampled = False
        fc.invalid += 1
        fc.kinds[name] = fc.kinds.get(name, 0) + 1
        return
    current = store.in_force()
    migrated = current.content.migrated if current else frozenset()
    remaining = [g.name for g in plan.groups if not set(g.tenant_ids) <= migrated]
    can_roll_back = current is not None and current.version is not None and current.version > 1
    try:
        if remaining and (not can_roll_back or rng.random() < 0.65):
            ops.advance(store, plan, to_group=remaining[0], max_add=10_000, op=op)
            fc.advances += 1
        elif can_roll_back:
            ops.rollback(store, op=op)
            fc.rollbacks += 1
    except (InputError, ConflictError):
        fc.refused += 1
    now = store.in_force()
    fc.last_good = now.version if now else fc.last_good
    if not fc.in_force or fc.in_force[-1][1] != fc.last_good:
        fc.in_force.append((time.time(), fc.last_good))


@dataclass
class HeldFlag:
    """What the replicas reported in ``/status`` while an invalid document was in the flag file."""

    samples: int = 0
    kept: int = 0
    behind: int = 0  # its last read of a valid file predates the version last in force
    problems: list[str] = field(default_factory=list)


def check_held_flag(replicas: list[Replica], token: str, fc: FlagChanges, held: HeldFlag) -> None:
    """Ask each replica that has been up a while which flag it routes by. One that has read the
    invalid file (``flag.state`` is ``invalid``) must still route by the version last in force
    (``flag.version``), or, when its cycles are slower than the flag changes (the AWS backend under
    faults), by the version that was in force when it last read a valid file (``age_seconds`` ago):
    it is behind, as during a gradual deployment, not wrong. One whose last cycle read the file
    before it broke (``ok``) is behind, not judged; any other state is a problem."""
    import httpx

    fc.sampled = True
    for r in replicas:
        if not r.alive() or time.monotonic() - r.started_at < 5.0:
            continue
        try:
            answer = httpx.get(r.url + "/status", headers={"Authorization": f"Bearer {token}"}, timeout=5)
            flag = answer.json()["flag"]
        except (httpx.HTTPError, ValueError, KeyError):
            continue  # being killed: nothing to judge
        if not fc.broken:
            return  # restored meanwhile
        held.samples += 1
        if flag["state"] == "ok":
            held.behind += 1
        elif flag["version"] == str(fc.last_good) and flag["state"] == "invalid":
            held.kept += 1
        elif flag["state"] == "invalid" and fc.was_in_force(
            str(flag["version"]), time.time() - float(flag.get("age_seconds") or 0.0)
        ):
            held.behind += 1
        else:
            held.problems.append(f"replica {r.index}: {flag} (last good {fc.last_good})")


def restore_flag(store: FileVersionStore, fc: FlagChanges) -> None:
    if fc.broken:
        op = ops.Operator(by="chaos", clock=time.time)
        ops.rollback(store, to_version=fc.last_good, op=op, text="restore after an invalid document")
        fc.broken = False
        fc.restores += 1


# -- the ledger ------------------------------------------------------------------------------------


@contextlib.contextmanager
def dynamodb_table(workdir: FsPath) -> Iterator[dict[str, str]]:
    """A moto server (its own process, on loopback) with the ledger's table; yields the environment
    that reaches it, which this process uses too while it lasts."""
    from controller.ledger.dynamodb import create_table
    from controller.plumbing.aws import session
    from tests.aws.moto_world import MotoProcess

    server = MotoProcess(workdir / "moto.log")
    env = {
        "AWS_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        create_table(session().client("dynamodb"), "cutover-chaos")
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@contextlib.contextmanager
def aws_world(workdir: FsPath, output: FsPath, args: Any) -> Iterator[dict[str, str]]:
    """``benchmarks/aws_world.py`` in a process of its own: moto with CodeBuild, Batch, the manifest
    bucket and the ledger's table, and the player doing the jobs' work; yields the environment that
    reaches it (this process uses it too while it lasts)."""
    ready = workdir / "aws-world.url"
    log = (workdir / "aws-world.log").open("ab")
    with log:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(AWS_WORLD),
                "--ready-file",
                str(ready),
                "--output",
                str(output),
                "--work-seconds",
                str(args.work_seconds),
                "--max-vcpus",
                str(2 * args.budget),
                "--table",
                "cutover-chaos",
                "--seed",
                str(args.seed),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(
                "the AWS world did not start:\n" + (workdir / "aws-world.log").read_text()[-2000:]
            )
        time.sleep(0.1)
    env = {
        "AWS_ENDPOINT_URL": ready.read_text().strip(),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def aws_settings(args: Any) -> dict[str, str]:
    """What a replica needs to run the paths on the AWS world (``tests/aws/moto_world.py``'s names)."""
    from tests.aws.moto_world import BUCKET, COMPUTE_ENVIRONMENT, JOB_DEFINITION, PROJECT, QUEUE

    return {
        "CUTOVER_BACKEND": "aws",
        "CUTOVER_LEGACY_PROJECT": PROJECT,
        "CUTOVER_BATCH_JOB_QUEUE": QUEUE,
        "CUTOVER_BATCH_JOB_DEFINITION": JOB_DEFINITION,
        "CUTOVER_BATCH_COMPUTE_ENVIRONMENT": COMPUTE_ENVIRONMENT,
        "CUTOVER_MANIFEST_BUCKET": BUCKET,
        "CUTOVER_BATCH_VCPUS_PER_JOB": "2",
        "CUTOVER_FARGATE_VCPU_QUOTA": str(max(40, 2 * args.budget)),
    }


def open_ledger(url: str) -> Ledger:
    from controller.bootstrap import make_ledger
    from controller.settings import Settings

    return make_ledger(Settings(ledger=url))


def drain(ledger: Ledger, ids: list[str], timeout: float) -> list[str]:
    """Wait until every id is terminal in the ledger; the ones still not terminal at the timeout."""
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        done = set()
        for cid in pending:
            record = ledger.get(cid)
            if record is not None and record.state.terminal:
                done.add(cid)
        pending -= done
        if pending:
            time.sleep(1.0)
    return sorted(pending)


def stray_workers(state: FsPath) -> int:
    """Kill and count workers still running after the drain (none should be)."""
    from controller.plumbing.localproc import kill, pid_alive, read_json

    found = 0
    pid_files = list((state / "new" / "running").glob("*.pid")) + list(
        (state / "legacy" / "builds").glob("*/build.json")
    )
    for path in pid_files:
        info = read_json(path) or {}
        pid = info.get("pid")
        if isinstance(pid, int) and pid_alive(pid) and _is_worker(pid):
            found += 1
            kill(pid)
    return found


def _is_worker(pid: int) -> bool:
    """Whether ``pid`` is still a sample worker (and not another process that got its number)."""
    try:
        return b"sample_worker" in FsPath(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


# -- the run ---------------------------------------------------------------------------------------


def run(args: Any, workdir: FsPath) -> dict[str, Any]:
    started = time.monotonic()
    rng = random.Random(args.seed)
    groups = rollout_groups()
    plan_file = workdir / "rollout.json"
    write_json_atomically(
        plan_file, {"groups": [{"name": name, "tenant_ids": ids} for name, ids in groups.items()]}
    )
    plan = load_plan(plan_file)
    flag_file = workdir / "flags.json"
    store = FileVersionStore(flag_file, FLAG_KEY)
    fc = FlagChanges()
    change_flag(store, plan, rng, 0.0, fc)  # group 1 in force before the first replica starts
    token = secrets.token_urlsafe(24)
    state, output = workdir / "state", workdir / "output"
    with contextlib.ExitStack() as stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_")}
        if args.backend == "aws":
            env.update(stack.enter_context(aws_world(workdir, output, args)))
        if args.ledger == "dynamodb":
            if args.backend != "aws":
                env.update(stack.enter_context(dynamodb_table(workdir)))
            ledger_url = "dynamodb://cutover-chaos"
        else:
            ledger_url = f"sqlite:///{workdir / 'ledger.db'}"
        env.update(
            {
                "CUTOVER_LEDGER": ledger_url,
                "CUTOVER_FLAG_SOURCE": "file",
                "CUTOVER_FLAG_FILE": str(flag_file),
                "CUTOVER_FLAG_KEY": FLAG_KEY,
                "CUTOVER_ROLLOUT_FILE": str(plan_file),
                "CUTOVER_BACKEND": "local",
                "CUTOVER_LOCAL_STATE_DIR": str(state),
                "CUTOVER_OUTPUT_DIR": str(output),
                "CUTOVER_BUDGET": str(args.budget),
                "CUTOVER_CYCLE_SECONDS": str(args.cycle_seconds),
                "CUTOVER_INTENT_GRACE_SECONDS": "10",
                "CUTOVER_JOB_TIMEOUT": "300",
                "CUTOVER_API_TOKEN": token,
                "CUTOVER_LOG_LEVEL": "WARNING",
                "CUTOVER_METRICS": "off",
            }
        )
        if args.backend == "aws":
            env.update(aws_settings(args))
        ledger = open_ledger(ledger_url)
        stack.callback(ledger.close)
        aws_rate = args.aws_fault_rate if args.backend == "aws" else None
        replicas = [
            Replica(i, env, workdir, args.fault_rate, args.seed, aws_rate) for i in range(args.replicas)
        ]
        stack.callback(lambda: [r.stop() for r in replicas])
        for r in replicas:
            r.start()
        wait_ready(replicas, 120)
        load_started = time.monotonic()

        stop = threading.Event()
        load = Load()
        kills = unexpected_exits = 0
        errors: list[str] = []
        activity = tenant_activity()
        tenants = sorted(activity)
        generator = threading.Thread(
            target=generate,
            args=(
                replicas,
                token,
                tenants,
                [activity[t] for t in tenants],
                args,
                random.Random(args.seed + 1),
                stop,
                load,
            ),
            name="load",
            daemon=True,  # an interrupted run ends with the replicas stopped, not 120 s of retries
        )
        generator.start()
        chaos_rng = random.Random(args.seed + 2)
        flag_rng = random.Random(args.seed + 3)
        end = load_started + args.seconds
        next_kill = load_started + chaos_rng.uniform(0.5, 1.5) * args.kill_every
        next_flag = load_started + args.flag_every
        restart_at: dict[int, float] = {}
        held = HeldFlag()
        while time.monotonic() < end and not stop.is_set():
            now = time.monotonic()
            if now >= next_flag:
                try:
                    change_flag(store, plan, flag_rng, args.invalid_share, fc)
                except (CutoverError, OSError) as exc:
                    errors.append(f"flag change: {exc}")
                next_flag = now + args.flag_every
            if fc.broken and not fc.sampled and now - fc.broken_at > 2 * args.cycle_seconds + 0.5:
                check_held_flag(replicas, token, fc, held)
            if now >= next_kill:
                victim = chaos_rng.choice([r for r in replicas if r.index not in restart_at])
                victim.kill()
                kills += 1
                restart_at[victim.index] = now + chaos_rng.uniform(0.2, 2.0)
                next_kill = now + chaos_rng.uniform(0.5, 1.5) * args.kill_every
            for r in replicas:
                if r.index in restart_at:
                    if now >= restart_at[r.index]:
                        r.start()
                        del restart_at[r.index]
                elif not r.alive():
                    unexpected_exits += 1
                    r.start()
            time.sleep(0.05)
        load_seconds = time.monotonic() - load_started
        stop.set()
        generator.join()
        for index in list(restart_at):
            replicas[index].start()
        restore_flag(store, fc)

        ids = list(load.acknowledged)
        not_drained = drain(ledger, ids, args.drain_seconds)
        for r in replicas:
            unexpected_exits += 0 if r.alive() else 1
            r.stop()
        strays = stray_workers(state)
        found = outcome(ledger, output, ids)
    faults, aws_faults = 0, Counter[str]()
    with contextlib.suppress(FileNotFoundError):
        for line in (workdir / "faults.jsonl").read_text().splitlines():
            fault = json.loads(line)
            if "aws" in fault:
                aws_faults[fault["kind"]] += 1
            else:
                faults += 1
    ok = (
        found.duplicates == 0
        and found.lost == 0
        and found.wrong_path == 0
        and found.max_in_flight <= args.budget
        and load.repeats_accepted_again == 0
        and not not_drained
        and not load.refused
        and not held.problems
    )
    return {
        "benchmark": "chaos",
        "smoke": bool(args.smoke),
        "ok": ok,
        "conversions": found.conversions,
        "flag_versions": len(store.versions()),
        "rollbacks": fc.rollbacks,
        "kills": kills,
        "invalid_flags": fc.invalid,
        "faults_injected": faults,
        "aws_faults_injected": dict(sorted(aws_faults.items())),
        "duplicates": found.duplicates,
        "lost": found.lost,
        "max_in_flight": found.max_in_flight,
        "budget": args.budget,
        "seconds": round(time.monotonic() - started, 1),
        "succeeded": found.succeeded,
        "failed": found.failed,
        "wrong_path": found.wrong_path,
        "outputs": found.outputs,
        "conversions_per_s": round(found.conversions / load_seconds, 2) if load_seconds else 0.0,
        "load_seconds": round(load_seconds, 1),
        "drain_seconds": round(time.monotonic() - started - load_seconds, 1),
        "not_drained": len(not_drained),
        "flag_changes": {
            "advances": fc.advances,
            "rollbacks": fc.rollbacks,
            "invalid": fc.invalid,
            "restores": fc.restores,
            "refused": fc.refused,
            "invalid_kinds": fc.kinds,
            "status_samples_while_invalid": held.samples,
            "last_good_kept": held.kept,
            "not_yet_read": held.behind,
            "problems": held.problems[:5],
        },
        "intake": {
            "requests": load.requests,
            "retries": load.retries,
            "repeats_sent": load.repeats_sent,
            "repeats_folded": load.repeats_folded,
            "repeats_accepted_again": load.repeats_accepted_again,
            "refused": load.refused[:5],
        },
        "replica_starts": sum(r.starts for r in replicas),
        "unexpected_exits": unexpected_exits,
        "stray_workers": strays,
        "errors": errors[:5],
        "examples": {"duplicate_ids": list(found.duplicate_ids[:5]), "lost_ids": list(found.lost_ids[:5])},
        "inputs": {
            "seconds": args.seconds,
            "conversions": args.conversions,
            "replicas": args.replicas,
            "kill_every": args.kill_every,
            "flag_every": args.flag_every,
            "invalid_share": args.invalid_share,
            "fault_rate": args.fault_rate,
            "rate": args.rate,
            "work_seconds": args.work_seconds,
            "max_backlog": args.max_backlog,
            "cycle_seconds": args.cycle_seconds,
            "ledger": args.ledger,
            "backend": args.backend,
            "aws_fault_rate": args.aws_fault_rate if args.backend == "aws" else None,
            "seed": args.seed,
        },
        "goals": {"max_in_flight": goal(found.max_in_flight, args.budget, "<=")},
        "machine": machine(),
    }


def main() -> None:
    args = arguments(__doc__, _options)
    if args.smoke:
        args.seconds = min(args.seconds, 8.0)
        args.kill_every = min(args.kill_every, 3.0)
        args.flag_every = min(args.flag_every, 1.0)
        args.drain_seconds = min(args.drain_seconds, 90.0)
    if args.keep is not None:
        shutil.rmtree(args.keep, ignore_errors=True)
        args.keep.mkdir(parents=True)
        result = run(args, args.keep.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="cutover-chaos-") as tmp:
            result = run(args, FsPath(tmp))
    emit(result)
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
