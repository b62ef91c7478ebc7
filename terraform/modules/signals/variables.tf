variable "name" {
  description = "Prefix of the topic, alarm and schedule names."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,40}$", var.name))
    error_message = "name must be 1-40 letters, digits, '_' or '-'."
  }
}

variable "kms_key_arn" {
  description = "ARN of the customer-managed KMS key that encrypts the notification topic. Its policy must let cloudwatch.amazonaws.com use it, or alarms cannot publish."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be the ARN of a KMS key."
  }
}

variable "metric_namespace" {
  description = "CloudWatch namespace the controller publishes its metrics in."
  type        = string
  default     = "Cutover"

  validation {
    condition     = can(regex("^[A-Za-z0-9._/#:-]{1,255}$", var.metric_namespace)) && !startswith(var.metric_namespace, "AWS/")
    error_message = "metric_namespace must be a custom CloudWatch namespace (not AWS/...)."
  }
}

variable "failure_rate_percent" {
  description = "New-path failure rate (failed / finished conversions, in percent, per minute) at which the failure alarm fires. AppConfig watches this alarm and rolls a flag version back by itself."
  type        = number
  default     = 10

  validation {
    condition     = var.failure_rate_percent > 0 && var.failure_rate_percent <= 100
    error_message = "failure_rate_percent must be in (0, 100]."
  }
}

variable "failure_min_conversions" {
  description = "Finished new-path conversions a minute must have before its failure rate counts, so that one failure out of one does not roll a flag back."
  type        = number
  default     = 5

  validation {
    condition     = var.failure_min_conversions >= 1 && floor(var.failure_min_conversions) == var.failure_min_conversions
    error_message = "failure_min_conversions must be a whole number, at least 1."
  }
}

variable "failure_evaluation_minutes" {
  description = "Minutes the failure rate is evaluated over; the alarm fires when at least half of them (rounded up) breach. Keep it shorter than the AppConfig bake time."
  type        = number
  default     = 3

  validation {
    condition     = var.failure_evaluation_minutes >= 1 && var.failure_evaluation_minutes <= 60 && floor(var.failure_evaluation_minutes) == var.failure_evaluation_minutes
    error_message = "failure_evaluation_minutes must be a whole number between 1 and 60."
  }
}

variable "gate_failing_minutes" {
  description = "Consecutive minutes a rollout group's gate must fail before the gate alarm fires (AppConfig watches it). Keep it shorter than the AppConfig bake time."
  type        = number
  default     = 2

  validation {
    condition     = var.gate_failing_minutes >= 1 && var.gate_failing_minutes <= 60 && floor(var.gate_failing_minutes) == var.gate_failing_minutes
    error_message = "gate_failing_minutes must be a whole number between 1 and 60."
  }
}

variable "no_cycle_minutes" {
  description = "Minutes without a completed controller cycle after which the stalled-controller alarm fires."
  type        = number
  default     = 10

  validation {
    condition     = var.no_cycle_minutes >= 1 && var.no_cycle_minutes <= 1440 && floor(var.no_cycle_minutes) == var.no_cycle_minutes
    error_message = "no_cycle_minutes must be a whole number between 1 and 1440."
  }
}

variable "flag_not_ok_minutes" {
  description = "Consecutive minutes the flag state may be other than ok (stale, unavailable, invalid) before the flag alarm fires."
  type        = number
  default     = 5

  validation {
    condition     = var.flag_not_ok_minutes >= 1 && var.flag_not_ok_minutes <= 1440 && floor(var.flag_not_ok_minutes) == var.flag_not_ok_minutes
    error_message = "flag_not_ok_minutes must be a whole number between 1 and 1440."
  }
}

variable "trigger_schedule" {
  description = <<-EOT
    Optional EventBridge Scheduler schedule for deployments whose conversions are triggered on a
    schedule from outside the controller (the old batch's cron moved in front of cutover). The
    target is an SQS queue or a Lambda function ARN that feeds conversions to the controller;
    the schedule's role may send to (or invoke) exactly that target. null: no schedule.
  EOT
  type = object({
    expression = string
    target_arn = string
    input      = optional(string, "{}")
    timezone   = optional(string, "UTC")
  })
  default = null

  validation {
    condition     = var.trigger_schedule == null || can(regex("^(cron|rate|at)\\(.+\\)$", var.trigger_schedule.expression))
    error_message = "trigger_schedule.expression must be a cron(...), rate(...) or at(...) expression."
  }

  validation {
    condition     = var.trigger_schedule == null || can(regex("^arn:[a-z-]+:(sqs|lambda):", var.trigger_schedule.target_arn))
    error_message = "trigger_schedule.target_arn must be an SQS queue ARN or a Lambda function ARN."
  }
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
