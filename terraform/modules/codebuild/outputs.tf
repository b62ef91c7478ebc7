output "project_name" {
  description = "Name of the legacy CodeBuild project (CUTOVER_LEGACY_PROJECT)."
  value       = var.project_name
}

output "project_arn" {
  description = "ARN of the legacy CodeBuild project."
  value       = local.project_arn
}

output "service_role_name" {
  description = "Name of the project's service role, which was given access to the manifests."
  value       = local.role_name
}

output "log_group_name" {
  description = "Log group of the builds created here, or null for an existing project."
  value       = one(aws_cloudwatch_log_group.builds[*].name)
}
