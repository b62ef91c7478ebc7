"""The README's "Operating it" section, run as written: its rollout plan and flag documents parse,
and every shell block succeeds, in order, against a live ``cutover run``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flags.document import parse_flag
from flags.rollout import load_plan
from tests.api.support import TOKEN, run_controller

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def section(title: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def blocks(kind: str) -> list[str]:
    return [body for lang, body in FENCE.findall(section("Operating it")) if lang == kind]


def test_the_configuration_table_names_each_variable_once() -> None:
    rows = [line for line in section("Configuration").splitlines() if line.startswith("| `")]
    names = [name for row in rows for name in re.findall(r"`(CUTOVER_[A-Z_]+)`", row.split("|")[1])]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_the_documents_shown_are_accepted_as_written(tmp_path: Path) -> None:
    [plan] = blocks("yaml")
    (tmp_path / "rollout.yaml").write_text(plan)
    assert [g.name for g in load_plan(tmp_path / "rollout.yaml").groups] == ["wave-1", "wave-2"]
    documents = blocks("json")
    assert len(documents) == 2
    for doc in documents:
        snapshot = parse_flag(doc, flag_key="migrated_tenants", source="readme", fetched_at=0.0)
        assert snapshot.tenant_ids == {1001, 1002, 1003}


def wait_for_state(base: str, cid: str, state: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.get(f"{base}/conversions/{cid}", timeout=5)
        if answer.status_code == 200 and answer.json()["state"] == state:
            return
        time.sleep(0.2)
    raise AssertionError(f"{cid} never reached {state}")


@pytest.mark.slow
def test_every_shell_example_runs_against_a_live_service(tmp_path: Path) -> None:
    (tmp_path / "rollout.yaml").write_text(blocks("yaml")[0])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "cutover"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m controller.cli "$@"\n')
    launcher.chmod(0o755)
    files = {
        "CUTOVER_FLAG_FILE": str(tmp_path / "flags.json"),
        "CUTOVER_ROLLOUT_FILE": str(tmp_path / "rollout.yaml"),
        "CUTOVER_LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}",
    }
    with run_controller(tmp_path, {**files, "CUTOVER_API_TOKEN": TOKEN}) as ctl:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_")}
        env.update(
            files,
            PATH=f"{bin_dir}:{env['PATH']}",
            PYTHONPATH=str(REPO),
            CUTOVER_URL=ctl.base,
            CUTOVER_API_TOKEN=TOKEN,
        )
        shells = blocks("sh")
        assert len(shells) >= 5
        for block in shells:
            if "/requeue" in block:
                wait_for_state(ctl.base, "inv-2026-05-t1002", "failed")
            proc = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert proc.returncode == 0, (
                f"{block}\n--- stdout\n{proc.stdout[-2000:]}\n--- stderr\n{proc.stderr[-2000:]}"
            )
        # What the examples did, as the service saw it.
        requeued = httpx.get(f"{ctl.base}/conversions/inv-2026-05-t1002", timeout=5).json()
        assert requeued["attempts"] >= 1
        wait_for_state(ctl.base, "inv-2026-05-t1001", "succeeded")
        done = httpx.get(f"{ctl.base}/conversions/inv-2026-05-t1001", timeout=5).json()
        assert (done["path"], done["output"] is not None) == ("new", True)
        assert json.loads((tmp_path / "flags.json").read_text())["migrated_tenants"]["tenant_ids"] == [
            1001,
            1002,
            1003,
        ]
