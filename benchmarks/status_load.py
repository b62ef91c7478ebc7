"""Status under load: ``/status`` and ``/healthz`` latency of a ``cutover run`` before and while it
takes in and routes a burst of 100,000 conversions.

Inputs, built here in a temporary directory: a moto server in its own process on 127.0.0.1 with
the resources of a deployment (Batch on Fargate, a CodeBuild project, the manifest bucket), a
flag file migrating every tenant, and ``python -m controller.cli run`` in its own process on a
loopback port with ``CUTOVER_BACKEND=aws`` and a SQLite ledger, every other setting at its
default (cycle every 5 s, budget 20, up to 20,000 claims a cycle, a JSON log line per decision).
So each conversion of the burst is taken in over HTTP, routed, dispatched in a Batch array job
(moto's jobs end as they are submitted) and recorded as finished: the controller's whole path.

The run: a load generator asks for ``/status`` and ``/healthz`` for ``--seconds`` (20) on one
kept-alive connection each, a request as soon as the last answer came (``wrk -c1 --latency`` when
``wrk`` is installed, else one httpx client per endpoint in its own process). Then the burst
starts: another process POSTs the conversions to ``/conversions`` in batches of 1,000 as fast as
they are accepted, and the same load runs for ``--seconds`` again. The generator and the moto
server run on the same machine as the controller and take CPU from it: the CPU seconds of each
process in each window are printed with the figures.

Prints one JSON object: per window and endpoint p50 / p99 / max latency (ms), requests/s and
non-200 answers; the burst's progress; the goals (p99 of ``/status`` during the burst < 25 ms, of
``/healthz`` < 5 ms); and the controller's CPU split per window: CPU seconds of its main thread
(the event loop: HTTP, ``/healthz``, ``/status``) against its other threads (the cycle, the
intake's parsing and writes in worker threads), from ``/proc``; with ``--profile``, also the
share of the interpreter lock each kind of work held (py-spy ``--gil`` samples, by the code on
the stack).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path as FsPath
from typing import Any

import httpx
from harness import FLAG_KEY, REPO, arguments, emit, goal, machine

from flags.document import values_document
from flags.file_source import write_json_atomically
from tests.aws.moto_world import BUCKET, JOB_DEFINITION, PROJECT, QUEUE, MotoProcess, World

GOAL_STATUS_P99_MS = 25.0
GOAL_HEALTHZ_P99_MS = 5.0
ENDPOINTS = ("/status", "/healthz")
BATCH = 1000  # CUTOVER_MAX_REQUEST_ITEMS' default
TENANTS = 1000


def _options(parser: Any) -> None:
    parser.add_argument("--conversions", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measured window")
    parser.add_argument("--generator", choices=("auto", "wrk", "httpx"), default="auto")
    parser.add_argument(
        "--profile",
        type=FsPath,
        default=None,
        help="directory for py-spy profiles of the controller during each window (needs py-spy)",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what}: not ready after {timeout:.0f} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    fields = FsPath(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds so far of the process's main thread and of all its other threads together."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"main_thread": 0.0, "other_threads": 0.0}
    for task in FsPath(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        key = "main_thread" if task.name == str(pid) else "other_threads"
        out[key] += (int(fields[11]) + int(fields[12])) / tick
    return out


# What a py-spy sample was doing, by the first of these found on its stack (file paths as py-spy
# prints them, relative to the repository or site-packages).
_KINDS = (
    ("status_and_health", ("routes/status.py", "routes/health.py")),
    ("intake", ("routes/conversions.py", "intake/validation.py")),
    ("cycle", ("engine/cycle.py", "engine/loop.py", "engine/shadows.py")),
    ("read_model", ("api/readmodel.py",)),
    ("http_server", ("uvicorn/", "h11/", "httptools/", "starlette/", "fastapi/", "anyio/", "asyncio/")),
)


def gil_split(collapsed: FsPath) -> dict[str, Any]:
    """Shares of py-spy samples (``--format raw``: ``frames... count`` per line) by kind of work."""
    samples: dict[str, int] = {}
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        kind = next((k for k, marks in _KINDS if any(m in stack for m in marks)), "other")
        samples[kind] = samples.get(kind, 0) + int(count)
    total = sum(samples.values()) or 1
    return {
        "samples": total,
        "share": {k: round(n / total, 3) for k, n in sorted(samples.items(), key=lambda kv: -kv[1])},
    }


# -- the load generator ----------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _wrk_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> dict[str, Any]:
    """p50, p99 and max latency, requests/s and non-2xx answers from ``wrk --latency`` output."""
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.M))
    latency_max = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", output, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    total = re.search(r"^\s+(\d+) requests in", output, re.M)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if not (percentiles.keys() >= {"50", "99"} and latency_max and rate and total):
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    return {
        "p50_ms": round(_wrk_ms(percentiles["50"]), 3),
        "p99_ms": round(_wrk_ms(percentiles["99"]), 3),
        "max_ms": round(_wrk_ms(latency_max.group(1)), 3),
        "requests": int(total.group(1)),
        "requests_per_s": round(float(rate.group(1)), 1),
        "not_ok": (int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0),
    }


def wrk_load(base: str, seconds: float) -> tuple[dict[str, Any], float]:
    """One ``wrk -t1 -c1`` per endpoint, side by side; their figures and CPU seconds."""
    before = os.times()
    procs = {
        url: subprocess.Popen(
            [
                "wrk",
                "-t1",
                "-c1",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "60s",
                "--latency",
                base + url,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for url in ENDPOINTS
    }
    out = {url: parse_wrk(p.communicate()[0]) for url, p in procs.items()}
    after = os.times()
    return out, round(
        after.children_user + after.children_system - before.children_user - before.children_system, 2
    )


def _httpx_worker(base: str, url: str, seconds: float, results: Any) -> None:
    latencies: list[float] = []
    bad = 0
    with httpx.Client(base_url=base, timeout=60) as client:
        end = time.perf_counter() + seconds
        while (t0 := time.perf_counter()) < end:
            answer = client.get(url)
            latencies.append(time.perf_counter() - t0)
            bad += answer.status_code != 200
    results.put((url, latencies, bad, time.process_time()))


def summary(latencies: list[float], bad: int, seconds: float) -> dict[str, Any]:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 3)

    return {
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(ordered[-1] * 1000, 3),
        "requests": len(ordered),
        "requests_per_s": round(len(ordered) / seconds, 1),
        "not_ok": bad,
    }


def httpx_load(base: str, seconds: float) -> tuple[dict[str, Any], float]:
    """One httpx client per endpoint, each in its own process (so neither waits for the other's
    GIL); their figures and CPU seconds."""
    results: Any = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_httpx_worker, args=(base, url, seconds, results)) for url in ENDPOINTS
    ]
    for w in workers:
        w.start()
    got = [results.get(timeout=seconds + 120) for _ in workers]
    for w in workers:
        w.join()
    out = {url: summary(lat, bad, seconds) for url, lat, bad, _ in got}
    return {url: out[url] for url in ENDPOINTS}, round(sum(cpu for *_, cpu in got), 2)


# -- the burst -------------------------------------------------------------------------------------


def _post_burst(base: str, n: int, done: Any) -> None:
    accepted, t0, problem = 0, time.perf_counter(), ""
    try:
        with httpx.Client(timeout=120) as client:
            for start in range(0, n, BATCH):
                body = [
                    {
                        "conversion_id": f"burst-{i:06d}",
                        "tenant_id": 1 + i % TENANTS,
                        "params": {"report": "monthly"},
                    }
                    for i in range(start, min(n, start + BATCH))
                ]
                answer = client.post(base + "/conversions", json={"conversions": body})
                answer.raise_for_status()
                accepted += len(answer.json()["accepted"])
    except httpx.HTTPError as exc:
        problem = str(exc)
    done.put((accepted, time.perf_counter() - t0, problem))


def profilers(pid: int, seconds: float, out: FsPath) -> list[subprocess.Popen[bytes]]:
    """py-spy on the controller for ``seconds``: every thread's stacks, and the GIL holder's alone
    (``--gil``), as collapsed stacks ``<out>.txt`` and ``<out>.gil.txt``."""
    spy = shutil.which("py-spy") or str(FsPath(sys.executable).with_name("py-spy"))
    common = ["record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "250"]
    common += ["--threads", "--format", "raw", "--nonblocking"]
    return [
        subprocess.Popen([spy, *common, *extra, "-o", str(out) + suffix], stdout=subprocess.DEVNULL)
        for extra, suffix in (([], ".txt"), (["--gil"], ".gil.txt"))
    ]


def window(
    base: str, seconds: float, generator: str, pids: dict[str, int], profile: FsPath | None
) -> dict[str, Any]:
    spies = profilers(pids["controller"], seconds, profile) if profile is not None else []
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    threads0 = thread_cpu_seconds(pids["controller"])
    figures, client_cpu = (wrk_load if generator == "wrk" else httpx_load)(base, seconds)
    cpu = {name: round(cpu_seconds(pid) - cpu0[name], 2) for name, pid in pids.items()}
    threads = {k: round(v - threads0[k], 2) for k, v in thread_cpu_seconds(pids["controller"]).items()}
    for spy in spies:
        spy.wait(timeout=seconds + 60)
    split: dict[str, Any] = {"cpu_seconds": threads}
    if profile is not None:
        gil = FsPath(str(profile) + ".gil.txt")
        if gil.exists():
            split["gil_holder"] = gil_split(gil)
    return {
        "endpoints": figures,
        "cpu_seconds": {**cpu, "load_generator": client_cpu},
        "controller_cpu_split": split,
    }


def status(base: str) -> dict[str, Any]:
    return dict(httpx.get(base + "/status", timeout=30).json())


def main() -> None:
    args = arguments(__doc__, _options)
    if args.smoke:
        args.conversions, args.seconds = 2_000, 3.0
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "httpx"
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        work = FsPath(tmp)
        moto = MotoProcess(work / "moto.log")
        server: subprocess.Popen[bytes] | None = None
        try:
            world = World(moto)
            world.bucket()
            world.batch()
            world.codebuild()
            flag_file = work / "flags.json"
            write_json_atomically(flag_file, values_document(FLAG_KEY, True, range(1, TENANTS + 1)))
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("CUTOVER_", "AWS_"))},
                **world.env(),
                "PYTHONPATH": str(REPO),
                "CUTOVER_BACKEND": "aws",
                "CUTOVER_LEDGER": f"sqlite:///{work / 'ledger.db'}",
                "CUTOVER_FLAG_SOURCE": "file",
                "CUTOVER_FLAG_FILE": str(flag_file),
                "CUTOVER_LEGACY_PROJECT": PROJECT,
                "CUTOVER_BATCH_JOB_QUEUE": QUEUE,
                "CUTOVER_BATCH_JOB_DEFINITION": JOB_DEFINITION,
                "CUTOVER_MANIFEST_BUCKET": BUCKET,
            }
            server = subprocess.Popen(
                [sys.executable, "-m", "controller.cli", "run", "--port", str(port)],
                cwd=work,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=(work / "cutover.log").open("w"),
            )
            wait_until(lambda: status(base)["cycle"]["count"] >= 1, 60, "cutover run")
            pids = {"controller": server.pid, "moto_server": moto.proc.pid}

            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
            profile = {
                name: args.profile / name if args.profile is not None else None
                for name in ("before", "during")
            }
            before = window(base, args.seconds, generator, pids, profile["before"])

            done: Any = multiprocessing.Queue()
            poster = multiprocessing.Process(target=_post_burst, args=(base, args.conversions, done))
            t0 = time.perf_counter()
            poster.start()
            during = window(base, args.seconds, generator, pids, profile["during"])
            in_window = status(base)
            accepted, post_seconds, problem = done.get(timeout=600)
            poster.join()
            if problem:
                raise SystemExit(f"the burst: {problem}")
            wait_until(
                lambda: status(base)["conversions"]["succeeded"] >= args.conversions,
                600,
                "the burst's conversions",
            )
            drained = time.perf_counter() - t0
            final = status(base)
        finally:
            if server is not None:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=60)
            moto.stop()
        log_lines = sum(1 for _ in (work / "cutover.log").open())
    p99 = during["endpoints"]["/status"]["p99_ms"]
    healthz_p99 = during["endpoints"]["/healthz"]["p99_ms"]
    emit(
        {
            "benchmark": "status_load",
            "smoke": args.smoke,
            "machine": machine(),
            "inputs": {
                "conversions": args.conversions,
                "batch": BATCH,
                "tenants": TENANTS,
                "seconds": args.seconds,
                "generator": generator,
                "connections_per_endpoint": 1,
                "backend": "aws (moto_server on loopback, its own process)",
            },
            "before": before,
            "during": {
                **during,
                "burst": {
                    "accepted": accepted,
                    "post_seconds": round(post_seconds, 2),
                    "routed_by_window_end": sum(in_window["conversions"].values())
                    - in_window["conversions"]["received"],
                    "succeeded_by_window_end": in_window["conversions"]["succeeded"],
                    "seconds_to_all_succeeded": round(drained, 1),
                },
            },
            "goals": {
                "status_p99_ms_during_burst": goal(p99, GOAL_STATUS_P99_MS, "<"),
                "healthz_p99_ms_during_burst": goal(healthz_p99, GOAL_HEALTHZ_P99_MS, "<"),
            },
            "checks": {
                "all_accepted": accepted == args.conversions,
                "all_succeeded": final["conversions"]["succeeded"] == args.conversions,
                "only_ok_answers": all(
                    f["not_ok"] == 0 for w in (before, during) for f in w["endpoints"].values()
                ),
                "log_lines": log_lines,
            },
        }
    )


if __name__ == "__main__":
    main()
