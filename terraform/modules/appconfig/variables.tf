variable "name" {
  description = "Prefix of the names of the resources that are not AppConfig's own (validator function, roles, strategy)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,40}$", var.name))
    error_message = "name must be 1-40 letters, digits, '_' or '-'."
  }
}

variable "application_name" {
  description = "AppConfig application (CUTOVER_APPCONFIG_APPLICATION)."
  type        = string
  default     = "cutover"

  validation {
    condition     = can(regex("^[^\\x00-\\x1f]{1,64}$", var.application_name))
    error_message = "application_name must be 1-64 printable characters."
  }
}

variable "environment_name" {
  description = "AppConfig environment (CUTOVER_APPCONFIG_ENVIRONMENT)."
  type        = string
  default     = "prod"

  validation {
    condition     = can(regex("^[^\\x00-\\x1f]{1,64}$", var.environment_name))
    error_message = "environment_name must be 1-64 printable characters."
  }
}

variable "profile_name" {
  description = "AppConfig feature-flag configuration profile (CUTOVER_APPCONFIG_PROFILE)."
  type        = string
  default     = "migration-flags"

  validation {
    condition     = can(regex("^[^\\x00-\\x1f]{1,128}$", var.profile_name))
    error_message = "profile_name must be 1-128 printable characters."
  }
}

variable "flag_key" {
  description = "Key of the migration flag inside the profile (CUTOVER_FLAG_KEY); its tenant_ids attribute lists the migrated tenants."
  type        = string
  default     = "migrated_tenants"

  validation {
    condition     = can(regex("^[a-z][a-zA-Z0-9_-]{0,63}$", var.flag_key))
    error_message = "flag_key must start with a lowercase letter and hold at most 64 letters, digits, '_' or '-' (AppConfig's rule for flag keys)."
  }
}

variable "bake_minutes" {
  description = "Minutes AppConfig watches the monitored alarms after a flag version reached every controller; an alarm during that time rolls the version back by itself."
  type        = number
  default     = 10

  validation {
    condition     = var.bake_minutes >= 1 && var.bake_minutes <= 1440 && floor(var.bake_minutes) == var.bake_minutes
    error_message = "bake_minutes must be a whole number between 1 and 1440."
  }
}

variable "monitor_alarm_arns" {
  description = "CloudWatch metric alarms the environment monitors during deployments (at most 5): the new path's failure alarm at least."
  type        = list(string)

  validation {
    condition     = length(var.monitor_alarm_arns) >= 1 && length(var.monitor_alarm_arns) <= 5 && alltrue([for a in var.monitor_alarm_arns : can(regex("^arn:[a-z-]+:cloudwatch:[a-z0-9-]+:[0-9]{12}:alarm:.+$", a))])
    error_message = "monitor_alarm_arns must hold 1-5 CloudWatch alarm ARNs."
  }
}

variable "validator_zip_path" {
  description = "Path of the zip that packages the flag validator (flags/validator.py with the flags/ and controller/ packages and their dependencies); terraform/README.md shows how to build it."
  type        = string

  validation {
    condition     = endswith(var.validator_zip_path, ".zip")
    error_message = "validator_zip_path must name a .zip file."
  }
}

variable "validator_handler" {
  description = "Handler of the validator function inside the zip."
  type        = string
  default     = "flags.validator.handler"
}

variable "validator_runtime" {
  description = "Lambda runtime of the validator (the project needs Python 3.11 or newer)."
  type        = string
  default     = "python3.12"

  validation {
    condition     = can(regex("^python3\\.(1[1-9]|[2-9][0-9])$", var.validator_runtime))
    error_message = "validator_runtime must be python3.11 or newer."
  }
}

variable "validator_reserved_concurrency" {
  description = "Concurrent executions reserved for (and capping) the validator; AppConfig runs it once per deployment. An account must keep 10 unreserved, so a new account with a limit of 10 needs -1 (no reservation)."
  type        = number
  default     = 5

  validation {
    condition     = var.validator_reserved_concurrency == -1 || (var.validator_reserved_concurrency >= 1 && floor(var.validator_reserved_concurrency) == var.validator_reserved_concurrency)
    error_message = "validator_reserved_concurrency must be -1 or a whole number from 1."
  }
}

variable "validator_environment" {
  description = "Environment variables of the validator function (encrypted with the KMS key)."
  type        = map(string)
  default     = {}
}

variable "kms_key_arn" {
  description = "ARN of the customer-managed KMS key of the validator's log group and environment."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be the ARN of a KMS key."
  }
}

variable "log_retention_days" {
  description = "Days the validator's logs are kept."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts."
  }
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
