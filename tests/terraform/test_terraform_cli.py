"""terraform fmt, validate and plan on the real configuration, offline; apply and destroy on moto.

Skipped, with the reason, where the Terraform CLI or the provider mirror is absent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
import terraform_hcl as tf
from conftest import PLAN_FLAGS, Terraform

from controller.settings import env_names
from flags.document import parse_flag

CONFIGURATIONS = ["terraform", *(f"terraform/modules/{m}" for m in tf.MODULE_NAMES)]


def test_formatting_is_canonical():
    # Formatting needs the binary only, not the provider.
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not installed on this machine")
    for directory in (tf.TERRAFORM_DIR, Path(__file__).parent / "moto_stack"):
        result = subprocess.run(
            ["terraform", "fmt", "-check", "-recursive", "-diff", str(directory)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=dict(os.environ, CHECKPOINT_DISABLE="1", TF_CLI_CONFIG_FILE="/dev/null"),
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_configuration_validates_against_the_provider_schema(terraform: Terraform, configuration: str):
    directory = terraform.work / configuration
    terraform.init(directory)
    result = terraform.run(directory, "validate", "-json", check=False)
    report = json.loads(result.stdout)
    assert report["valid"] is True, json.dumps(report["diagnostics"], indent=2)
    # Warnings include deprecated arguments: none may be used.
    assert report["warning_count"] == 0, json.dumps(report["diagnostics"], indent=2)


# Planning the whole root against moto: only data sources are read (no resource is created),
# so every module can be planned, those moto does not implement included.


def _root_variables(tmp_path: Path, **overrides: Any) -> Path:
    package = tmp_path / "flag-validator.zip"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("flags/validator.py", "def handler(event, context):\n    return None\n")
    variables: dict[str, Any] = {
        "region": "us-east-1",
        "vpc_id": "vpc-0a1b2c3d4e5f60718",
        "private_subnet_ids": ["subnet-0a1b2c3d4e5f60718", "subnet-18f6e5d4c3b2a1f0e"],
        "controller_allowed_cidr_blocks": ["10.0.0.0/16"],
        "api_token_secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:cutover/api-token-AbCdEf",
        "controller_image": "registry.example/cutover:test",
        "job_image": "registry.example/excel-export-job:test",
        "validator_zip_path": str(package),
        "legacy": {"project_name": "excel-export", "source_location": "sources/excel-export.zip"},
        "budget": 7,
        "job_vcpus": 2,
        "job_memory_mib": 4096,
    }
    variables.update(overrides)
    path = tmp_path / "test.tfvars.json"
    path.write_text(json.dumps(variables), encoding="utf-8")
    return path


def _plan_root(
    terraform: Terraform, endpoint: str, var_file: Path, check: bool = True
) -> tuple[dict[str, Any] | None, str]:
    root = terraform.work / "terraform"
    terraform.point_at_moto(root, endpoint)
    terraform.init(root)
    plan_file = f"{var_file.parent}/root.tfplan"
    result = terraform.run(
        root, "plan", *PLAN_FLAGS, f"-var-file={var_file}", f"-out={plan_file}", check=check
    )
    if result.returncode != 0:
        return None, result.stdout + result.stderr
    return terraform.show_plan(root, plan_file), result.stdout


def _changes(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Planned changes of managed resources (data sources read at apply are left out)."""
    return {rc["address"]: rc["change"] for rc in plan["resource_changes"] if rc["mode"] == "managed"}


def _known_keys(output: dict[str, Any]) -> dict[str, Any]:
    """An output map's keys with their planned values (None where only apply will know)."""
    known = dict(output.get("after") or {})
    unknown = output.get("after_unknown")
    if isinstance(unknown, dict):
        known.update({k: None for k, v in unknown.items() if v is True})
    return known


