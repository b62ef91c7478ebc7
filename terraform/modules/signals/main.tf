# Notifications, the alarms ops and AppConfig watch, and the optional trigger schedule.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

resource "aws_sns_topic" "notifications" {
  name              = "${var.name}-notifications"
  kms_master_key_id = var.kms_key_arn
  tags              = var.tags
}

data "aws_iam_policy_document" "topic" {
  statement {
    sid       = "AlarmsPublish"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.notifications.arn]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.notifications.arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sns_topic_policy" "notifications" {
  arn    = aws_sns_topic.notifications.arn
  policy = data.aws_iam_policy_document.topic.json
}

locals {
  alarm_actions = [aws_sns_topic.notifications.arn]
}

# New path failing: failed / (failed + succeeded) per minute, only for minutes with enough
# finished conversions to mean something. AppConfig's environment monitors this alarm, so a
# flag version that moves tenants onto a failing path is rolled back during the bake time.
resource "aws_cloudwatch_metric_alarm" "new_path_failure_rate" {
  alarm_name          = "${var.name}-new-path-failure-rate"
  alarm_description   = "More than ${var.failure_rate_percent}% of new-path (AWS Batch) conversions failed in ${ceil(var.failure_evaluation_minutes / 2)} of the last ${var.failure_evaluation_minutes} minutes. AppConfig rolls back a flag deployment that is baking while this is in ALARM."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.failure_rate_percent
  evaluation_periods  = var.failure_evaluation_minutes
  datapoints_to_alarm = ceil(var.failure_evaluation_minutes / 2)
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  metric_query {
    id = "failed"

    metric {
      namespace   = var.metric_namespace
      metric_name = "ConversionsFailed"
      dimensions  = { Path = "new" }
      period      = 60
      stat        = "Sum"
    }
  }

  metric_query {
    id = "succeeded"

    metric {
      namespace   = var.metric_namespace
      metric_name = "ConversionsSucceeded"
      dimensions  = { Path = "new" }
      period      = 60
      stat        = "Sum"
    }
  }

  metric_query {
    id         = "finished"
    expression = "FILL(failed, 0) + FILL(succeeded, 0)"
    label      = "Finished new-path conversions"
  }

  metric_query {
    id          = "failure_rate"
    expression  = "IF(finished >= ${var.failure_min_conversions}, 100 * FILL(failed, 0) / finished, 0)"
    label       = "New-path failure rate (%)"
    return_data = true
  }

  tags = var.tags
}

# A rollout group already on the new path fails its gate: in finished conversions it does worse
# than its thresholds or than the old path (`cutover gate` says why). The controller publishes
# GateFailing without a dimension for any group (and with Group for each). AppConfig's environment
# monitors this alarm, so a flag version that moved a failing group is rolled back while it bakes.
# Missing data is not breaching: AppConfig rolls back on INSUFFICIENT_DATA too, and a controller
# that has nothing to judge (no plan, no group moved) publishes nothing.
resource "aws_cloudwatch_metric_alarm" "gate_failing" {
  alarm_name          = "${var.name}-gate-failing"
  alarm_description   = "A rollout group on the new path has failed its gate for ${var.gate_failing_minutes} minutes (see `cutover gate`). AppConfig rolls back a flag deployment that is baking while this is in ALARM; auto-advance pauses."
  namespace           = var.metric_namespace
  metric_name         = "GateFailing"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = var.gate_failing_minutes
  datapoints_to_alarm = var.gate_failing_minutes
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

# Reconciliation found a conversion that ran on both paths, or on neither. Should never happen.
resource "aws_cloudwatch_metric_alarm" "reconcile_duplicates" {
  alarm_name          = "${var.name}-reconcile-duplicates"
  alarm_description   = "Reconciliation found a conversion that ran on both paths. Exclusive ownership is broken: stop advancing the flag and investigate the ledger."
  namespace           = var.metric_namespace
  metric_name         = "ReconcileDuplicates"
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "reconcile_orphans" {
  alarm_name          = "${var.name}-reconcile-orphans"
  alarm_description   = "Reconciliation found a claimed conversion that ran on neither path."
  namespace           = var.metric_namespace
  metric_name         = "ReconcileOrphans"
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

# The flag the controller routes by is stale, unreachable or invalid. Routing keeps the
# last-known-good flag meanwhile; /status says which state and since when.
resource "aws_cloudwatch_metric_alarm" "flag_state_not_ok" {
  alarm_name          = "${var.name}-flag-state-not-ok"
  alarm_description   = "The controller has not had an ok flag for ${var.flag_not_ok_minutes} minutes (stale, unavailable or invalid). It keeps routing by the last-known-good flag; check /status and the AppConfig Agent sidecar."
  namespace           = var.metric_namespace
  metric_name         = "FlagStateNotOk"
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = var.flag_not_ok_minutes
  datapoints_to_alarm = var.flag_not_ok_minutes
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

# No cycle completed: the controller is down or stuck. Missing data is breaching on purpose.
resource "aws_cloudwatch_metric_alarm" "no_cycle" {
  alarm_name          = "${var.name}-no-cycle"
  alarm_description   = "No controller cycle completed in ${var.no_cycle_minutes} minutes: nothing is being routed or tracked."
  namespace           = var.metric_namespace
  metric_name         = "CyclesCompleted"
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = var.no_cycle_minutes
  datapoints_to_alarm = var.no_cycle_minutes
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

# Optional schedule that feeds conversions to the controller from outside.

locals {
  schedule_target_service = var.trigger_schedule == null ? "" : split(":", var.trigger_schedule.target_arn)[2]
  schedule_target_actions = {
    sqs    = ["sqs:SendMessage"]
    lambda = ["lambda:InvokeFunction"]
  }
}

data "aws_iam_policy_document" "scheduler_assume" {
  count = var.trigger_schedule == null ? 0 : 1

  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  count = var.trigger_schedule == null ? 0 : 1

  name               = "${var.name}-trigger-schedule"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume[0].json
  tags               = var.tags
}

data "aws_iam_policy_document" "scheduler" {
  count = var.trigger_schedule == null ? 0 : 1

  statement {
    sid       = "SendToTarget"
    actions   = local.schedule_target_actions[local.schedule_target_service]
    resources = [var.trigger_schedule.target_arn]
  }

  # The schedule's payload is encrypted with the customer-managed key.
  statement {
    sid       = "DecryptSchedule"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "scheduler" {
  count = var.trigger_schedule == null ? 0 : 1

  name   = "send-to-trigger-target"
  role   = aws_iam_role.scheduler[0].id
  policy = data.aws_iam_policy_document.scheduler[0].json
}

resource "aws_scheduler_schedule" "trigger" {
  count = var.trigger_schedule == null ? 0 : 1

  name                         = "${var.name}-trigger"
  schedule_expression          = var.trigger_schedule.expression
  schedule_expression_timezone = var.trigger_schedule.timezone
  kms_key_arn                  = var.kms_key_arn

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = var.trigger_schedule.target_arn
    role_arn = aws_iam_role.scheduler[0].arn
    input    = var.trigger_schedule.input

    retry_policy {
      maximum_event_age_in_seconds = 3600
      maximum_retry_attempts       = 5
    }
  }
}
