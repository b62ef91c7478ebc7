"""checkov scans terraform/ offline and finds nothing; every skip is written in the resource.

checkov runs from its own virtual environment (.venv-checkov/, created on first use by
scripts/checkov.sh), because it pins an older boto3 than the project's tests need.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import terraform_hcl as tf

SCRIPT = tf.REPO / "scripts" / "checkov.sh"
INSTALL_FAILED = 75


@pytest.mark.slow
def test_checkov_finds_no_failed_check():
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env,
        cwd=tf.REPO,
    )
    if result.returncode == INSTALL_FAILED:
        pytest.skip(f"checkov could not be installed from the package index: {result.stderr[-300:]}")
    summary = re.search(r"Passed checks: (\d+), Failed checks: (\d+), Skipped checks: (\d+)", result.stdout)
    assert summary, result.stdout[-3000:] + result.stderr[-3000:]
    passed, failed, skipped = map(int, summary.groups())
    assert (failed, result.returncode) == (0, 0), result.stdout[-6000:]
    assert passed > 100
    inline = sum(
        line.strip().startswith("#checkov:skip=")
        for path in tf.tf_files()
        for line in path.read_text(encoding="utf-8").splitlines()
    )
    # Every skip checkov applied is one written, with its reason, in a resource.
    assert skipped == inline


def test_checkov_script_tells_an_install_failure_apart(tmp_path):
    # No package index and nothing to find: the install must fail, and say so with its own status.
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        CHECKOV_VENV=str(tmp_path / "venv"),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(tmp_path),
    )
    result = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=300, check=False, env=env
    )
    assert result.returncode == INSTALL_FAILED, result.stderr[-2000:]
    assert "could not install" in result.stderr
