"""``cutover demo``: a whole month of cutover on one machine, in about two minutes.

~200 tenants in five rollout groups (least active first). The run starts with no flag (all on
the old path) and advances group by group with the operation behind ``cutover flag advance``,
which consults the rollout gate before each move. With group-3's move, half of its tenants start
failing on the new path (the sample worker's ``simulate=fail_on_new``); the gate says
``fail`` with its reasons and the demo rolls back with the operation behind ``cutover flag
rollback``, removes the cause, and advances again. Flag versions are numbered files beside the
flag file, as AppConfig numbers its versions. Each stage submits a wave of conversions through
the intake (one per tenant, each waiting its tenant's time for its records, four flaky tenants'
failing their first attempt) and runs cycles until they are drained, then judges the gate. Each wave also runs
shadows of the tenants the next advance will move (the plan's ``shadow:`` section names their
groups), on budget real work leaves free, and the advance's row shows their parity. Before each
stage after the first, the stage is forecast from the ledger's history so far (the simulator
running the project's own cycle), and recorded beside what it measured. The verdict comes from the
worker outputs and the ledger, not from the controller's own counters.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path as FsPath
from typing import Any, Literal

from controller.core.domain import ConversionRequest, ConversionState, Path
from controller.core.errors import ConflictError, GateRefusedError
from controller.core.gates import GateReport, GateVerdict, refusal
from controller.core.ports import Ledger
from controller.core.shadow import ShadowState
from controller.engine.forecast import sim_config, stage_forecast
from controller.engine.gates import evaluate
from controller.engine.shadows import gate_parity
from controller.ledger.memory import MemoryLedger
from controller.service import Service
from controller.settings import Settings
from flags import ops
from flags.atomic import write_json_atomically
from flags.file_store import FileVersionStore, history_dir
from flags.rollout import RolloutPlan, load_plan
from flags.versions import InForce

TENANTS = 200
GROUP_SIZES = (20, 30, 40, 50, 60)
FIRST_TENANT = 1001


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of the rollout: advance through a group, roll back one version, or publish nothing."""

    name: str
    action: Literal["none", "advance", "rollback"]
    group: str | None = None
    why: str = ""


ADVANCES = ("group-1", "group-2", "group-3", "group-4", "group-5")
FAILING_GROUP = "group-3"  # half of its tenants fail on the new path until the gate rolls it back
WAVES = 7  # no flag, five advances, and the rollback the gate calls for
# Thresholds a clean group of this demo meets with its one wave per stage (20 to 60 conversions):
# the plan's defaults ask for 100 conversions, more than a small group brings in one stage.
DEMO_GATES = {"min_conversions": 20, "success_floor": 0.8, "max_slowdown": 2, "max_resubmit_rate": 0.1}


@dataclass
class StageResult:
    name: str
    flag_version: str | None
    migrated_tenants: int
    legacy: int
    new: int
    failed: int
    removed_tenants: int = 0
    removed_on_legacy: int = 0
    removed_on_new: int = 0
    seconds: float = 0.0
    action: str = "none"
    why: str = ""
    gates: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None  # the shadows run before this advance, and their verdict
    forecast: dict[str, Any] | None = None  # made just before the stage, from the history so far
    measured: dict[str, Any] = field(default_factory=dict)

    def error(self) -> dict[str, Any] | None:
        """How far the forecast was from what the stage measured."""
        if self.forecast is None or not self.measured:
            return None
        f, m = self.forecast, self.measured
        return {
            "makespan_percent": round(
                100.0 * (f["makespan_seconds"] - m["makespan_seconds"]) / m["makespan_seconds"], 1
            ),
            "peak_in_flight": f["peak_in_flight"] - m["peak_in_flight"],
            "peak_slots": f["peak_slots"] - m["peak_slots"],
        }


