# cutover in one AWS account: the flag, both paths, the ledger, the controller and its signals.
# Apply order and the operating runbook are in README.md.

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, { Application = "cutover" })
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition

  # The controller writes manifests under this prefix and jobs write results next to them; it
  # is fixed in the controller, so it is not a variable here.
  manifest_prefix = "manifests/"

  metric_namespace = "Cutover"
}

# One customer-managed key for the ledger, the manifests, the topic and the logs.

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_109:A key policy's Resource "*" means this key only; administration stays with the account's IAM policies, as in AWS's default key policy.
  #checkov:skip=CKV_AWS_111:A key policy's Resource "*" means this key only; the account root statement delegates to IAM, as in AWS's default key policy.
  #checkov:skip=CKV_AWS_356:A key policy's Resource "*" means this key only.
  statement {
    # Delegates administration and use to the account's IAM policies (AWS's default key policy,
    # spelled out action by action).
    sid = "AccountAdministersThroughIam"
    actions = [
      "kms:CancelKeyDeletion",
      "kms:CreateAlias",
      "kms:CreateGrant",
      "kms:Decrypt",
      "kms:DeleteAlias",
      "kms:DescribeKey",
      "kms:DisableKey",
      "kms:DisableKeyRotation",
      "kms:EnableKey",
      "kms:EnableKeyRotation",
      "kms:Encrypt",
      "kms:GenerateDataKey",
      "kms:GenerateDataKeyWithoutPlaintext",
      "kms:GetKeyPolicy",
      "kms:GetKeyRotationStatus",
      "kms:ListAliases",
      "kms:ListGrants",
      "kms:ListKeyPolicies",
      "kms:ListKeyRotations",
      "kms:ListResourceTags",
      "kms:PutKeyPolicy",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
      "kms:RetireGrant",
      "kms:RevokeGrant",
      "kms:RotateKeyOnDemand",
      "kms:ScheduleKeyDeletion",
      "kms:TagResource",
      "kms:UntagResource",
      "kms:UpdateAlias",
      "kms:UpdateKeyDescription",
    ]
    resources = ["*"] # in a key policy, "*" is this key

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account}:root"]
    }
  }

  statement {
    sid = "CloudWatchLogsEncryptsThisAccountsLogGroups"
    actions = [
      "kms:Decrypt",
      "kms:DescribeKey",
      "kms:Encrypt",
      "kms:GenerateDataKey",
      "kms:GenerateDataKeyWithoutPlaintext",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
    ]
    resources = ["*"] # in a key policy, "*" is this key

    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${var.region}:${local.account}:log-group:*"]
    }
  }

  # Alarms publish to the encrypted topic.
  statement {
    sid       = "CloudWatchAlarmsPublishToTheTopic"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = ["*"] # in a key policy, "*" is this key

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "cutover" {
  description             = "cutover: ledger table, manifest bucket, notification topic, logs."
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
}

resource "aws_kms_alias" "cutover" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.cutover.key_id
}

module "ledger" {
  source = "./modules/ledger"

  table_name               = "${var.name}-ledger"
  bucket_name              = "${var.name}-manifests-${local.account}-${var.region}"
  manifest_prefix          = local.manifest_prefix
  manifest_expiration_days = var.manifest_expiration_days
  kms_key_arn              = aws_kms_key.cutover.arn
  deletion_protection      = var.ledger_deletion_protection
}

module "signals" {
  source = "./modules/signals"

  name                    = var.name
  kms_key_arn             = aws_kms_key.cutover.arn
  metric_namespace        = local.metric_namespace
  failure_rate_percent    = var.failure_rate_percent
  failure_min_conversions = var.failure_min_conversions
  no_cycle_minutes        = var.no_cycle_minutes
  flag_not_ok_minutes     = var.flag_not_ok_minutes
  trigger_schedule        = var.trigger_schedule
}

module "appconfig" {
  source = "./modules/appconfig"

