"""Structural checks of terraform/: every .tf file parsed with python-hcl2, compared with the code.

These need neither Terraform nor AWS. Where the configuration must agree with the controller
(environment variables, the ledger's key schema, the flag document), the expected values come
from the controller's own modules, never from a copy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import terraform_hcl as tf
from terraform_hcl import TERRAFORM_DIR

from controller.ledger.dynamodb import schema as ledger_schema
from controller.settings import Settings, env_names
from flags.document import parse_flag

# Variables production cannot run without (the rest have working defaults in the settings).
ESSENTIAL_ENV = {
    "CUTOVER_FLAG_SOURCE",
    "CUTOVER_AGENT_URL",
    "CUTOVER_APPCONFIG_APPLICATION",
    "CUTOVER_APPCONFIG_ENVIRONMENT",
    "CUTOVER_APPCONFIG_PROFILE",
    "CUTOVER_LEDGER",
    "CUTOVER_BACKEND",
    "CUTOVER_LEGACY_PROJECT",
    "CUTOVER_BATCH_JOB_QUEUE",
    "CUTOVER_BATCH_JOB_DEFINITION",
    "CUTOVER_BATCH_COMPUTE_ENVIRONMENT",
    "CUTOVER_MANIFEST_BUCKET",
    "CUTOVER_BUDGET",
    "CUTOVER_SNS_TOPIC_ARN",
}

# Actions AWS authorises only against Resource "*" (no resource-level permissions).
ACTIONS_WITHOUT_RESOURCE_LEVEL = {
    "batch:DescribeComputeEnvironments",
    "batch:DescribeJobDefinitions",
    "batch:DescribeJobQueues",
    "batch:DescribeJobs",
    "batch:ListJobs",
    "cloudwatch:PutMetricData",
    "ecr:GetAuthorizationToken",
}


@pytest.fixture(scope="module")
def parsed() -> dict[Path, dict[str, Any]]:
    return tf.parse_all()


def _root_default(parsed: dict[Path, dict[str, Any]], name: str) -> Any:
    for path, var, body in tf.variables(parsed):
        if path.parent == tf.TERRAFORM_DIR and var == name:
            return body.get("default")
    raise AssertionError(f"root variable {name} not found")


def test_layout_has_the_root_and_the_six_modules(parsed):
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
        assert (tf.TERRAFORM_DIR / name) in parsed, name
    assert (tf.TERRAFORM_DIR / "terraform.tfvars.example").is_file()
    assert (tf.TERRAFORM_DIR / "README.md").is_file()
    for module in tf.MODULE_NAMES:
        files = {p.name for p in parsed if p.parent == tf.MODULES_DIR / module}
        assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= files, module
    called = {
        body["source"]
        for path, doc in parsed.items()
        if path.parent == tf.TERRAFORM_DIR
        for entry in doc.get("module", [])
        for body in entry.values()
    }
    assert called == {f"./modules/{m}" for m in tf.MODULE_NAMES}


# AppConfig


def test_hosted_configuration_version_ignores_content(parsed):
    version = tf.one_block(parsed, "resource", "aws_appconfig_hosted_configuration_version")
    ignored = tf.single(version.body, "lifecycle")["ignore_changes"]
    assert isinstance(ignored, list), "ignore_changes must list attributes"
    assert "content" in ignored


def test_first_deployment_is_never_redeployed(parsed):
    # Re-creating it would deploy the empty first version again and un-migrate everyone.
    deployment = tf.one_block(parsed, "resource", "aws_appconfig_deployment")
    assert tf.single(deployment.body, "lifecycle")["ignore_changes"] == "all"


def test_profile_is_a_hosted_feature_flag_profile_with_the_lambda_validator(parsed):
    profile = tf.one_block(parsed, "resource", "aws_appconfig_configuration_profile")
    assert profile.body["type"] == "AWS.AppConfig.FeatureFlags"
    assert profile.body["location_uri"] == "hosted"
    validator = tf.single(profile.body, "validator")
    assert validator["type"] == "LAMBDA"
    assert tf.expression(validator["content"]) == "aws_lambda_function.validator.arn"
    function = tf.one_block(parsed, "resource", "aws_lambda_function")
    assert function.body["handler"] == "${var.validator_handler}"
    handler_default = next(
        body["default"]
        for path, name, body in tf.variables(parsed)
        if path.parent == tf.MODULES_DIR / "appconfig" and name == "validator_handler"
    )
    assert handler_default == "flags.validator.handler"


def _first_flag_document(parsed: dict[Path, dict[str, Any]], flag_key: str) -> dict[str, Any]:
    local = tf.module_locals(parsed, tf.MODULES_DIR / "appconfig")["flag_document"]
    text = json.dumps(local).replace("${(var.flag_key)}", flag_key)
    assert "${" not in text, "the flag document may only depend on the flag key"
    return json.loads(text)


def test_first_flag_version_declares_tenant_ids_and_migrates_nobody(parsed):
    flag_key = _root_default(parsed, "flag_key")
    document = _first_flag_document(parsed, flag_key)
    attribute = document["flags"][flag_key]["attributes"]["tenant_ids"]
    assert attribute["constraints"] == {
        "type": "array",
        "required": True,
        "elements": {"type": "number", "minimum": 1},
    }
    # The controller's own parser accepts the first version: a valid flag, nobody migrated.
    snapshot = parse_flag(json.dumps(document), flag_key=flag_key, source="test", fetched_at=0.0)
    assert snapshot.enabled
    assert snapshot.tenant_ids == frozenset()


def test_deployment_strategy_is_all_at_once_with_a_bake_time(parsed):
    strategy = tf.one_block(parsed, "resource", "aws_appconfig_deployment_strategy")
    assert strategy.body["deployment_duration_in_minutes"] == 0
    assert strategy.body["growth_factor"] == 100
    assert tf.expression(strategy.body["final_bake_time_in_minutes"]) == "var.bake_minutes"
    environment = tf.one_block(parsed, "resource", "aws_appconfig_environment")
    monitor = tf.single(tf.single(environment.body, "dynamic"), "monitor")
    assert tf.expression(monitor["for_each"]) == "var.monitor_alarm_arns"
    root = tf.load(tf.TERRAFORM_DIR / "main.tf")
    appconfig = next(e["appconfig"] for e in root["module"] if "appconfig" in e)
    assert appconfig["monitor_alarm_arns"] == [
        "${module.signals.new_path_failure_alarm_arn}",
        "${module.signals.gate_failing_alarm_arn}",
    ]


# Controller


def _controller_locals(parsed: dict[Path, dict[str, Any]]) -> dict[str, Any]:
    return tf.module_locals(parsed, tf.MODULES_DIR / "controller")


def _names(value: dict[str, Any] | str) -> set[str]:
    """Keys of an object literal, also when it sits inside a conditional expression."""
    if isinstance(value, dict):
        return set(value)
    return set(re.findall(r"\b([A-Z][A-Z0-9_]*)\s*=", value))


def test_controller_environment_is_exactly_what_the_settings_read(parsed):
    local = _controller_locals(parsed)
    secrets = _names(local["controller_secrets"])
    assert secrets == {"CUTOVER_API_TOKEN"}
    given = _names(local["controller_environment"]) | secrets
    read = set(env_names())
    cutover = {name for name in given if name.startswith("CUTOVER_")}
    assert cutover <= read, f"not read by the settings: {sorted(cutover - read)}"
    assert not ESSENTIAL_ENV - given, f"missing: {sorted(ESSENTIAL_ENV - given)}"
    assert given - cutover <= {"AWS_REGION"}


def test_controller_environment_selects_the_production_adapters(parsed):
    local = _controller_locals(parsed)
    env = local["controller_environment"]
    assert env["CUTOVER_FLAG_SOURCE"] == "agent"
    assert env["CUTOVER_BACKEND"] == "aws"
    assert env["CUTOVER_LEDGER"] == "dynamodb://${var.ledger_table_name}"
    agent_url = env["CUTOVER_AGENT_URL"].replace("${local.agent_port}", str(local["agent_port"]))
    assert agent_url == "http://localhost:2772"
    # The sidecar listens where the controller looks, and only inside the task.
    agent = local["agent_environment"]
    assert agent["HTTP_PORT"] == "${tostring(local.agent_port)}"
    assert agent["HTTP_HOST"] == "localhost"
    assert not [k for k in agent if k.startswith("CUTOVER_")]
    # Values that settings validate are validated the same way here.
    Settings(
        _env_file=None,
        flag_source=env["CUTOVER_FLAG_SOURCE"],
        agent_url=agent_url,
        backend=env["CUTOVER_BACKEND"],
        ledger=env["CUTOVER_LEDGER"].replace("${var.ledger_table_name}", "cutover-ledger"),
    )


def test_controller_container_uses_those_variables(parsed):
    local = _controller_locals(parsed)
    containers = {c["name"]: c for c in local["container_definitions"]}
    assert set(containers) == {"controller", "appconfig-agent"}
    controller = containers["controller"]
    assert "local.controller_environment" in controller["environment"]
    assert "local.controller_secrets" in controller["secrets"]
    assert "local.agent_environment" in containers["appconfig-agent"]["environment"]
    assert controller["command"][:2] == ["cutover", "run"]
    assert controller["essential"] is True
    assert containers["appconfig-agent"]["essential"] is True
    assert controller["dependsOn"] == [{"containerName": "appconfig-agent", "condition": "START"}]
    assert all(c["readonlyRootFilesystem"] is True for c in containers.values())
    task = tf.one_block(parsed, "resource", "aws_ecs_task_definition")
    assert tf.expression(task.body["container_definitions"]) == "jsonencode(local.container_definitions)"


def test_controller_health_check_asks_healthz(parsed):
    local = _controller_locals(parsed)
    controller = next(c for c in local["container_definitions"] if c["name"] == "controller")
    assert controller["healthCheck"]["command"] == "${var.health_check_command}"
    default = next(
        body["default"]
        for path, name, body in tf.variables(parsed)
        if path.parent == tf.MODULES_DIR / "controller" and name == "health_check_command"
    )
    assert any("/healthz" in part and ":8080" in part for part in default)
    assert local["port"] == 8080


def test_terraform_defaults_match_the_controllers_defaults(parsed):
    fields = Settings.model_fields
    assert _root_default(parsed, "appconfig_application_name") == fields["appconfig_application"].default
    assert _root_default(parsed, "appconfig_environment_name") == fields["appconfig_environment"].default
    assert _root_default(parsed, "appconfig_profile_name") == fields["appconfig_profile"].default
    assert _root_default(parsed, "flag_key") == fields["flag_key"].default
    assert _root_default(parsed, "budget") == fields["budget"].default
    assert _root_default(parsed, "cycle_seconds") == fields["cycle_seconds"].default


def test_controller_is_internal_and_not_autoscaled(parsed):
    service = tf.one_block(parsed, "resource", "aws_ecs_service")
    assert tf.single(service.body, "network_configuration")["assign_public_ip"] is False
    assert tf.single(service.body, "service_registries")
    assert service.body["launch_type"] == "FARGATE"
    for kind in ("aws_lb", "aws_alb", "aws_appautoscaling_target", "aws_appautoscaling_policy"):
        assert not tf.blocks(parsed, "resource", kind), kind
    group = next(b for b in tf.blocks(parsed, "resource", "aws_security_group") if b.name == "controller")
    ingress = tf.nested(group.body, "ingress")
    assert [rule["cidr_blocks"] for rule in ingress] == ["${var.allowed_cidr_blocks}"]


# Ledger


def test_ledger_table_matches_the_ledgers_key_schema(parsed):
    table = tf.one_block(parsed, "resource", "aws_dynamodb_table").body
    assert table["hash_key"] == ledger_schema.HASH_KEY
    assert "range_key" not in table
    attributes = {a["name"]: a["type"] for a in tf.nested(table, "attribute")}
    assert attributes == {
        ledger_schema.HASH_KEY: ledger_schema.HASH_KEY_TYPE,
        ledger_schema.STATE_INDEX_HASH_KEY: ledger_schema.STATE_INDEX_HASH_KEY_TYPE,
        ledger_schema.STATE_INDEX_RANGE_KEY: ledger_schema.STATE_INDEX_RANGE_KEY_TYPE,
        ledger_schema.TENANT_INDEX_HASH_KEY: ledger_schema.TENANT_INDEX_HASH_KEY_TYPE,
        ledger_schema.TENANT_INDEX_RANGE_KEY: ledger_schema.TENANT_INDEX_RANGE_KEY_TYPE,
    }
    indexes = {
        g["name"]: (g["hash_key"], g.get("range_key")) for g in tf.nested(table, "global_secondary_index")
    }
    assert indexes == {
        ledger_schema.STATE_INDEX: (
            ledger_schema.STATE_INDEX_HASH_KEY,
            ledger_schema.STATE_INDEX_RANGE_KEY,
        ),
        ledger_schema.TENANT_INDEX: (
            ledger_schema.TENANT_INDEX_HASH_KEY,
            ledger_schema.TENANT_INDEX_RANGE_KEY,
        ),
    }
    assert tf.single(table, "ttl") == {
        "attribute_name": ledger_schema.TTL_ATTRIBUTE,
        "enabled": True,
    }
    assert table["billing_mode"] == "PAY_PER_REQUEST"
    assert tf.single(table, "point_in_time_recovery") == {"enabled": True}
    encryption = tf.single(table, "server_side_encryption")
    assert encryption["enabled"] is True
    assert tf.expression(encryption["kms_key_arn"]) == "var.kms_key_arn"


def test_manifest_bucket_is_private_versioned_encrypted_expiring_and_tls_only(parsed):
    def one(type_: str) -> dict[str, Any]:
        return tf.one_block(parsed, "resource", type_).body

    assert tf.single(one("aws_s3_bucket_versioning"), "versioning_configuration") == {"status": "Enabled"}
    rule = tf.single(one("aws_s3_bucket_server_side_encryption_configuration"), "rule")
    default = tf.single(rule, "apply_server_side_encryption_by_default")
    assert default["sse_algorithm"] == "aws:kms"
    assert tf.expression(default["kms_master_key_id"]) == "var.kms_key_arn"
    block = one("aws_s3_bucket_public_access_block")
    for flag in (
        "block_public_acls",
        "block_public_policy",
        "ignore_public_acls",
        "restrict_public_buckets",
    ):
        assert block[flag] is True, flag
    rules = tf.nested(one("aws_s3_bucket_lifecycle_configuration"), "rule")
    manifests = next(r for r in rules if tf.single(r, "filter").get("prefix") == "${var.manifest_prefix}")
    assert tf.single(manifests, "expiration")["days"] == "${var.manifest_expiration_days}"
    assert tf.single(manifests, "noncurrent_version_expiration")
    policy = next(
        b for b in tf.blocks(parsed, "data", "aws_iam_policy_document") if b.path.parent.name == "ledger"
    )
    denies = [s for s in tf.policy_statements(policy) if s.effect == "Deny"]
    assert any(
        c["variable"] == "aws:SecureTransport" and c["values"] == ["false"]
        for s in denies
        for c in tf.nested(s.body, "condition")
    )


# New path


def test_job_definition_retries_infrastructure_failures_and_exits_on_anything_else(parsed):
    definition = tf.one_block(parsed, "resource", "aws_batch_job_definition").body
    assert definition["platform_capabilities"] == ["FARGATE"]
    strategy = tf.single(definition, "retry_strategy")
    assert strategy["attempts"] == "${var.retry_attempts}"
    rules = tf.nested(strategy, "evaluate_on_exit")
    assert 1 <= len(rules) <= 5
    *retries, last = rules
    # A job that matches no rule is retried: the last rule must match everything, and exit.
    assert last["action"].upper() == "EXIT"
    patterns = {k: v for k, v in last.items() if k.startswith("on_")}
    assert patterns
    assert set(patterns.values()) == {"*"}
    assert all(r["action"].upper() == "RETRY" for r in retries)
    reasons = {r.get("on_status_reason") for r in retries}
    assert {"Host EC2*", "CannotPullContainerError*", "ResourceInitializationError*"} <= reasons
    assert tf.single(definition, "timeout")["attempt_duration_seconds"]


def test_compute_environment_is_fargate_sized_by_the_budget_and_unnamed(parsed):
    environments = tf.blocks(parsed, "resource", "aws_batch_compute_environment")
    assert {b.name for b in environments} == {"controller_managed", "terraform_managed"}
    local = tf.module_locals(parsed, tf.MODULES_DIR / "batch")
    assert tf.expression(local["max_vcpus"]) == "ceil(var.budget * var.vcpus_per_job)"
    for environment in environments:
        # 5.x calls the name compute_environment_name and 6.x calls it name: set neither.
        assert not {
            "name",
            "name_prefix",
            "compute_environment_name",
            "compute_environment_name_prefix",
        } & set(environment.body)
        resources = tf.single(environment.body, "compute_resources")
        assert resources["type"] == "FARGATE"
        assert resources["max_vcpus"] == "${local.max_vcpus}"
    managed = next(b for b in environments if b.name == "controller_managed")
    assert tf.single(managed.body, "lifecycle")["ignore_changes"] == ["${compute_resources[0].max_vcpus}"]
    queue = tf.one_block(parsed, "resource", "aws_batch_job_queue").body
    assert "compute_environments" not in queue  # deprecated in 5.x
    assert tf.single(queue, "compute_environment_order")


# Signals


def test_alarms_watch_the_controllers_metrics(parsed):
    alarms = {b.name: b.body for b in tf.blocks(parsed, "resource", "aws_cloudwatch_metric_alarm")}
    assert set(alarms) == {
        "new_path_failure_rate",
        "reconcile_duplicates",
        "reconcile_orphans",
        "flag_state_not_ok",
        "no_cycle",
        "gate_failing",
    }
    metrics = {
        q["metric"][0]["metric_name"]: q["metric"][0]
        for q in tf.nested(alarms["new_path_failure_rate"], "metric_query")
        if q.get("metric")
    }
    assert set(metrics) == {"ConversionsFailed", "ConversionsSucceeded"}
    assert all(m["dimensions"] == {"Path": "new"} for m in metrics.values())
    assert alarms["reconcile_duplicates"]["metric_name"] == "ReconcileDuplicates"
    assert alarms["reconcile_orphans"]["metric_name"] == "ReconcileOrphans"
    assert alarms["flag_state_not_ok"]["metric_name"] == "FlagStateNotOk"
    assert alarms["no_cycle"]["metric_name"] == "CyclesCompleted"
    assert alarms["no_cycle"]["treat_missing_data"] == "breaching"
    # AppConfig rolls back on INSUFFICIENT_DATA too: a gate with nothing to judge must not.
    gate = alarms["gate_failing"]
    assert (gate["metric_name"], gate["treat_missing_data"], gate.get("dimensions")) == (
        "GateFailing",
        "notBreaching",
        None,
    )
    for name, alarm in alarms.items():
        assert alarm["alarm_actions"] == "${local.alarm_actions}", name
    namespace_default = next(
        body["default"]
        for path, name, body in tf.variables(parsed)
        if path.parent == tf.MODULES_DIR / "signals" and name == "metric_namespace"
    )
    assert namespace_default == "Cutover"


# Security


def _actions(statement: tf.Statement, parsed: dict[Path, dict[str, Any]]) -> list[str]:
    """The statement's actions, with actions picked from a module local resolved to its values."""
    out = []
    for action in statement.strings("actions"):
        expr = tf.expression(action)
        if expr is None:
            out.append(action)
            continue
        match = re.fullmatch(r"local\.(\w+)\[.*\]", expr)
        assert match, f"{statement.label}: cannot read actions {action!r}"
        local = tf.module_locals(parsed, statement.document.path.parent)[match.group(1)]
        out.extend(a for values in local.values() for a in values)
    return out


