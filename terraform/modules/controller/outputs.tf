output "cluster_name" {
  description = "ECS cluster of the controller."
  value       = aws_ecs_cluster.this.name
}

output "service_name" {
  description = "ECS service of the controller."
  value       = aws_ecs_service.controller.name
}

output "dns_name" {
  description = "Internal DNS name of the controller replicas."
  value       = "${aws_service_discovery_service.controller.name}.${aws_service_discovery_private_dns_namespace.this.name}"
}

output "status_url" {
  description = "/status of the controller, reachable from the allowed networks."
  value       = "http://${aws_service_discovery_service.controller.name}.${aws_service_discovery_private_dns_namespace.this.name}:${local.port}/status"
}

output "task_role_arn" {
  description = "Role of the controller tasks."
  value       = aws_iam_role.task.arn
}

output "security_group_id" {
  description = "Security group of the controller tasks."
  value       = aws_security_group.controller.id
}

output "log_group_name" {
  description = "Log group of the controller and its agent."
  value       = aws_cloudwatch_log_group.controller.name
}

output "environment" {
  description = "Environment variables given to the controller container."
  value       = local.controller_environment
}

output "secret_environment" {
  description = "Environment variables given to the controller container from Secrets Manager (name => secret ARN)."
  value       = local.controller_secrets
}