@dataclass
class DemoResult:
    stages: list[StageResult] = field(default_factory=list)
    conversions: int = 0
    succeeded: int = 0
    failed: int = 0
    duplicates: int = 0
    lost: int = 0
    wrong_path: int = 0
    resubmitted_ids_folded: int = 0
    max_in_flight: int = 0
    budget: int = 0
    outputs: int = 0
    seconds: float = 0.0
    failed_on_purpose: int = 0  # asked to fail (simulate=fail, fail_on_new on the new path)

    @property
    def unexpected_failures(self) -> int:
        return self.failed - self.failed_on_purpose

    shadow_runs: int = 0

    @property
    def ok(self) -> bool:
        return self.duplicates == self.lost == self.wrong_path == self.unexpected_failures == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "stages": [
                {
                    "name": s.name,
                    "flag_version": s.flag_version,
                    "migrated_tenants": s.migrated_tenants,
                    "legacy": s.legacy,
                    "new": s.new,
                    "failed": s.failed,
                    "removed_tenants": s.removed_tenants,
                    "removed_tenants_on_legacy": s.removed_on_legacy,
                    "removed_tenants_on_new": s.removed_on_new,
                    "seconds": round(s.seconds, 2),
                    "action": s.action,
                    "why": s.why,
                    "gates": s.gates,
                    "parity": s.parity,
                    "forecast": s.forecast,
                    "measured": s.measured,
                    "error": s.error(),
                }
                for s in self.stages
            ],
            "conversions": self.conversions,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "failed_on_purpose": self.failed_on_purpose,
            "unexpected_failures": self.unexpected_failures,
            "duplicates": self.duplicates,
            "lost": self.lost,
            "wrong_path": self.wrong_path,
            "resubmitted_ids_folded": self.resubmitted_ids_folded,
            "max_in_flight": self.max_in_flight,
            "shadow_runs": self.shadow_runs,
            "budget": self.budget,
            "outputs": self.outputs,
            "seconds": round(self.seconds, 2),
            "ok": self.ok,
        }


def tenant_activity(seed: int = 7) -> dict[int, float]:
    """Each demo tenant's conversions per day: a few busy tenants, many quiet ones."""
    rng = random.Random(seed)  # noqa: S311 - demo data, not secrets
    return {FIRST_TENANT + i: rng.lognormvariate(3, 1) for i in range(TENANTS)}


def rollout_groups(seed: int = 7) -> dict[str, list[int]]:
    """Tenants ordered by activity, least active first, cut into the five rollout groups."""
    activity = tenant_activity(seed)
    ordered = sorted(activity, key=lambda t: activity[t])
    groups: dict[str, list[int]] = {}
    start = 0
    for n, size in enumerate(GROUP_SIZES, 1):
        groups[f"group-{n}"] = sorted(ordered[start : start + size])
        start += size
    return groups


def demo_settings(base: Settings, workdir: FsPath) -> Settings:
    """The embedded default, everything under ``workdir``."""
    return base.model_copy(
        update={
            "flag_source": "file",
            "flag_file": workdir / "flags.json",
            "ledger": f"sqlite:///{workdir / 'ledger.db'}",
            "backend": "local",
            "local_state_dir": workdir / "state",
            "output_dir": workdir / "output",
            "rollout_file": workdir / "rollout.json",
            "cycle_seconds": 0.1,
            "intent_grace_seconds": 10.0,
            "shadow_retention_seconds": 0.0,
        }
    )