def test_no_iam_statement_allows_a_wildcard_action(parsed):
    documents = tf.blocks(parsed, "data", "aws_iam_policy_document")
    assert len(documents) >= 10
    for statement in (s for d in documents for s in tf.policy_statements(d)):
        actions = _actions(statement, parsed)
        assert actions, f"{statement.label}: no actions"
        assert "not_actions" not in statement.body, statement.label
        assert "*" not in actions, f"{statement.label}: action '*'"
        if statement.effect == "Allow":
            wild = [a for a in actions if "*" in a]
            assert not wild, f"{statement.label}: wildcard actions {wild}"
        else:
            # Denying every action of a service (the TLS-only bucket policy) is the safe direction.
            assert statement.effect == "Deny", statement.label


def test_resource_star_only_for_actions_without_resource_level_permissions(parsed):
    key_policy = tf.one_block(parsed, "resource", "aws_kms_key").body["policy"]
    for document in tf.blocks(parsed, "data", "aws_iam_policy_document"):
        is_key_policy = key_policy == f"${{data.aws_iam_policy_document.{document.name}.json}}"
        for statement in tf.policy_statements(document):
            if "*" not in statement.strings("resources"):
                continue
            if is_key_policy:
                continue  # in a key policy, "*" is the key itself
            extra = set(statement.strings("actions")) - ACTIONS_WITHOUT_RESOURCE_LEVEL
            assert not extra, f"{statement.label}: {sorted(extra)} on '*'"


