"""Driving a whole controller with shadows to the end: every conversion terminal, every shadow
judged, for the tests that run real worker processes."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controller.core.domain import ConversionRequest
from controller.core.shadow import ShadowState
from controller.service import Service
from controller.settings import Settings

PLANTED_WORKER = Path(__file__).resolve().parent / "planted_worker.py"
GROUPS = {"g1": [1, 2], "g2": [3, 4]}


def worker(*, planted: int = 0, noise: bool = False, env: Mapping[str, str] | None = None) -> str:
    """The planted worker's command. A local job gets only the job contract's variables, so what
    it needs besides (its test settings, the credentials its role would give it) is in the command."""
    words = ["env", *(f"{k}={v}" for k, v in (env or {}).items())] if env else []
    words += [sys.executable, str(PLANTED_WORKER)]
    if planted:
        words += ["--planted-tenant", str(planted)]
    if noise:
        words.append("--noise")
    return shlex.join(words)


def settings(
    tmp_path: Path,
    *,
    planted: int = 0,
    noise: bool = False,
    worker_env: Mapping[str, str] | None = None,
    **extra: Any,
) -> Settings:
    plan = tmp_path / "rollout.json"
    plan.write_text(
        json.dumps(
            {
                "groups": [{"name": n, "tenant_ids": ids} for n, ids in GROUPS.items()],
                "shadow": {"groups": ["g1", "g2"], "rate": 1.0, "aa_rate": 1.0, "max_mismatch_rate": 0.5},
            }
        )
    )
    values: dict[str, Any] = {
        "flag_file": tmp_path / "flags.json",
        "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
        "backend": "local",
        "local_worker": worker(planted=planted, noise=noise, env=worker_env),
        "local_state_dir": tmp_path / "state",
        "output_dir": tmp_path / "output",
        "rollout_file": plan,
        "budget": 6,
        "cycle_seconds": 0.1,
        "job_timeout": 60.0,
        "shadow_retention_seconds": 0.0,
        "metrics": "off",
    }
    values.update(extra)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def run_to_the_end(service: Service, ids: list[str], timeout: float = 240.0) -> None:
    """Cycles and checks until every conversion is terminal and every shadow judged and cleaned."""
    assert service.shadows is not None
    deadline = time.monotonic() + timeout
    store = service.shadows.runner.store
    unsettled = [s for s in ShadowState if s not in (ShadowState.COMPARED, ShadowState.SKIPPED)]
    while True:
        service.controller.run_cycle()
        service.shadows.checks.tick(service.clock())
        records = [service.ledger.get(cid) for cid in ids]
        done = all(r is not None and r.state.terminal for r in records)
        if (
            done
            and not store.shadows(unsettled)
            and not store.shadows([ShadowState.COMPARED], compared_before=service.clock() + 1)
        ):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled: {service.ledger.counts()} {store.shadows(unsettled)[:3]}")
        time.sleep(0.1)


def accept(service: Service, n: int) -> list[str]:
    requests = [ConversionRequest(f"c{i}", 1 + i % 4, {"report": "monthly"}) for i in range(n)]
    return service.ledger.accept(requests, service.clock()).accepted