def prepare(workdir: FsPath) -> None:
    """Start from a clean slate: remove what an earlier demo left in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("state", "output"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm", "flags.json", "rollout.json"):
        (workdir / name).unlink(missing_ok=True)
    shutil.rmtree(history_dir(workdir / "flags.json"), ignore_errors=True)


def work_seconds(seed: int = 7) -> dict[int, float]:
    """How long each demo tenant's conversion waits for its records (as a real one waits on the
    database): log-normal per tenant around a quarter of a second, the same in every stage."""
    rng = random.Random(seed * 31)  # noqa: S311 - demo data, not secrets
    return {FIRST_TENANT + i: round(min(1.5, rng.lognormvariate(-1.4, 0.5)), 3) for i in range(TENANTS)}


def wave(
    stage_index: int,
    tenants: list[int],
    previous: list[ConversionRequest],
    failing: frozenset[int] = frozenset(),
) -> list[ConversionRequest]:
    """One conversion per tenant (each waiting its tenant's time for its records), a few flaky
    tenants' failing their first attempt (in every stage, as a customer whose records time out
    once would), ``failing`` tenants' made to fail on the new path, and some ids submitted again
    (to be folded)."""
    out = []
    waits = work_seconds()
    for t in tenants:
        params = {"report": "monthly", "stage": str(stage_index), "work_seconds": str(waits.get(t, 0.0))}
        if t in failing:
            params["simulate"] = "fail_on_new"
        if t % 50 == 3:
            params["simulate"] = "fail_first"
        out.append(ConversionRequest(f"s{stage_index}-t{t}", t, params))
    out.extend(previous[:5])  # sent again as they were: duplicates (other content would be refused)
    return out


def drain(service: Service, ids: list[str], tick: Callable[[int], None], timeout: float) -> tuple[float, int]:
    """Run cycles until every conversion in ``ids`` is terminal and every shadow is judged. Returns
    the mean seconds from one cycle's start to the next while conversions were pending (the pause
    between them plus the cycle itself), and the most budget the paths said they held after a cycle
    (build threads, new-path jobs in a slot)."""
    started = time.monotonic()
    deadline = started + timeout
    pending = set(ids)
    cycles = held = 0
    busy = 0.0
    while pending or _shadows_unsettled(service):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} conversions did not finish within {timeout:.0f}s")
        service.controller.run_cycle()
        if pending:
            cycles += 1
            held = max(held, sum(backend.in_use() for backend in service.backends.values()))
        elif service.shadows is not None:
            # Real work drained: judge what is left now rather than at the housekeeping's pace.
            service.shadows.checks.tick(service.clock())
        done = {cid for cid in pending if _terminal(service, cid)}
        if done and done == pending:
            busy = time.monotonic() - started
        pending -= done
        tick(len(done))
        time.sleep(service.settings.cycle_seconds)
    return busy / max(1, cycles), held


def _terminal(service: Service, conversion_id: str) -> bool:
    record = service.ledger.get(conversion_id)
    return record is not None and record.state.terminal


def _shadows_unsettled(service: Service) -> bool:
    """Shadows still to run, to be judged or to be cleaned up."""
    if service.shadows is None:
        return False
    store = service.shadows.runner.store
    judged = (ShadowState.COMPARED, ShadowState.SKIPPED)
    waiting = store.shadows([s for s in ShadowState if s not in judged], limit=1)
    uncleaned = store.shadows([ShadowState.COMPARED], compared_before=service.clock() + 1, limit=1)
    return bool(waiting or uncleaned)


SHADOW_SAMPLES = 22  # shadows per group: 14 bound its mismatch rate under 20% when none differs


def write_plan(path: FsPath, groups: dict[str, list[int]], shadow_groups: list[str]) -> None:
    """The demo's rollout plan; its ``shadow:`` section names the groups the next advance moves."""
    doc: dict[str, Any] = {
        "gates": DEMO_GATES,
        "groups": [{"name": name, "tenant_ids": ids} for name, ids in groups.items()],
    }
    # About SHADOW_SAMPLES conversions of each group get a shadow (a new-path run is a process of
    # its own: the demo's machine pays for every one), one in ten an A/A run as well. They start
    # once the stage's real work is done: on one machine a shadow's start takes the cores real work
    # needs, and each stage measures what real work does.
    smallest = min((len(groups[g]) for g in shadow_groups), default=0)
    doc["shadow"] = {
        "groups": shadow_groups,
        "rate": min(1.0, SHADOW_SAMPLES / smallest) if smallest else 0.0,
        "aa_rate": 0.1,
        "max_mismatch_rate": 0.2,
        "when": "idle",
    }
    write_json_atomically(path, doc)


def moving(groups: dict[str, list[int]], migrated: set[int], target: str | None) -> list[str]:
    """The groups with tenants the advance to ``target`` would move (none without a target)."""
    out: list[str] = []
    if target is None:
        return out
    for name, ids in groups.items():
        if not set(ids) <= migrated:
            out.append(name)
        if name == target:
            break
    return out


def parity_of(service: Service, names: list[str]) -> dict[str, Any] | None:
    """The shadows' verdict on the groups an advance is about to move."""
    if service.shadows is None or not names:
        return None
    report = service.shadows.report()
    chosen = [g for g in report["groups"] if g["name"] in names]
    verdicts = [g["parity"] for g in chosen]
    verdict = "fail" if "fail" in verdicts else "inconclusive" if "inconclusive" in verdicts else "pass"
    return {
        "groups": names,
        "samples": sum(g["samples"] for g in chosen),
        "mismatches": sum(g["mismatches"] for g in chosen),
        "verdict": verdict if chosen else "inconclusive",
    }