def test_star_resources_are_explained_where_they_are_written():
    found = 0
    for path in tf.tf_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if re.search(r'resources\s*=\s*\["\*"\]', line):
                found += 1
                window = "\n".join(lines[max(0, number - 12) : number + 1])
                assert re.search(r"#.*(no resource-level permissions|is this key)", window), (
                    f"{path}:{number + 1}: Resource '*' without a comment saying why"
                )
    assert found > 0


def test_every_policy_is_a_policy_document_the_tests_can_read(parsed):
    policies = 0
    for block in tf.blocks(parsed, "resource"):
        for attribute in ("policy", "assume_role_policy"):
            if attribute in block.body:
                policies += 1
                value = tf.expression(block.body[attribute]) or ""
                assert re.fullmatch(r"data\.aws_iam_policy_document\.\w+(\[\d+\])?\.json", value), (
                    f"{block.address}.{attribute} = {block.body[attribute]!r}"
                )
    assert policies >= 10
    for banned in (
        "aws_iam_policy",
        "aws_iam_role_policy_attachment",
        "aws_iam_user",
        "aws_iam_access_key",
    ):
        assert not tf.blocks(parsed, "resource", banned), banned
    for block in tf.blocks(parsed, "resource", "aws_iam_role"):
        assert "managed_policy_arns" not in block.body, block.address
        assert "inline_policy" not in block.body, block.address


