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


@pytest.mark.slow
def test_one_minute_of_chaos_loses_and_duplicates_nothing_within_the_budget(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "chaos.py"),
            "--seconds",
            "60",
            "--kill-every",
            "10",
            "--flag-every",
            "3",
            "--fault-rate",
            "0.1",
            "--keep",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    doc = json.loads(lines[0])
    assert set(doc) >= FIELDS
    assert proc.returncode == 0, doc
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
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "chaos.py"),
            "--backend",
            "aws",
            "--aws-fault-rate",
            "2",
            "--seconds",
            "30",
            "--kill-every",
            "8",
            "--flag-every",
            "3",
            "--fault-rate",
            "0.05",
            "--keep",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    doc = json.loads(lines[0])
    assert proc.returncode == 0, doc
    assert doc["ok"] is True
    assert (doc["duplicates"], doc["lost"], doc["wrong_path"]) == (0, 0, 0)
    assert 0 < doc["max_in_flight"] <= doc["budget"]
    assert doc["kills"] >= 2
    assert doc["flag_versions"] >= 3
    assert sum(doc["aws_faults_injected"].values()) >= 5
    assert doc["conversions"] == doc["succeeded"] + doc["failed"]
    assert doc["outputs"] == doc["succeeded"]
    assert doc["conversions"] > 50
