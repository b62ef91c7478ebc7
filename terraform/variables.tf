variable "region" {
  description = "AWS region everything is created in."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-west-1."
  }
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "cutover"

  validation {
    # The manifest bucket is named <name>-manifests-<account>-<region>, at most 63 characters.
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name))
    error_message = "name must be 2-20 lowercase letters, digits or '-', starting with a letter."
  }
}

variable "tags" {
  description = "Tags given to every resource (through the provider's default tags)."
  type        = map(string)
  default     = {}
}

# Network

variable "vpc_id" {
  description = "VPC of the controller and the new path's jobs."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "private_subnet_ids" {
  description = "Private subnets (in two or more availability zones) of the controller and the jobs; they reach AWS APIs through NAT or VPC endpoints."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 1 && length(var.private_subnet_ids) <= 16 && alltrue([for s in var.private_subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "private_subnet_ids must hold 1-16 subnet ids."
  }
}

variable "controller_allowed_cidr_blocks" {
  description = "Networks that may reach the controller's /status, /metrics, API and dashboard (the VPC, a VPN range). It is never public."
  type        = list(string)

  validation {
    condition     = length(var.controller_allowed_cidr_blocks) >= 1 && alltrue([for c in var.controller_allowed_cidr_blocks : can(cidrnetmask(c)) && try(tonumber(split("/", c)[1]) >= 8, false)])
    error_message = "controller_allowed_cidr_blocks must hold at least one IPv4 CIDR block, none wider than /8 (so not 0.0.0.0/0, nor 0.0.0.0/1 and 128.0.0.0/1)."
  }
}

variable "job_security_group_ids" {
  description = "Extra security groups of the new path's jobs, e.g. the one that lets them reach the database the conversions read."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.job_security_group_ids) <= 4 && alltrue([for s in var.job_security_group_ids : can(regex("^sg-[0-9a-f]+$", s))])
    error_message = "job_security_group_ids may hold at most 4 security group ids."
  }
}

# Controller

variable "controller_image" {
  description = "Container image of the controller (its entry point has the `cutover` command)."
  type        = string

  validation {
    condition     = length(trimspace(var.controller_image)) > 0
    error_message = "controller_image must not be empty."
  }
}

variable "controller_desired_count" {
  description = "Controller replicas, for availability (the ledger makes several safe); nothing scales them automatically."
  type        = number
  default     = 2

  validation {
    condition     = var.controller_desired_count >= 1 && var.controller_desired_count <= 10 && floor(var.controller_desired_count) == var.controller_desired_count
    error_message = "controller_desired_count must be a whole number between 1 and 10."
  }
}

variable "appconfig_agent_image" {
  description = "Image of the AWS AppConfig Agent sidecar."
  type        = string
  default     = "public.ecr.aws/aws-appconfig/aws-appconfig-agent:2.x"
}

variable "cycle_seconds" {
  description = "Seconds between controller cycles (CUTOVER_CYCLE_SECONDS)."
  type        = number
  default     = 5

  validation {
    condition     = var.cycle_seconds > 0 && var.cycle_seconds <= 3600
    error_message = "cycle_seconds must be in (0, 3600]."
  }
}

variable "api_token_secret_arn" {
  description = "Secrets Manager secret with the bearer token for the controller's mutating endpoints (CUTOVER_API_TOKEN). Required: the controller's task listens on all of its interfaces."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.api_token_secret_arn))
    error_message = "api_token_secret_arn must be a Secrets Manager secret ARN: the controller listens on all of its task's interfaces, so a token is required."
  }
}

variable "ecr_repository_arns" {
  description = "ECR repositories the controller and job images are pulled from (empty for public images)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.ecr_repository_arns : can(regex("^arn:[a-z-]+:ecr:[a-z0-9-]+:[0-9]{12}:repository/.+$", a))])
    error_message = "ecr_repository_arns must hold ECR repository ARNs."
  }
}

# Capacity