  name               = var.name
  application_name   = var.appconfig_application_name
  environment_name   = var.appconfig_environment_name
  profile_name       = var.appconfig_profile_name
  flag_key           = var.flag_key
  bake_minutes       = var.flag_bake_minutes
  monitor_alarm_arns = [module.signals.new_path_failure_alarm_arn, module.signals.gate_failing_alarm_arn]
  validator_zip_path = var.validator_zip_path
  kms_key_arn        = aws_kms_key.cutover.arn
  log_retention_days = var.log_retention_days
}

module "batch" {
  source = "./modules/batch"

  name                         = var.name
  vpc_id                       = var.vpc_id
  subnet_ids                   = var.private_subnet_ids
  extra_security_group_ids     = var.job_security_group_ids
  job_image                    = var.job_image
  job_command                  = var.job_command
  vcpus_per_job                = var.job_vcpus
  memory_per_job               = var.job_memory_mib
  budget                       = var.budget
  controller_manages_max_vcpus = var.controller_manages_max_vcpus
  attempt_timeout_seconds      = var.job_attempt_timeout_seconds
  manifest_bucket_arn          = module.ledger.bucket_arn
  manifest_prefix              = local.manifest_prefix
  kms_key_arn                  = aws_kms_key.cutover.arn
  ecr_repository_arns          = var.ecr_repository_arns
  log_retention_days           = var.log_retention_days
}

module "codebuild" {
  source = "./modules/codebuild"

  create_project             = var.legacy.create_project
  project_name               = var.legacy.project_name
  existing_service_role_name = var.legacy.existing_service_role_name
  image                      = var.legacy.image
  compute_type               = var.legacy.compute_type
  source_type                = var.legacy.source_type
  source_location            = var.legacy.source_location
  buildspec                  = var.legacy.buildspec
  build_timeout_minutes      = var.legacy.build_timeout_minutes
  environment_variables      = var.legacy.environment_variables
  manifest_bucket_arn        = module.ledger.bucket_arn
  manifest_prefix            = local.manifest_prefix
  kms_key_arn                = aws_kms_key.cutover.arn
  log_retention_days         = var.log_retention_days
}

module "controller" {
  source = "./modules/controller"

  name                 = var.name
  vpc_id               = var.vpc_id
  subnet_ids           = var.private_subnet_ids
  allowed_cidr_blocks  = var.controller_allowed_cidr_blocks
  image                = var.controller_image
  agent_image          = var.appconfig_agent_image
  desired_count        = var.controller_desired_count
  budget               = var.budget
  cycle_seconds        = var.cycle_seconds
  manages_max_vcpus    = var.controller_manages_max_vcpus
  api_token_secret_arn = var.api_token_secret_arn
  metric_namespace     = local.metric_namespace
  kms_key_arn          = aws_kms_key.cutover.arn
  ecr_repository_arns  = var.ecr_repository_arns
  log_retention_days   = var.log_retention_days

  appconfig = {
    application       = module.appconfig.application_name
    environment       = module.appconfig.environment_name
    profile           = module.appconfig.profile_name
    flag_key          = module.appconfig.flag_key
    configuration_arn = module.appconfig.configuration_arn
  }

  ledger_table_name    = module.ledger.table_name
  ledger_table_arn     = module.ledger.table_arn
  manifest_bucket_name = module.ledger.bucket_name
  manifest_bucket_arn  = module.ledger.bucket_arn
  manifest_prefix      = local.manifest_prefix

  batch = {
    job_queue_arn             = module.batch.job_queue_arn
    job_definition_name       = module.batch.job_definition_name
    job_definition_arn_prefix = module.batch.job_definition_arn_prefix
    compute_environment_arn   = module.batch.compute_environment_arn
  }

  legacy_project_name = module.codebuild.project_name
  legacy_project_arn  = module.codebuild.project_arn
  sns_topic_arn       = module.signals.topic_arn
}
