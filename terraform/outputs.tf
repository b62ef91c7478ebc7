output "controller_status_url" {
  description = "The controller's /status, reachable from controller_allowed_cidr_blocks; the dashboard is at / on the same host."
  value       = module.controller.status_url
}

output "controller_cluster" {
  description = "ECS cluster of the controller."
  value       = module.controller.cluster_name
}

output "controller_service" {
  description = "ECS service of the controller."
  value       = module.controller.service_name
}

output "controller_environment" {
  description = "The CUTOVER_* environment the controller runs with (run `cutover flag ...` with the same AppConfig names)."
  value       = module.controller.environment
}

output "appconfig" {
  description = "AppConfig application, environment, profile and deployment strategy the flag lives in."
  value = {
    application_id         = module.appconfig.application_id
    application_name       = module.appconfig.application_name
    environment_id         = module.appconfig.environment_id
    environment_name       = module.appconfig.environment_name
    profile_id             = module.appconfig.configuration_profile_id
    profile_name           = module.appconfig.profile_name
    flag_key               = module.appconfig.flag_key
    deployment_strategy_id = module.appconfig.deployment_strategy_id
  }
}

output "ledger_table_name" {
  description = "DynamoDB ledger table."
  value       = module.ledger.table_name
}

output "manifest_bucket" {
  description = "S3 bucket of manifests and results."
  value       = module.ledger.bucket_name
}

output "batch_job_queue_arn" {
  description = "The new path's job queue."
  value       = module.batch.job_queue_arn
}

output "batch_job_definition_name" {
  description = "The new path's job definition."
  value       = module.batch.job_definition_name
}

output "batch_compute_environment_arn" {
  description = "The new path's Fargate compute environment."
  value       = module.batch.compute_environment_arn
}

output "batch_max_vcpus" {
  description = "max_vcpus of the compute environment at creation (budget x job_vcpus): the account's Fargate On-Demand vCPU quota must be at least this."
  value       = module.batch.max_vcpus
}

output "legacy_project_name" {
  description = "The old path's CodeBuild project."
  value       = module.codebuild.project_name
}

output "notification_topic_arn" {
  description = "SNS topic of alarms, terminal failures and flag changes: subscribe the team's channel."
  value       = module.signals.topic_arn
}

output "alarm_names" {
  description = "CloudWatch alarms to watch during the migration."
  value       = module.signals.alarm_names
}

output "kms_key_arn" {
  description = "Customer-managed key of the ledger, manifests, topic and logs."
  value       = aws_kms_key.cutover.arn
}