def next_stage(index: int, gate: GateReport | None, pending: list[str]) -> Stage:
    """What the rollout does next: nothing at first, a rollback when the gate says a group fails,
    otherwise the next group (the advance itself consults the gate too)."""
    if index == 0:
        return Stage("no flag", "none")
    if gate is not None and gate.verdict is GateVerdict.FAIL:
        failing = [g.name for g in gate.groups if g.verdict is GateVerdict.FAIL]
        return Stage("rollback", "rollback", failing[0], f"the gate says: {refusal(gate)}")
    if pending:
        return Stage(pending[0], "advance", pending[0], "the groups already moved pass their gate")
    return Stage("steady", "none")


def run_stages(
    service: Service,
    workdir: FsPath,
    *,
    on_stage: Callable[[StageResult], None],
    tick: Callable[[int], None],
    stage_timeout: float = 120.0,
) -> DemoResult:
    """Play the rollout, moving on as the gate says, and judge it from the outputs."""
    started = time.monotonic()
    groups = rollout_groups()
    plan_file = service.settings.rollout_file or workdir / "rollout.json"
    write_plan(plan_file, groups, [])
    plan = load_plan(plan_file)
    store = FileVersionStore(service.settings.flag_file, service.settings.flag_key)
    operator = ops.Operator(by="cutover demo", clock=service.clock)
    tenants = sorted(t for ids in groups.values() for t in ids)
    result = DemoResult(budget=service.settings.budget)
    accepted: list[str] = []
    previous: list[ConversionRequest] = []
    migrated_before: set[int] = set()
    period = service.settings.cycle_seconds
    pending = list(ADVANCES)
    # The fault comes with group-3's move (as a change shipped beside it would), so the shadows run
    # before the move match; the gate finds it in the finished conversions afterwards.
    broken = frozenset(t for t in groups[FAILING_GROUP] if t % 2 == 0)
    cause: frozenset[int] = frozenset()
    fixed = False
    gate: GateReport | None = None
    parity: dict[str, Any] | None = None
    sampled: set[str] = set()
    for index in range(WAVES):
        stage_started = time.monotonic()
        stage = next_stage(index, gate, pending)
        why = stage.why
        if stage.action == "advance":
            try:
                ops.advance(
                    store,
                    plan,
                    to_group=stage.group,
                    max_add=service.settings.max_add,
                    op=operator,
                    gate=gate,
                )
                pending.pop(0)
                if stage.group == FAILING_GROUP and not fixed:
                    cause = broken
            except GateRefusedError as exc:
                why = f"held: {exc}"
        elif stage.action == "rollback":
            roll_back(store, plan, stage.group, operator)
            cause, fixed = frozenset(), True  # the fault is fixed before the group moves again
        current = store.in_force()
        migrated = set(current.content.migrated) if current else set()
        shadowed = moving(groups, migrated, pending[0] if pending else None)
        # A group shadowed before an earlier advance (then rolled back) has its samples already.
        write_plan(plan_file, groups, [g for g in shadowed if g not in sampled])
        sampled.update(shadowed)
        requests = wave(index, tenants, previous, cause)
        flag = frozenset(migrated) if current else None
        forecast = forecast_stage(service, tenants, flag, period) if index else None
        answer = service.ledger.accept(requests, service.clock())
        result.resubmitted_ids_folded += len(answer.duplicates)
        accepted.extend(answer.accepted)
        period, held = drain(service, answer.accepted, tick, stage_timeout)
        gate = judge_gate(service, plan_file, current)
        stage_result = tally(service, stage, answer.accepted, migrated, migrated_before)
        stage_result.seconds = time.monotonic() - stage_started
        stage_result.why = why
        stage_result.gates = ops.gate_summary(gate)
        stage_result.parity = parity if stage.action == "advance" else None
        stage_result.forecast = forecast
        stage_result.measured = measure(service, answer.accepted) | {"peak_slots": held}
        result.stages.append(stage_result)
        on_stage(stage_result)
        fresh = set(answer.accepted)
        previous = [r for r in requests if r.conversion_id in fresh]
        migrated_before = migrated
        parity = parity_of(service, shadowed)
    judge(service, workdir, accepted, result)
    result.seconds = time.monotonic() - started
    return result