def test_data_at_rest_uses_the_customer_managed_key(parsed):
    key = tf.one_block(parsed, "resource", "aws_kms_key").body
    assert key["enable_key_rotation"] is True
    for group in tf.blocks(parsed, "resource", "aws_cloudwatch_log_group"):
        assert tf.expression(group.body["kms_key_id"]) == "var.kms_key_arn", group.address
        assert tf.expression(group.body["retention_in_days"]) == "var.log_retention_days", group.address
    topic = tf.one_block(parsed, "resource", "aws_sns_topic").body
    assert tf.expression(topic["kms_master_key_id"]) == "var.kms_key_arn"
    project = tf.one_block(parsed, "resource", "aws_codebuild_project").body
    assert tf.expression(project["encryption_key"]) == "var.kms_key_arn"
    root = tf.load(tf.TERRAFORM_DIR / "main.tf")
    for entry in root["module"]:
        for name, body in entry.items():
            if "kms_key_arn" in body:
                assert body["kms_key_arn"] == "${aws_kms_key.cutover.arn}", name


def test_every_checkov_skip_is_inline_with_a_reason():
    skips = 0
    for path in tf.tf_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "checkov" in line.lower():
                assert re.fullmatch(r"\s*#checkov:skip=CKV2?_AWS_\d+:\S.{20,}", line), (
                    f"{path}:{number}: a skip needs a check id and a reason"
                )
                skips += 1
    assert skips > 0


