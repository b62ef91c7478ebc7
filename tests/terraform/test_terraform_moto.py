"""The modules moto implements (ledger, signals, batch, codebuild with an S3 source), applied
against a moto server on loopback, inspected with boto3, planned again and destroyed.

The apply starts in the background as soon as the session starts (see conftest.py), because most
of its time is spent in the provider's waiters; this test picks it up once it has finished.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import BUDGET, PLAN_FLAGS, STACK_VARIABLES, VCPUS_PER_JOB, MotoStack

# Applying the modules moto implements, then planning again and destroying.

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
    from controller.ledger.dynamodb import schema

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
        s["Effect"] == "Deny" and s["Condition"].get("Bool", {}).get("aws:SecureTransport") == "false"
        for s in policy["Statement"]
    )


def _check_signals(endpoint: str, outputs: dict[str, Any], kms_key_arn: str) -> None:
    sns = _client("sns", endpoint)
    attributes = sns.get_topic_attributes(TopicArn=outputs["topic_arn"])["Attributes"]
    assert attributes["KmsMasterKeyId"] == kms_key_arn
    policy = json.loads(attributes["Policy"])
    assert any(
        s.get("Principal", {}).get("Service") == "cloudwatch.amazonaws.com" for s in policy["Statement"]
    )
    cloudwatch = _client("cloudwatch", endpoint)
    names = outputs["alarm_names"]
    alarms = {
        a["AlarmName"]: a for a in cloudwatch.describe_alarms(AlarmNames=list(names.values()))["MetricAlarms"]
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
    gate = alarms[names["gate_failing"]]
    assert (gate["MetricName"], gate["Namespace"], gate["TreatMissingData"]) == (
        "GateFailing",
        "Cutover",
        "notBreaching",
    )
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
    requirements = {r["type"]: r["value"] for r in definition["containerProperties"]["resourceRequirements"]}
    assert requirements == {"VCPU": str(VCPUS_PER_JOB), "MEMORY": "4096"}
    assert definition["containerProperties"]["executionRoleArn"].endswith(":role/test-batch-execution")
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
    grant = iam.get_role_policy(RoleName="test-legacy-export-codebuild", PolicyName="cutover-manifests")
    statements = grant["PolicyDocument"]["Statement"]
    by_sid = {s["Sid"]: s for s in statements}
    # A build reads the old path's manifests and writes only its results, nothing else in the bucket.
    assert by_sid["ReadManifests"]["Action"] == "s3:GetObject"
    assert by_sid["ReadManifests"]["Resource"] == f"arn:aws:s3:::{outputs['bucket_name']}/manifests/legacy/*"
    assert by_sid["WriteResults"]["Action"] == "s3:PutObject"
    assert (
        by_sid["WriteResults"]["Resource"]
        == f"arn:aws:s3:::{outputs['bucket_name']}/manifests/legacy/*/results/*"
    )
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
def test_modules_apply_plan_clean_and_destroy_against_moto(moto_stack: MotoStack, tmp_path):
    endpoint = moto_stack.endpoint
    moto_stack.wait()
    try:
        outputs = {
            name: value["value"]
            for name, value in json.loads(moto_stack.run("output", "-json").stdout).items()
        }
        state = json.loads(moto_stack.run("show", "-json").stdout)
        kms_key_arn = next(
            r["values"]["arn"]
            for r in state["values"]["root_module"]["resources"]
            if r["address"] == "aws_kms_key.test"
        )
        _check_ledger(endpoint, outputs, kms_key_arn)
        _check_bucket(endpoint, outputs["bucket_name"], kms_key_arn)
        _check_signals(endpoint, outputs, kms_key_arn)
        _check_new_path(endpoint, outputs)
        _check_old_path(endpoint, outputs)

        # Planning again changes nothing but what moto fails to store.
        plan_file = str(tmp_path / "again.tfplan")
        moto_stack.run("plan", *PLAN_FLAGS, *STACK_VARIABLES, f"-out={plan_file}")
        assert _drift(moto_stack.terraform.show_plan(moto_stack.directory, plan_file)) <= MOTO_GAPS
    finally:
        # Just refreshed by the plan (or failed before it): no need to read everything again.
        moto_stack.run("destroy", "-auto-approve", "-refresh=false", *PLAN_FLAGS, *STACK_VARIABLES)
    _check_gone(endpoint, outputs)
