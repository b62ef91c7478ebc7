"""terraform fmt, validate and plan on the real configuration, offline; apply and destroy on moto.

Skipped, with the reason, where the Terraform CLI or the provider mirror is absent.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import terraform_hcl as tf
from conftest import Terraform, terraform_unavailable

from controller.settings import env_names
from flags.document import parse_flag

PLAN_FLAGS = ("-input=false", "-lock=false", "-parallelism=4")

CONFIGURATIONS = ["terraform", *(f"terraform/modules/{m}" for m in tf.MODULE_NAMES)]


def test_formatting_is_canonical():
    reason = terraform_unavailable()
    if reason:
        pytest.skip(reason)
    import subprocess

    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", str(tf.TERRAFORM_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"CHECKPOINT_DISABLE": "1", "TF_CLI_CONFIG_FILE": "/dev/null", "PATH": _path()},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _path() -> str:
    import os

    return os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")


@pytest.mark.slow
@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_configuration_validates_against_the_provider_schema(
    terraform: Terraform, configuration: str
):
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
    return {
        rc["address"]: rc["change"] for rc in plan["resource_changes"] if rc["mode"] == "managed"
    }


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
    snapshot = parse_flag(
        content["after"]["content"], flag_key=flag_key, source="plan", fetched_at=0.0
    )
    assert snapshot.enabled
    assert snapshot.tenant_ids == frozenset()
    assert profile["type"] == "AWS.AppConfig.FeatureFlags"

    service = changes["module.controller.aws_ecs_service.controller"]["after"]
    assert service["network_configuration"][0]["assign_public_ip"] is False
    assert service["desired_count"] == 2
    groups = changes["module.controller.aws_security_group.controller"]["after"]
    assert [rule["cidr_blocks"] for rule in groups["ingress"]] == [["10.0.0.0/16"]]


@pytest.mark.slow
def test_root_plan_with_terraform_owned_capacity_and_an_existing_project(
    terraform, moto_endpoint, tmp_path
):
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
        ({"job_memory_mib": 3000}, "is not a Fargate size for 2 vCPU"),
    ],
    ids=["public-controller", "invalid-fargate-size"],
)
def test_root_plan_refuses_unsafe_or_impossible_settings(
    terraform, moto_endpoint, tmp_path, override, message
):
    plan, output = _plan_root(
        terraform, moto_endpoint, _root_variables(tmp_path, **override), check=False
    )
    assert plan is None
    assert message in " ".join(output.split())


# Applying the modules moto implements, then planning again and destroying.

BUDGET = 7
VCPUS_PER_JOB = 2

# Attributes moto does not store, so they come back different and a second plan shows them.
MOTO_GAPS = {
    # CreateProject ignores encryptionKey and reports the AWS-managed S3 key.
    ("module.codebuild.aws_codebuild_project.legacy[0]", "encryption_key"),
}


def _client(service: str, endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}),
    )


def _drift(plan: dict[str, Any]) -> set[tuple[str, str]]:
    """(address, attribute) pairs a plan would change."""
    drift = set()
    for rc in plan["resource_changes"]:
        change = rc["change"]
        if change["actions"] in (["no-op"], ["read"]):
            continue
        if change["actions"] != ["update"]:
            drift.add((rc["address"], "+".join(change["actions"])))
            continue
        before, after = change["before"] or {}, change["after"] or {}
        for key in set(before) | set(after):
            if before.get(key) != after.get(key) or change["after_unknown"].get(key):
                drift.add((rc["address"], key))
    return drift


def _check_ledger(endpoint: str, outputs: dict[str, Any], kms_key_arn: str) -> None:
    from controller import ledger_schema as schema

    dynamodb = _client("dynamodb", endpoint)
    table = dynamodb.describe_table(TableName=outputs["table_name"])["Table"]
    assert table["KeySchema"] == [{"AttributeName": schema.HASH_KEY, "KeyType": "HASH"}]
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    assert types[schema.HASH_KEY] == schema.HASH_KEY_TYPE
    indexes = {
        index["IndexName"]: {k["KeyType"]: k["AttributeName"] for k in index["KeySchema"]}
        for index in table["GlobalSecondaryIndexes"]
    }
    assert indexes == {
        schema.STATE_INDEX: {
            "HASH": schema.STATE_INDEX_HASH_KEY,
            "RANGE": schema.STATE_INDEX_RANGE_KEY,
        },
        schema.TENANT_INDEX: {
            "HASH": schema.TENANT_INDEX_HASH_KEY,
            "RANGE": schema.TENANT_INDEX_RANGE_KEY,
        },
    }
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSEDescription"]["SSEType"] == "KMS"
    assert table["SSEDescription"]["KMSMasterKeyArn"] == kms_key_arn
    ttl = dynamodb.describe_time_to_live(TableName=outputs["table_name"])
    assert ttl["TimeToLiveDescription"]["AttributeName"] == schema.TTL_ATTRIBUTE
    assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"
    backups = dynamodb.describe_continuous_backups(TableName=outputs["table_name"])
    pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"

    # The table answers the ledger's queries: a first-wins claim, then both indexes.
    item = {
        schema.HASH_KEY: {"S": "conv#c-1"},
        schema.STATE_INDEX_HASH_KEY: {"S": "claimed#new"},
        schema.STATE_INDEX_RANGE_KEY: {"N": "1"},
        schema.TENANT_INDEX_HASH_KEY: {"N": "101"},
        schema.TENANT_INDEX_RANGE_KEY: {"N": "1700000000"},
        schema.TTL_ATTRIBUTE: {"N": "1900000000"},
    }
    claim = {
        "TableName": outputs["table_name"],
        "Item": item,
        "ConditionExpression": f"attribute_not_exists({schema.HASH_KEY})",
    }
    dynamodb.put_item(**claim)
    with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException):
        dynamodb.put_item(**claim)
    by_state = dynamodb.query(
        TableName=outputs["table_name"],
        IndexName=schema.STATE_INDEX,
        KeyConditionExpression="#k = :v",
        ExpressionAttributeNames={"#k": schema.STATE_INDEX_HASH_KEY},
        ExpressionAttributeValues={":v": {"S": "claimed#new"}},
    )
    assert [i[schema.HASH_KEY]["S"] for i in by_state["Items"]] == ["conv#c-1"]
    by_tenant = dynamodb.query(
        TableName=outputs["table_name"],
        IndexName=schema.TENANT_INDEX,
        KeyConditionExpression="#k = :v",
        ExpressionAttributeNames={"#k": schema.TENANT_INDEX_HASH_KEY},
        ExpressionAttributeValues={":v": {"N": "101"}},
    )
    assert by_tenant["Count"] == 1


def _check_bucket(endpoint: str, bucket: str, kms_key_arn: str) -> None:
    s3 = _client("s3", endpoint)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": kms_key_arn,
    }
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    assert len(block) == 4
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    manifests = next(r for r in rules if r.get("Filter", {}).get("Prefix") == "manifests/")
    assert manifests["Expiration"]["Days"] == 30
    assert manifests["NoncurrentVersionExpiration"]["NoncurrentDays"] == 7
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert any(
        s["Effect"] == "Deny"
        and s["Condition"].get("Bool", {}).get("aws:SecureTransport") == "false"
        for s in policy["Statement"]
    )


def _check_signals(endpoint: str, outputs: dict[str, Any], kms_key_arn: str) -> None:
    sns = _client("sns", endpoint)
    attributes = sns.get_topic_attributes(TopicArn=outputs["topic_arn"])["Attributes"]
    assert attributes["KmsMasterKeyId"] == kms_key_arn
    policy = json.loads(attributes["Policy"])
    assert any(
        s.get("Principal", {}).get("Service") == "cloudwatch.amazonaws.com"
        for s in policy["Statement"]
    )
    cloudwatch = _client("cloudwatch", endpoint)
    names = outputs["alarm_names"]
    alarms = {
        a["AlarmName"]: a
        for a in cloudwatch.describe_alarms(AlarmNames=list(names.values()))["MetricAlarms"]
    }
    assert set(alarms) == set(names.values())
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [outputs["topic_arn"]]
    failure = alarms[names["new_path_failure_rate"]]
    metrics = {
        m["MetricStat"]["Metric"]["MetricName"]: m["MetricStat"]["Metric"]
        for m in failure["Metrics"]
        if "MetricStat" in m
    }
    assert set(metrics) == {"ConversionsFailed", "ConversionsSucceeded"}
    for metric in metrics.values():
        assert metric["Namespace"] == "Cutover"
        assert metric["Dimensions"] == [{"Name": "Path", "Value": "new"}]
    stalled = alarms[names["no_cycle"]]
    assert (stalled["MetricName"], stalled["TreatMissingData"]) == ("CyclesCompleted", "breaching")
    scheduler = _client("scheduler", endpoint)
    schedule = scheduler.get_schedule(Name="test-trigger")
    assert schedule["Target"]["Arn"] == "arn:aws:sqs:us-east-1:123456789012:cutover-test-intake"
    assert schedule["ScheduleExpression"] == "rate(1 hour)"


def _check_new_path(endpoint: str, outputs: dict[str, Any]) -> None:
    batch = _client("batch", endpoint)
    environment = batch.describe_compute_environments(
        computeEnvironments=[outputs["compute_environment_arn"]]
    )["computeEnvironments"][0]
    assert environment["type"] == "MANAGED"
    assert environment["computeResources"]["type"] == "FARGATE"
    assert environment["computeResources"]["maxvCpus"] == BUDGET * VCPUS_PER_JOB
    queue = batch.describe_job_queues(jobQueues=[outputs["job_queue_arn"]])["jobQueues"][0]
    assert [o["computeEnvironment"] for o in queue["computeEnvironmentOrder"]] == [
        outputs["compute_environment_arn"]
    ]
    definition = batch.describe_job_definitions(
        jobDefinitionName=outputs["job_definition_name"], status="ACTIVE"
    )["jobDefinitions"][0]
    assert definition["platformCapabilities"] == ["FARGATE"]
    requirements = {
        r["type"]: r["value"] for r in definition["containerProperties"]["resourceRequirements"]
    }
    assert requirements == {"VCPU": str(VCPUS_PER_JOB), "MEMORY": "4096"}
    assert definition["containerProperties"]["executionRoleArn"].endswith(
        ":role/test-batch-execution"
    )
    assert definition["containerProperties"]["jobRoleArn"].endswith(":role/test-batch-job")
    strategy = definition["retryStrategy"]
    assert strategy["attempts"] == 3
    *retries, last = strategy["evaluateOnExit"]
    assert last["action"].upper() == "EXIT"
    assert last["onReason"] == "*"
    assert {r["action"].upper() for r in retries} == {"RETRY"}
    assert definition["timeout"]["attemptDurationSeconds"] == 3600
    # A conversion can be submitted to the queue with the definition and runs.
    job = batch.submit_job(
        jobName="conversion-c-1",
        jobQueue=outputs["job_queue_arn"],
        jobDefinition=outputs["job_definition_name"],
        containerOverrides={"environment": [{"name": "CUTOVER_CONVERSION_ID", "value": "c-1"}]},
    )
    described = batch.describe_jobs(jobs=[job["jobId"]])["jobs"][0]
    assert described["status"] in {
        "SUBMITTED",
        "PENDING",
        "RUNNABLE",
        "STARTING",
        "RUNNING",
        "SUCCEEDED",
    }


def _check_old_path(endpoint: str, outputs: dict[str, Any]) -> None:
    codebuild = _client("codebuild", endpoint)
    project = codebuild.batch_get_projects(names=[outputs["project_name"]])["projects"][0]
    assert project["source"]["type"] == "S3"
    assert project["source"]["location"] == "test-source/legacy.zip"
    assert project["serviceRole"].endswith(":role/test-legacy-export-codebuild")
    iam = _client("iam", endpoint)
    grant = iam.get_role_policy(
        RoleName="test-legacy-export-codebuild", PolicyName="cutover-manifests"
    )
    statements = grant["PolicyDocument"]["Statement"]
    objects = next(s for s in statements if s["Sid"] == "ReadManifestsWriteResults")
    assert objects["Resource"] == f"arn:aws:s3:::{outputs['bucket_name']}/manifests/*"
    build = codebuild.start_build(projectName=outputs["project_name"])["build"]
    assert build["projectName"] == outputs["project_name"]


def _check_gone(endpoint: str, outputs: dict[str, Any]) -> None:
    dynamodb = _client("dynamodb", endpoint)
    assert outputs["table_name"] not in dynamodb.list_tables()["TableNames"]
    s3 = _client("s3", endpoint)
    assert outputs["bucket_name"] not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    sns = _client("sns", endpoint)
    assert outputs["topic_arn"] not in {t["TopicArn"] for t in sns.list_topics()["Topics"]}
    cloudwatch = _client("cloudwatch", endpoint)
    names = list(outputs["alarm_names"].values())
    assert cloudwatch.describe_alarms(AlarmNames=names)["MetricAlarms"] == []
    batch = _client("batch", endpoint)
    assert batch.describe_job_queues(jobQueues=[outputs["job_queue_arn"]])["jobQueues"] == []


@pytest.mark.slow
def test_modules_apply_plan_clean_and_destroy_against_moto(terraform, moto_endpoint, tmp_path):
    stack = terraform.work / "moto_stack"
    terraform.point_at_moto(stack, moto_endpoint)
    terraform.init(stack)
    variables = (f"-var=budget={BUDGET}", f"-var=vcpus_per_job={VCPUS_PER_JOB}")
    terraform.run(stack, "apply", "-auto-approve", *PLAN_FLAGS, *variables, timeout=600)
    try:
        outputs = {
            name: value["value"]
            for name, value in json.loads(terraform.run(stack, "output", "-json").stdout).items()
        }
        state = json.loads(terraform.run(stack, "show", "-json").stdout)
        kms_key_arn = next(
            r["values"]["arn"]
            for r in state["values"]["root_module"]["resources"]
            if r["address"] == "aws_kms_key.test"
        )
        _check_ledger(moto_endpoint, outputs, kms_key_arn)
        _check_bucket(moto_endpoint, outputs["bucket_name"], kms_key_arn)
        _check_signals(moto_endpoint, outputs, kms_key_arn)
        _check_new_path(moto_endpoint, outputs)
        _check_old_path(moto_endpoint, outputs)

        # Planning again changes nothing but what moto fails to store.
        plan_file = str(tmp_path / "again.tfplan")
        terraform.run(stack, "plan", *PLAN_FLAGS, *variables, f"-out={plan_file}")
        assert _drift(terraform.show_plan(stack, plan_file)) <= MOTO_GAPS
    finally:
        terraform.run(stack, "destroy", "-auto-approve", *PLAN_FLAGS, *variables, timeout=600)
    _check_gone(moto_endpoint, outputs)
