# The routing flag: an AppConfig feature-flag profile whose migrated_tenants flag lists the tenant
# ids on the new path. Terraform owns the resources and the first, empty version; ops publish
# every later version with `cutover flag advance` / `cutover flag rollback`.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  region = split(":", var.kms_key_arn)[3]

  # The definition document of the first version: the flag with its constraints, nobody migrated.
  flag_document = {
    version = "1"
    flags = {
      (var.flag_key) = {
        name        = "Migrated tenants"
        description = "Tenants whose conversions run on the new path (AWS Batch). Disabled: everyone on the old path."
        attributes = {
          tenant_ids = {
            description = "Ids of the migrated tenants, whole numbers from 1."
            constraints = {
              type     = "array"
              required = true
              elements = {
                type    = "number"
                minimum = 1
              }
            }
          }
        }
      }
    }
    values = {
      (var.flag_key) = {
        enabled    = true
        tenant_ids = []
      }
    }
  }
}

resource "aws_appconfig_application" "cutover" {
  name        = var.application_name
  description = "Routing of conversions between the old path (CodeBuild) and the new path (AWS Batch)."
  tags        = var.tags
}

# AppConfig reads the monitored alarms through this role during deployments and bake time.

data "aws_iam_policy_document" "monitor_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["appconfig.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "monitor" {
  name               = "${var.name}-appconfig-monitor"
  description        = "Lets AppConfig read the alarms that roll a bad flag version back."
  assume_role_policy = data.aws_iam_policy_document.monitor_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "monitor" {
  statement {
    sid       = "ReadMonitoredAlarms"
    actions   = ["cloudwatch:DescribeAlarms"]
    resources = var.monitor_alarm_arns
  }
}

resource "aws_iam_role_policy" "monitor" {
  name   = "describe-monitored-alarms"
  role   = aws_iam_role.monitor.id
  policy = data.aws_iam_policy_document.monitor.json
}

resource "aws_appconfig_environment" "this" {
  name           = var.environment_name
  description    = "Where the controllers read the routing flag from."
  application_id = aws_appconfig_application.cutover.id

  dynamic "monitor" {
    for_each = var.monitor_alarm_arns

    content {
      alarm_arn      = monitor.value
      alarm_role_arn = aws_iam_role.monitor.arn
    }
  }

  tags = var.tags

  depends_on = [aws_iam_role_policy.monitor]
}

# The validator: the flags package's checks (whole-number tenant ids, growth limits, no silent
# removals) run by AppConfig on every deployment, console edits included.

resource "aws_cloudwatch_log_group" "validator" {
  name              = "/aws/lambda/${var.name}-flag-validator"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "validator" {
  name               = "${var.name}-flag-validator"
  description        = "Runs the flag validator: its logs, and reads of this application's flag versions and deployments."
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "validator" {
  statement {
    sid       = "WriteValidatorLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.validator.arn}:log-stream:*"]
  }

  # The validator compares a new version with the deployed one (no silent removals, growth limits).
  statement {
    sid = "ReadFlagHistory"
    actions = [
      "appconfig:GetConfigurationProfile",
      "appconfig:GetDeployment",
      "appconfig:GetEnvironment",
      "appconfig:GetHostedConfigurationVersion",
      "appconfig:ListDeployments",
      "appconfig:ListHostedConfigurationVersions",
    ]
    resources = [
      aws_appconfig_application.cutover.arn,
      "${aws_appconfig_application.cutover.arn}/*",
    ]
  }

  statement {
    sid       = "DecryptEnvironment"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["lambda.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "validator" {
  name   = "validate-flags"
  role   = aws_iam_role.validator.id
  policy = data.aws_iam_policy_document.validator.json
}

resource "aws_lambda_function" "validator" {
  #checkov:skip=CKV_AWS_50:The validator runs for milliseconds once per flag deployment; its verdict is in its logs, X-Ray tracing would add a role permission on "*" for nothing.
  #checkov:skip=CKV_AWS_116:AppConfig invokes the validator synchronously and reads the verdict; a dead-letter queue only applies to asynchronous invocations.
  #checkov:skip=CKV_AWS_117:The validator reaches only the AppConfig API; it has no resource in a VPC to talk to.
  #checkov:skip=CKV_AWS_272:The package is built from this repository by the deploying pipeline; code signing is left to the account's signing profile, if it has one.
  function_name                  = "${var.name}-flag-validator"
  description                    = "AppConfig validator of the migration flag."
  role                           = aws_iam_role.validator.arn
  runtime                        = var.validator_runtime
  handler                        = var.validator_handler
  filename                       = var.validator_zip_path
  source_code_hash               = filebase64sha256(var.validator_zip_path)
  timeout                        = 10 # AppConfig gives a validator 15 s, cold start included
  memory_size                    = 256
  reserved_concurrent_executions = var.validator_reserved_concurrency
  kms_key_arn                    = var.kms_key_arn

  dynamic "environment" {
    for_each = length(var.validator_environment) > 0 ? [1] : []

    content {
      variables = var.validator_environment
    }
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.validator.name
  }

  tags = var.tags

  depends_on = [aws_iam_role_policy.validator]
}

resource "aws_lambda_permission" "appconfig" {
  statement_id   = "AppConfigValidatesFlags"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.validator.function_name
  principal      = "appconfig.amazonaws.com"
  source_account = data.aws_caller_identity.current.account_id
}

resource "aws_appconfig_configuration_profile" "flags" {
  application_id = aws_appconfig_application.cutover.id
  name           = var.profile_name
  description    = "The migration flag: which tenants run on the new path."
  location_uri   = "hosted"
  type           = "AWS.AppConfig.FeatureFlags"

  validator {
    type    = "LAMBDA"
    content = aws_lambda_function.validator.arn
  }

  tags = var.tags

  depends_on = [aws_lambda_permission.appconfig]
}

resource "aws_appconfig_hosted_configuration_version" "initial" {
  application_id           = aws_appconfig_application.cutover.id
  configuration_profile_id = aws_appconfig_configuration_profile.flags.configuration_profile_id
  description              = "Initial version: the flag with its constraints, nobody migrated. Later versions are published with `cutover flag advance`."
  content_type             = "application/json"
  content                  = jsonencode(local.flag_document)

  lifecycle {
    # Every argument of a hosted version forces a new version, and AppConfig stamps
    # _createdAt/_updatedAt into feature-flag content, so without this every plan would
    # replace it. Terraform owns the profile; ops own the flag's later values.
    ignore_changes = [content, content_type, description]
  }
}

# All at once, then a bake time: every controller sees a new flag version within one agent poll
# (the ledger settles ownership either way, so a gradual rollout would only widen the window in
# which replicas disagree), and the bake time keeps the alarm monitor able to roll it back.
resource "aws_appconfig_deployment_strategy" "all_at_once_bake" {
  name                           = "${var.name}-all-at-once-bake"
  description                    = "All controllers at once, then ${var.bake_minutes} minutes of alarm watch with automatic rollback."
  deployment_duration_in_minutes = 0
  growth_factor                  = 100
  growth_type                    = "LINEAR"
  final_bake_time_in_minutes     = var.bake_minutes
  replicate_to                   = "NONE"
  tags                           = var.tags
}

resource "aws_appconfig_deployment" "initial" {
  application_id           = aws_appconfig_application.cutover.id
  environment_id           = aws_appconfig_environment.this.environment_id
  configuration_profile_id = aws_appconfig_configuration_profile.flags.configuration_profile_id
  configuration_version    = tostring(aws_appconfig_hosted_configuration_version.initial.version_number)
  deployment_strategy_id   = aws_appconfig_deployment_strategy.all_at_once_bake.id
  description              = "Initial deployment: nobody migrated."
  tags                     = var.tags

  lifecycle {
    # A deployment is a one-off event and all its arguments force a new one: re-creating it
    # would deploy the initial, empty version again and move every migrated tenant back.
    ignore_changes = all
  }
}
