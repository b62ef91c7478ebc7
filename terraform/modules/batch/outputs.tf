output "job_queue_arn" {
  description = "ARN of the job queue (CUTOVER_BATCH_JOB_QUEUE)."
  value       = aws_batch_job_queue.jobs.arn
}

output "job_queue_name" {
  description = "Name of the job queue."
  value       = aws_batch_job_queue.jobs.name
}

output "job_definition_name" {
  description = "Name of the job definition (CUTOVER_BATCH_JOB_DEFINITION); submissions use its latest active revision."
  value       = aws_batch_job_definition.conversion.name
}

output "job_definition_arn" {
  description = "ARN of the current revision of the job definition."
  value       = aws_batch_job_definition.conversion.arn
}

output "job_definition_arn_prefix" {
  description = "ARN of the job definition without its revision."
  value       = aws_batch_job_definition.conversion.arn_prefix
}

output "compute_environment_arn" {
  description = "ARN of the Fargate compute environment (CUTOVER_BATCH_COMPUTE_ENVIRONMENT); its name is generated."
  value       = local.compute_environment_arn
}

output "max_vcpus" {
  description = "max_vcpus the compute environment was created with: budget x vCPUs per job."
  value       = local.max_vcpus
}

output "vcpus_per_job" {
  description = "vCPUs of one job."
  value       = var.vcpus_per_job
}

output "security_group_id" {
  description = "Security group of the jobs."
  value       = aws_security_group.jobs.id
}

output "log_group_name" {
  description = "Log group of the jobs."
  value       = aws_cloudwatch_log_group.jobs.name
}