# Variables and versions


def test_every_variable_has_a_type_and_a_description(parsed):
    count = 0
    for path, name, body in tf.variables(parsed):
        count += 1
        assert str(body.get("type", "")).strip(), f"{path}: variable {name} has no type"
        description = str(body.get("description", "")).strip()
        assert len(description) > 10, f"{path}: variable {name} has no description"
    assert count > 50


def test_root_variables_that_can_be_wrong_are_validated(parsed):
    unvalidated = {
        name
        for path, name, body in tf.variables(parsed)
        if path.parent == tf.TERRAFORM_DIR and not body.get("validation")
    }
    # Free-form by nature: tags, image references, the job command, the optional schedule
    # (validated in the signals module) and plain switches.
    assert unvalidated <= {
        "tags",
        "appconfig_agent_image",
        "job_command",
        "trigger_schedule",
        "controller_manages_max_vcpus",
        "ledger_deletion_protection",
    }, unvalidated


def test_tfvars_example_sets_every_required_variable_and_nothing_unknown(parsed):
    example = tf.load(tf.TERRAFORM_DIR / "terraform.tfvars.example")
    root = {name: body for path, name, body in tf.variables(parsed) if path.parent == tf.TERRAFORM_DIR}
    assert set(example) <= set(root), set(example) - set(root)
    required = {name for name, body in root.items() if "default" not in body}
    assert required <= set(example), required - set(example)