variable "budget" {
  description = "Conversions in flight on both paths together, at most (CUTOVER_BUDGET). The database sees this much work whatever the flag says."
  type        = number
  default     = 20

  validation {
    condition     = var.budget >= 1 && var.budget <= 10000 && floor(var.budget) == var.budget
    error_message = "budget must be a whole number between 1 and 10000."
  }
}

variable "job_vcpus" {
  description = "vCPUs of one new-path job (a Fargate size). The compute environment's max_vcpus is budget x job_vcpus; the account's Fargate vCPU quota must be at least that."
  type        = number
  default     = 2

  validation {
    condition     = contains([0.25, 0.5, 1, 2, 4, 8, 16], var.job_vcpus)
    error_message = "job_vcpus must be one of the Fargate sizes 0.25, 0.5, 1, 2, 4, 8, 16."
  }
}

variable "job_memory_mib" {
  description = "Memory of one new-path job in MiB (must pair with job_vcpus as Fargate allows; 2 vCPU: 4096-16384)."
  type        = number
  default     = 4096

  validation {
    condition     = var.job_memory_mib >= 512 && floor(var.job_memory_mib) == var.job_memory_mib
    error_message = "job_memory_mib must be a whole number of MiB, at least 512."
  }
}

variable "controller_manages_max_vcpus" {
  description = "The controller resizes the compute environment's max_vcpus to the new path's share of the budget each cycle (recommended). false: Terraform owns max_vcpus and the controller holds submissions back itself. Changing it replaces the compute environment."
  type        = bool
  default     = true
}

# New path

variable "job_image" {
  description = "Container image of the conversion job."
  type        = string

  validation {
    condition     = length(trimspace(var.job_image)) > 0
    error_message = "job_image must not be empty."
  }
}

variable "job_command" {
  description = "Command of the conversion job container; null keeps the image's own."
  type        = list(string)
  default     = null
}

variable "job_attempt_timeout_seconds" {
  description = "Seconds one job attempt may run before Batch stops it (timed-out attempts are not retried)."
  type        = number
  default     = 3600

  validation {
    condition     = var.job_attempt_timeout_seconds >= 60 && floor(var.job_attempt_timeout_seconds) == var.job_attempt_timeout_seconds
    error_message = "job_attempt_timeout_seconds must be a whole number, at least 60."
  }
}

# Old path

variable "legacy" {
  description = <<-EOT
    The old path's CodeBuild project. With create_project = true it is created here from the other
    fields; with false, the existing project project_name is used and its service role
    (existing_service_role_name) is given access to the manifests.
  EOT
  type = object({
    create_project             = optional(bool, true)
    project_name               = string
    existing_service_role_name = optional(string)
    image                      = optional(string, "aws/codebuild/amazonlinux2-x86_64-standard:5.0")
    compute_type               = optional(string, "BUILD_GENERAL1_MEDIUM")
    source_type                = optional(string, "S3")
    source_location            = optional(string)
    buildspec                  = optional(string)
    build_timeout_minutes      = optional(number, 480)
    environment_variables      = optional(map(string), {})
  })

  validation {
    condition     = var.legacy.create_project || var.legacy.existing_service_role_name != null
    error_message = "legacy.existing_service_role_name is required when legacy.create_project is false."
  }
}

# Flag

variable "appconfig_application_name" {
  description = "AppConfig application (CUTOVER_APPCONFIG_APPLICATION)."
  type        = string
  default     = "cutover"

  validation {
    condition     = length(var.appconfig_application_name) >= 1 && length(var.appconfig_application_name) <= 64
    error_message = "appconfig_application_name must be 1-64 characters."
  }
}

variable "appconfig_environment_name" {
  description = "AppConfig environment (CUTOVER_APPCONFIG_ENVIRONMENT)."
  type        = string
  default     = "prod"

  validation {
    condition     = length(var.appconfig_environment_name) >= 1 && length(var.appconfig_environment_name) <= 64
    error_message = "appconfig_environment_name must be 1-64 characters."
  }
}