@pytest.mark.slow
def test_root_plan_wires_the_modules_together(terraform, moto_endpoint, tmp_path):
    plan, _ = _plan_root(terraform, moto_endpoint, _root_variables(tmp_path))
    assert plan is not None
    changes = _changes(plan)
    assert all(c["actions"] == ["create"] for c in changes.values())
    types = {rc["type"] for rc in plan["resource_changes"]}
    assert not {t for t in types if t.startswith(("aws_lb", "aws_alb", "aws_appautoscaling"))}

    # The controller's environment, evaluated: names the settings read, values that match what
    # the other modules create.
    env = _known_keys(plan["output_changes"]["controller_environment"])
    assert {k for k in env if k.startswith("CUTOVER_")} <= set(env_names())
    table = changes["module.ledger.aws_dynamodb_table.ledger"]["after"]["name"]
    bucket = changes["module.ledger.aws_s3_bucket.manifests"]["after"]["bucket"]
    project = changes["module.codebuild.aws_codebuild_project.legacy[0]"]["after"]["name"]
    application = changes["module.appconfig.aws_appconfig_application.cutover"]["after"]["name"]
    environment = changes["module.appconfig.aws_appconfig_environment.this"]["after"]["name"]
    profile = changes["module.appconfig.aws_appconfig_configuration_profile.flags"]["after"]
    assert env["CUTOVER_LEDGER"] == f"dynamodb://{table}"
    assert env["CUTOVER_MANIFEST_BUCKET"] == bucket
    assert env["CUTOVER_LEGACY_PROJECT"] == project == "excel-export"
    assert env["CUTOVER_APPCONFIG_APPLICATION"] == application
    assert env["CUTOVER_APPCONFIG_ENVIRONMENT"] == environment
    assert env["CUTOVER_APPCONFIG_PROFILE"] == profile["name"]
    assert env["CUTOVER_FLAG_SOURCE"] == "agent"
    assert env["CUTOVER_AGENT_URL"] == "http://localhost:2772"
    assert env["CUTOVER_BACKEND"] == "aws"
    assert env["CUTOVER_BUDGET"] == "7"
    assert env["CUTOVER_MANAGE_MAX_VCPUS"] == "true"
    # Known only once the resources exist (ARNs), but given all the same.
    for later in (
        "CUTOVER_BATCH_JOB_QUEUE",
        "CUTOVER_BATCH_COMPUTE_ENVIRONMENT",
        "CUTOVER_SNS_TOPIC_ARN",
        "AWS_REGION",
    ):
        assert later in env

    # The new path may run at most the whole budget: 7 conversions x 2 vCPUs.
    environment_change = changes["module.batch.aws_batch_compute_environment.controller_managed[0]"]
    assert environment_change["after"]["compute_resources"][0]["max_vcpus"] == 14
    assert "module.batch.aws_batch_compute_environment.terraform_managed[0]" not in changes

    # The first flag version is one the controller accepts, with nobody migrated.
    content = changes["module.appconfig.aws_appconfig_hosted_configuration_version.initial"]
    flag_key = env["CUTOVER_FLAG_KEY"]
    snapshot = parse_flag(content["after"]["content"], flag_key=flag_key, source="plan", fetched_at=0.0)
    assert snapshot.enabled
    assert snapshot.tenant_ids == frozenset()
    assert profile["type"] == "AWS.AppConfig.FeatureFlags"

    service = changes["module.controller.aws_ecs_service.controller"]["after"]
    assert service["network_configuration"][0]["assign_public_ip"] is False
    assert service["desired_count"] == 2
    groups = changes["module.controller.aws_security_group.controller"]["after"]
    assert [rule["cidr_blocks"] for rule in groups["ingress"]] == [["10.0.0.0/16"]]


@pytest.mark.slow
def test_root_plan_with_terraform_owned_capacity_and_an_existing_project(terraform, moto_endpoint, tmp_path):
    variables = _root_variables(
        tmp_path,
        controller_manages_max_vcpus=False,
        legacy={
            "create_project": False,
            "project_name": "excel-export",
            "existing_service_role_name": "codebuild-excel-export-role",
        },
    )
    plan, _ = _plan_root(terraform, moto_endpoint, variables)
    assert plan is not None
    changes = _changes(plan)
    assert "module.batch.aws_batch_compute_environment.controller_managed[0]" not in changes
    fixed = changes["module.batch.aws_batch_compute_environment.terraform_managed[0]"]
    assert fixed["after"]["compute_resources"][0]["max_vcpus"] == 14
    assert not [a for a in changes if a.startswith("module.codebuild.aws_codebuild_project")]
    grant = changes["module.codebuild.aws_iam_role_policy.manifests"]["after"]
    assert grant["role"] == "codebuild-excel-export-role"
    env = _known_keys(plan["output_changes"]["controller_environment"])
    assert env["CUTOVER_MANAGE_MAX_VCPUS"] == "false"
    assert env["CUTOVER_LEGACY_PROJECT"] == "excel-export"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"controller_allowed_cidr_blocks": ["0.0.0.0/0"]}, "not 0.0.0.0/0"),
        ({"controller_allowed_cidr_blocks": ["0.0.0.0/1", "128.0.0.0/1"]}, "none wider than /8"),
        ({"controller_allowed_cidr_blocks": ["10.0.0.0/16", "0.0.0.0/2"]}, "none wider than /8"),
        ({"api_token_secret_arn": None}, "a token is required"),
        ({"job_memory_mib": 3000}, "is not a Fargate size for 2 vCPU"),
    ],
    ids=[
        "public-controller",
        "public-in-two-halves",
        "public-beside-a-private-range",
        "no-api-token",
        "invalid-fargate-size",
    ],
)
def test_root_plan_refuses_unsafe_or_impossible_settings(
    terraform, moto_endpoint, tmp_path, override, message
):
    plan, output = _plan_root(terraform, moto_endpoint, _root_variables(tmp_path, **override), check=False)
    assert plan is None
    # Terraform wraps a long message over lines framed with colour codes and "│": read it as text.
    text = re.sub(r"\x1b\[[0-9;]*m|│", " ", output)
    assert message in " ".join(text.split())