@pytest.mark.parametrize(
    ("version", "admitted"),
    [
        ("5.99.0", False),
        ("5.100.0", True),
        ("6.0.0", True),
        ("6.61.0", True),
        ("7.0.0", False),
    ],
)
def test_provider_is_pinned_to_5_100_up_to_but_excluding_7(parsed, version, admitted):
    pinned = 0
    for path, doc in parsed.items():
        for block in doc.get("terraform", []):
            required = block["required_version"]
            assert tf.version_satisfies("1.5.0", required)
            assert not tf.version_satisfies("1.4.9", required)
            providers = {k: v for entry in block["required_providers"] for k, v in entry.items()}
            assert providers["aws"]["source"] == "hashicorp/aws", path
            assert tf.version_satisfies(version, providers["aws"]["version"]) is admitted, path
            pinned += 1
    assert pinned == 1 + len(tf.MODULE_NAMES)


def test_no_argument_or_attribute_that_provider_6_renamed_or_deprecated():
    for path in tf.tf_files():
        text = path.read_text(encoding="utf-8")
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert "compute_environment_name" not in code, path
        assert "data.aws_region" not in code, path  # .name is deprecated in 6.x, .region absent in 5.x
        assert not re.search(r"^\s*compute_environments\s*=", code, re.M), path