variable "appconfig_profile_name" {
  description = "AppConfig feature-flag profile (CUTOVER_APPCONFIG_PROFILE)."
  type        = string
  default     = "migration-flags"

  validation {
    condition     = length(var.appconfig_profile_name) >= 1 && length(var.appconfig_profile_name) <= 128
    error_message = "appconfig_profile_name must be 1-128 characters."
  }
}

variable "flag_key" {
  description = "Key of the migration flag in the profile (CUTOVER_FLAG_KEY)."
  type        = string
  default     = "migrated_tenants"

  validation {
    condition     = can(regex("^[a-z][a-zA-Z0-9_-]{0,63}$", var.flag_key))
    error_message = "flag_key must start with a lowercase letter and hold at most 64 letters, digits, '_' or '-'."
  }
}

variable "flag_bake_minutes" {
  description = "Minutes AppConfig watches the new path's failure alarm after a flag version reached every controller, rolling it back by itself on ALARM."
  type        = number
  default     = 10

  validation {
    condition     = var.flag_bake_minutes >= 1 && var.flag_bake_minutes <= 1440 && floor(var.flag_bake_minutes) == var.flag_bake_minutes
    error_message = "flag_bake_minutes must be a whole number between 1 and 1440."
  }
}

variable "validator_zip_path" {
  description = "Path of the flag validator's Lambda package (see README: Build the validator package)."
  type        = string

  validation {
    condition     = endswith(var.validator_zip_path, ".zip")
    error_message = "validator_zip_path must name a .zip file."
  }
}

# Signals

variable "failure_rate_percent" {
  description = "New-path failure rate (percent of finished conversions per minute) that sets off the failure alarm and rolls a baking flag version back."
  type        = number
  default     = 10

  validation {
    condition     = var.failure_rate_percent > 0 && var.failure_rate_percent <= 100
    error_message = "failure_rate_percent must be in (0, 100]."
  }
}

variable "failure_min_conversions" {
  description = "Finished new-path conversions a minute needs before its failure rate counts."
  type        = number
  default     = 5

  validation {
    condition     = var.failure_min_conversions >= 1 && floor(var.failure_min_conversions) == var.failure_min_conversions
    error_message = "failure_min_conversions must be a whole number, at least 1."
  }
}

variable "no_cycle_minutes" {
  description = "Minutes without a completed controller cycle before the stalled-controller alarm fires."
  type        = number
  default     = 10

  validation {
    condition     = var.no_cycle_minutes >= 1 && var.no_cycle_minutes <= 1440 && floor(var.no_cycle_minutes) == var.no_cycle_minutes
    error_message = "no_cycle_minutes must be a whole number between 1 and 1440."
  }
}

variable "flag_not_ok_minutes" {
  description = "Minutes the controller's flag may be other than ok before the flag alarm fires."
  type        = number
  default     = 5

  validation {
    condition     = var.flag_not_ok_minutes >= 1 && var.flag_not_ok_minutes <= 1440 && floor(var.flag_not_ok_minutes) == var.flag_not_ok_minutes
    error_message = "flag_not_ok_minutes must be a whole number between 1 and 1440."
  }
}

variable "trigger_schedule" {
  description = "Optional EventBridge Scheduler schedule that feeds conversions to the controller from outside (SQS queue or Lambda target); null: none."
  type = object({
    expression = string
    target_arn = string
    input      = optional(string, "{}")
    timezone   = optional(string, "UTC")
  })
  default = null
}

# Retention and protection

variable "log_retention_days" {
  description = "Days every log group keeps its logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }
}

variable "manifest_expiration_days" {
  description = "Days after which manifests and results expire."
  type        = number
  default     = 30

  validation {
    condition     = var.manifest_expiration_days >= 1 && floor(var.manifest_expiration_days) == var.manifest_expiration_days
    error_message = "manifest_expiration_days must be a whole number, at least 1."
  }
}

variable "ledger_deletion_protection" {
  description = "Protect the ledger table from deletion (turn off only to tear down a test account)."
  type        = bool
  default     = true
}