def forecast_stage(
    service: Service, tenants: list[int], migrated: frozenset[int] | None, period: float
) -> dict[str, Any]:
    """What the next wave (one conversion per tenant, at once) will do under ``migrated``, from the
    ledger's history so far: the simulator running the project's own cycle, every ``period``
    seconds as the last stage's cycles came (the demo's pause between cycles is so short that the
    cycle's own time counts)."""
    config = replace(sim_config(service.settings), cycle_seconds=period)
    run = stage_forecast(service.ledger, tenants, migrated, config, MemoryLedger, same_machine=True)
    return {
        "makespan_seconds": round(run.makespan, 2),
        "peak_in_flight": run.peak(),
        "peak_slots": run.peak_slots,
    }


def measure(service: Service, ids: list[str]) -> dict[str, Any]:
    """What a stage did, as the ledger recorded it (makespan: first received to last finished) and
    as the workers wrote it (the most conversions at work at one instant)."""
    records = [r for r in (service.ledger.get(cid) for cid in ids) if r is not None]
    if not records:
        return {}
    finished = [r.finished_at for r in records if r.finished_at is not None]
    received = [r.received_at for r in records if r.received_at is not None]
    wanted = set(ids)
    lines = [o for cid, v in produced_lines(service.settings.output_dir).items() if cid in wanted for o in v]
    return {
        "makespan_seconds": round(max(finished) - min(received), 2),
        "peak_in_flight": max_overlap([(o["started_at"], o["finished_at"]) for o in lines]),
    }


def roll_back(store: FileVersionStore, plan: RolloutPlan, group: str | None, operator: ops.Operator) -> None:
    """Back to the version before, as ``cutover flag rollback`` does; with none before (the first
    group failing), take the group out in a new version, as ``rollback --tenant`` does."""
    note = f"{group} failed its gate"
    try:
        ops.rollback(store, op=operator, text=note)
    except ConflictError:
        current = store.in_force()
        listed = current.content.tenant_ids if current else frozenset()
        members = plan.group(group).tenant_ids if group else frozenset()
        ops.rollback(store, tenants=members & listed, op=operator, text=note)


def judge_gate(service: Service, plan_file: FsPath, current: InForce | None) -> GateReport:
    """The gate over the groups the flag in force has moved, from the demo's ledger and the parity
    of the shadows run before they moved."""
    migrated = current.content.migrated if current else frozenset()
    plan = load_plan(plan_file)
    shadows = service.shadows
    parity = gate_parity(shadows.runner.store, plan) if shadows is not None else None
    return evaluate(service.ledger, plan, migrated, service.clock(), parity=parity)


def tally(
    service: Service, stage: Stage, ids: list[str], migrated: set[int], migrated_before: set[int]
) -> StageResult:
    """One stage's figures from the ledger: conversions per path, failures, removed tenants."""
    report = service.controller.last_report
    version = report.flag.snapshot.version if report is not None and report.flag.snapshot else None
    removed = migrated_before - migrated
    by_path: Counter[Path] = Counter()
    failed = removed_legacy = removed_new = 0
    for cid in ids:
        record = service.ledger.get(cid)
        if record is None or record.path is None:
            continue
        by_path[record.path] += 1
        failed += record.state is ConversionState.FAILED
        if record.tenant_id in removed:
            removed_legacy += record.path is Path.LEGACY
            removed_new += record.path is Path.NEW
    return StageResult(
        name=stage.name,
        flag_version=version,
        migrated_tenants=len(migrated),
        legacy=by_path[Path.LEGACY],
        new=by_path[Path.NEW],
        failed=failed,
        removed_tenants=len(removed),
        removed_on_legacy=removed_legacy,
        removed_on_new=removed_new,
        action=stage.action,
    )


