output "application_name" {
  description = "AppConfig application name (CUTOVER_APPCONFIG_APPLICATION)."
  value       = aws_appconfig_application.cutover.name
}

output "environment_name" {
  description = "AppConfig environment name (CUTOVER_APPCONFIG_ENVIRONMENT)."
  value       = aws_appconfig_environment.this.name
}

output "profile_name" {
  description = "AppConfig configuration profile name (CUTOVER_APPCONFIG_PROFILE)."
  value       = aws_appconfig_configuration_profile.flags.name
}

output "flag_key" {
  description = "Key of the migration flag (CUTOVER_FLAG_KEY)."
  value       = var.flag_key
}

output "application_id" {
  description = "AppConfig application id."
  value       = aws_appconfig_application.cutover.id
}

output "environment_id" {
  description = "AppConfig environment id."
  value       = aws_appconfig_environment.this.environment_id
}

output "configuration_profile_id" {
  description = "AppConfig configuration profile id."
  value       = aws_appconfig_configuration_profile.flags.configuration_profile_id
}

output "deployment_strategy_id" {
  description = "Id of the all-at-once-with-bake deployment strategy that `cutover flag advance` and `rollback` deploy with."
  value       = aws_appconfig_deployment_strategy.all_at_once_bake.id
}

output "configuration_arn" {
  description = "ARN the AppConfig data plane authorises reads of this profile in this environment against."
  value       = "${aws_appconfig_application.cutover.arn}/environment/${aws_appconfig_environment.this.environment_id}/configuration/${aws_appconfig_configuration_profile.flags.configuration_profile_id}"
}

output "validator_function_name" {
  description = "Name of the flag validator function."
  value       = aws_lambda_function.validator.function_name
}