def _statements_of(parsed, module: str, document: str) -> dict[str, Any]:
    """The statements of one module's policy document, by sid."""
    for block in tf.blocks(parsed, "data", "aws_iam_policy_document"):
        if block.path.parent.name == module and block.name == document:
            return {s.body.get("sid"): s for s in tf.policy_statements(block)}
    raise AssertionError(f"no policy document {document} in module {module}")


@pytest.mark.parametrize(
    ("module", "document", "path"), [("batch", "job", "new"), ("codebuild", "manifests", "legacy")]
)
def test_a_job_or_build_writes_only_results_of_its_own_path(parsed, module, document, path):
    """A job or build may read its path's manifests and write results, nothing else: not a
    manifest (which would change what another dispatch owns), not the other path's objects."""
    statements = _statements_of(parsed, module, document)
    directory = TERRAFORM_DIR / "modules" / module
    local = tf.module_locals(parsed, directory)
    writes = [s for s in statements.values() if "s3:PutObject" in s.strings("actions")]
    assert [s.strings("resources") for s in writes] == [["${local.result_objects}"]]
    assert local["result_objects"].endswith(f"${{var.manifest_prefix}}{path}/*/results/*")
    reads = [s for s in statements.values() if "s3:GetObject" in s.strings("actions")]
    assert [s.strings("resources") for s in reads] == [["${local.manifest_objects}"]]
    assert local["manifest_objects"].endswith(f"${{var.manifest_prefix}}{path}/*")


def test_the_controller_stops_only_jobs_it_tagged_and_reads_the_fargate_quota(parsed):
    """CancelJob / TerminateJob are allowed only on jobs carrying cutover's batch tag (job ARNs are
    known only at run time, so the tag names them), and the Fargate vCPU quota the new path's
    concurrency is planned with can be read."""
    statements = _statements_of(parsed, "controller", "task")
    stop = [
        s
        for s in statements.values()
        if {"batch:CancelJob", "batch:TerminateJob"} & set(s.strings("actions"))
    ]
    assert len(stop) == 1
    (condition,) = tf.nested(stop[0].body, "condition")
    assert (condition["test"], condition["variable"], condition["values"]) == (
        "Null",
        "aws:ResourceTag/cutover:batch",
        ["false"],
    )
    quota = [s for s in statements.values() if "servicequotas:GetServiceQuota" in s.strings("actions")]
    assert len(quota) == 1
    (resource,) = quota[0].strings("resources")
    assert resource.endswith(":fargate/L-3032A538")
    from new_adapter.batch import FARGATE_VCPU_QUOTA_CODE

    assert resource.endswith(FARGATE_VCPU_QUOTA_CODE)