def judge(service: Service, workdir: FsPath, accepted: list[str], result: DemoResult) -> None:
    """Count duplicates, losses and wrong-path outputs from the worker outputs and the ledger."""
    found = outcome(service.ledger, service.settings.output_dir, accepted)
    result.conversions = found.conversions
    result.outputs = found.outputs
    result.duplicates = found.duplicates
    result.lost = found.lost
    result.succeeded = found.succeeded
    result.failed = found.failed
    result.failed_on_purpose = found.failed_on_purpose
    result.wrong_path = found.wrong_path
    shadow_runs = shadow_intervals(service.settings.local_state_dir)
    result.shadow_runs = len(shadow_runs)
    real_runs = [
        (o["started_at"], o["finished_at"])
        for v in produced_lines(service.settings.output_dir).values()
        for o in v
    ]
    result.max_in_flight = max_overlap(real_runs + shadow_runs)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the worker outputs and the ledger say happened to a set of accepted conversions.

    ``duplicates``: successful outputs beyond the first for one conversion (so a second run on
    either path counts). ``lost``: accepted but not terminal in the ledger, or recorded SUCCEEDED
    without an output file. ``wrong_path``: an output made on a path other than the one the ledger
    records. ``max_in_flight``: the most conversions the workers were converting at one instant.
    """

    conversions: int
    outputs: int
    duplicates: int
    lost: int
    succeeded: int
    failed: int
    wrong_path: int
    max_in_flight: int
    duplicate_ids: tuple[str, ...] = ()
    lost_ids: tuple[str, ...] = ()
    failed_on_purpose: int = 0  # failed conversions that were asked to (see ``asked_to_fail``)


def asked_to_fail(simulate: str | None, path: Path | None) -> bool:
    """Whether the sample worker was asked to fail this conversion where it ran: always for
    ``simulate=fail``, on the new path for ``fail_on_new`` (the demo's broken group)."""
    return simulate == "fail" or (simulate == "fail_on_new" and path is Path.NEW)


def produced_lines(output_dir: FsPath) -> dict[str, list[dict[str, Any]]]:
    """The workers' ``produced.jsonl`` (one line per successful conversion run) by conversion id."""
    lines: dict[str, list[dict[str, Any]]] = {}
    produced = output_dir / "produced.jsonl"
    if produced.exists():
        for raw in produced.read_text().splitlines():
            line = json.loads(raw)
            lines.setdefault(line["conversion_id"], []).append(line)
    return lines


def outcome(ledger: Ledger, output_dir: FsPath, accepted: Iterable[str]) -> Outcome:
    """Judge ``accepted`` from the worker outputs under ``output_dir`` and the ledger."""
    lines = produced_lines(output_dir)
    ids = list(accepted)
    duplicate_ids = tuple(sorted(cid for cid, v in lines.items() if len(v) > 1))
    lost_ids: list[str] = []
    succeeded = failed = on_purpose = wrong_path = 0
    for cid in ids:
        record = ledger.get(cid)
        outputs = lines.get(cid, [])
        if record is None or not record.state.terminal:
            lost_ids.append(cid)
        elif record.state is ConversionState.SUCCEEDED:
            succeeded += 1
            if not outputs or not FsPath(outputs[0]["output"]).exists():
                lost_ids.append(cid)
            elif any(o["path"] != (record.path.value if record.path else None) for o in outputs):
                wrong_path += 1
        else:
            failed += 1
            on_purpose += asked_to_fail(record.params.get("simulate"), record.path)
    return Outcome(
        conversions=len(ids),
        outputs=sum(len(v) for v in lines.values()),
        duplicates=sum(len(v) - 1 for v in lines.values() if len(v) > 1),
        lost=len(lost_ids),
        succeeded=succeeded,
        failed=failed,
        wrong_path=wrong_path,
        max_in_flight=max_overlap([(o["started_at"], o["finished_at"]) for v in lines.values() for o in v]),
        duplicate_ids=duplicate_ids,
        lost_ids=tuple(lost_ids),
        failed_on_purpose=on_purpose,
    )


def shadow_intervals(state_dir: FsPath) -> list[tuple[float, float]]:
    """When each shadow run worked, from the results the shadow runners' jobs wrote: shadow work
    counts against the one budget too."""
    out: list[tuple[float, float]] = []
    for results in (
        state_dir / "shadow-new" / "results",
        *sorted((state_dir / "shadow-legacy" / "builds").glob("*/results")),
    ):
        for path in results.glob("*.json") if results.is_dir() else ():
            doc = json.loads(path.read_text())
            if isinstance(doc.get("started_at"), float) and isinstance(doc.get("finished_at"), float):
                out.append((doc["started_at"], doc["finished_at"]))
    return out


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best
