"""The process-level chaos run, one minute of it: replicas of ``cutover run`` killed with SIGKILL,
the flag advanced, rolled back and broken, submits failing; judged from the worker outputs and
the ledger. What is asserted is the verdict (nothing ran twice, nothing was lost, the budget
held) and that the chaos really happened; no timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FIELDS = {
    "conversions",
    "flag_versions",
    "rollbacks",
    "kills",
    "invalid_flags",
    "faults_injected",
    "duplicates",
    "lost",
    "max_in_flight",
    "budget",
    "seconds",
}


def verdict(doc: dict) -> str:
    """What decided a chaos run's verdict, in full (pytest would cut the whole document short)."""
    keys = ("ok", "conversions", "duplicates", "lost", "wrong_path", "max_in_flight", "budget", "not_drained")
    figures = {k: doc.get(k) for k in keys}
    return json.dumps(
        {
            **figures,
            "seconds": doc.get("seconds"),
            "drain_seconds": doc.get("drain_seconds"),
            "refused": doc.get("intake", {}).get("refused"),
            "repeats_accepted_again": doc.get("intake", {}).get("repeats_accepted_again"),
            "flag_problems": doc.get("flag_changes", {}).get("problems"),
            "errors": doc.get("errors"),
            "examples": doc.get("examples"),
        }
    )


def run_chaos(
    keep: Path,
    *,
    seconds: int,
    kill_every: int,
    flag_every: int,
    fault_rate: float,
    timeout: int,
    extra: tuple[str, ...] = (),
) -> tuple[int, dict]:
    """One run of ``benchmarks/chaos.py`` with these settings (``extra``: the run's own options),
    its files kept in ``keep``: its exit status and the one JSON document it printed."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "chaos.py"),
            *extra,
            "--seconds",
            str(seconds),
            "--kill-every",
            str(kill_every),
            "--flag-every",
            str(flag_every),
            "--fault-rate",
            str(fault_rate),
            "--keep",
            str(keep),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    return proc.returncode, json.loads(lines[0])


@pytest.mark.slow
def test_one_minute_of_chaos_loses_and_duplicates_nothing_within_the_budget(tmp_path):
    returncode, doc = run_chaos(
        tmp_path / "run", seconds=60, kill_every=10, flag_every=3, fault_rate=0.1, timeout=600
    )
    assert set(doc) >= FIELDS
    assert returncode == 0, verdict(doc)
    assert doc["ok"] is True
    assert doc["duplicates"] == 0
    assert doc["lost"] == 0
    assert doc["wrong_path"] == 0
    assert 0 < doc["max_in_flight"] <= doc["budget"]
    # the chaos happened: replicas killed, flags changed and broken, submits failed, ids repeated
    assert doc["kills"] >= 3
    assert doc["rollbacks"] >= 1
    assert doc["flag_versions"] >= 3
    assert doc["invalid_flags"] >= 1
    assert doc["faults_injected"] >= 1
    assert doc["intake"]["repeats_sent"] > 0
    assert doc["intake"]["repeats_folded"] == doc["intake"]["repeats_sent"]
    # every accepted conversion ended, and every success left a real output
    assert doc["conversions"] == doc["succeeded"] + doc["failed"]
    assert doc["outputs"] == doc["succeeded"]
    assert doc["conversions"] > 100


@pytest.mark.slow
def test_chaos_on_the_aws_paths_with_aws_faults_loses_and_duplicates_nothing_within_the_budget(tmp_path):
    """The same chaos on CodeBuild and Batch over a moto server, every AWS call of the replicas
    through the fault layer (throttling, 5xx, slow and lost answers, lagging listings), a player
    doing the jobs' work: judged from the player's record of what was really worked."""
    returncode, doc = run_chaos(
        tmp_path / "run",
        seconds=30,
        kill_every=8,
        flag_every=3,
        fault_rate=0.05,
        timeout=900,
        # Every call crosses one moto server: on a busy machine the drain alone took 169 s of
        # a longer run, so the drain may take longer than the default 180 s before it counts
        # as lost work.
        extra=("--backend", "aws", "--aws-fault-rate", "2", "--drain-seconds", "480"),
    )
    assert returncode == 0, verdict(doc)
    assert doc["ok"] is True
    assert (doc["duplicates"], doc["lost"], doc["wrong_path"]) == (0, 0, 0)
    assert 0 < doc["max_in_flight"] <= doc["budget"]
    assert doc["kills"] >= 2
    assert doc["flag_versions"] >= 3
    assert sum(doc["aws_faults_injected"].values()) >= 5
    assert doc["conversions"] == doc["succeeded"] + doc["failed"]
    assert doc["outputs"] == doc["succeeded"]
    assert doc["conversions"] > 50
