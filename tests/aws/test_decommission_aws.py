"""``cutover decommission`` with the AWS backend (moto server): CodeBuild's own list of the legacy
project's builds is evidence, so a build nobody recorded in the ledger keeps the old path on."""

from __future__ import annotations

import importlib
import json
from pathlib import Path as FsPath

import pytest
from typer.testing import CliRunner

from controller.ledger.dynamodb import create_table
from flags import ops
from flags.file_store import FileVersionStore
from flags.rollout import Group, RolloutPlan
from tests.aws.moto_world import BUCKET, JOB_DEFINITION, PROJECT, QUEUE, TABLE, World

cli = importlib.import_module("controller.cli.app")


@pytest.fixture
def env(world: World, tmp_path: FsPath) -> dict[str, str]:
    world.bucket()
    world.batch()
    world.codebuild()
    create_table(world.client("dynamodb", hooked=False), TABLE)
    store = FileVersionStore(tmp_path / "flags.json", "migrated_tenants")
    plan = RolloutPlan((Group("all", frozenset({1, 2})),))
    ops.advance(store, plan, to_group="all", max_add=10, op=ops.Operator(by="test"))
    return {
        **world.env(),
        "CUTOVER_BACKEND": "aws",
        "CUTOVER_LEDGER": f"dynamodb://{TABLE}",
        "CUTOVER_FLAG_FILE": str(tmp_path / "flags.json"),
        "CUTOVER_LEGACY_PROJECT": PROJECT,
        "CUTOVER_BATCH_JOB_QUEUE": QUEUE,
        "CUTOVER_BATCH_JOB_DEFINITION": JOB_DEFINITION,
        "CUTOVER_MANIFEST_BUCKET": BUCKET,
    }


def decommission(env: dict[str, str]) -> tuple[int, dict]:
    result = CliRunner().invoke(cli.app, ["decommission", "--days", "1", "--json"], env=env)
    return result.exit_code, json.loads(result.stdout)


def test_a_build_of_the_legacy_project_listed_by_codebuild_keeps_the_old_path_on(
    world: World, env: dict[str, str]
) -> None:
    status, quiet = decommission(env)
    checks = {c["name"]: c for c in quiet["checks"]}
    assert checks["no_legacy_builds_since"]["ok"] is True
    # the reconciliation has never run against these backends, which can list what they ran
    assert checks["reconciliation_clean"]["ok"] is False
    assert status == 1

    started = world.client("codebuild", hooked=False).start_build(projectName=PROJECT)["build"]["id"]
    status, busy = decommission(env)
    checks = {c["name"]: c for c in busy["checks"]}
    assert status == 1
    assert checks["no_legacy_builds_since"]["ok"] is False
    assert started in checks["no_legacy_builds_since"]["detail"]
