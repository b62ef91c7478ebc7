output "topic_arn" {
  description = "ARN of the notification topic (CUTOVER_SNS_TOPIC_ARN)."
  value       = aws_sns_topic.notifications.arn
}

output "new_path_failure_alarm_arn" {
  description = "ARN of the new-path failure-rate alarm that AppConfig monitors."
  value       = aws_cloudwatch_metric_alarm.new_path_failure_rate.arn
}

output "gate_failing_alarm_arn" {
  description = "ARN of the alarm on a failing rollout gate that AppConfig monitors."
  value       = aws_cloudwatch_metric_alarm.gate_failing.arn
}

output "alarm_names" {
  description = "Names of the alarms, by what they watch."
  value = {
    new_path_failure_rate = aws_cloudwatch_metric_alarm.new_path_failure_rate.alarm_name
    gate_failing          = aws_cloudwatch_metric_alarm.gate_failing.alarm_name
    reconcile_duplicates  = aws_cloudwatch_metric_alarm.reconcile_duplicates.alarm_name
    reconcile_orphans     = aws_cloudwatch_metric_alarm.reconcile_orphans.alarm_name
    flag_state_not_ok     = aws_cloudwatch_metric_alarm.flag_state_not_ok.alarm_name
    no_cycle              = aws_cloudwatch_metric_alarm.no_cycle.alarm_name
  }
}

output "trigger_schedule_arn" {
  description = "ARN of the trigger schedule, or null when there is none."
  value       = one(aws_scheduler_schedule.trigger[*].arn)
}
