variable "name" {
  description = "Prefix of the job queue, job definition, roles, security group and log group names."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,40}$", var.name))
    error_message = "name must be 1-40 letters, digits, '_' or '-'."
  }
}

variable "vpc_id" {
  description = "VPC of the subnets the Fargate jobs run in."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "subnet_ids" {
  description = "Private subnets for the Fargate jobs (no public IP is assigned: they need a NAT gateway or VPC endpoints for ECR, S3 and CloudWatch Logs)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 1 && length(var.subnet_ids) <= 16 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "subnet_ids must hold 1-16 subnet ids."
  }
}

variable "extra_security_group_ids" {
  description = "Security groups added to the jobs beside the module's own (which only allows HTTPS out), e.g. one that lets them reach the database."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.extra_security_group_ids) <= 4 && alltrue([for s in var.extra_security_group_ids : can(regex("^sg-[0-9a-f]+$", s))])
    error_message = "extra_security_group_ids may hold at most 4 security group ids (Fargate takes 5 in all)."
  }
}

variable "service_role_arn" {
  description = "Service role of the compute environment; null uses the AWSServiceRoleForBatch service-linked role, as AWS recommends."
  type        = string
  default     = null

  validation {
    condition     = var.service_role_arn == null || can(regex("^arn:[a-z-]+:iam::[0-9]{12}:role/.+$", var.service_role_arn))
    error_message = "service_role_arn must be an IAM role ARN or null."
  }
}

variable "job_image" {
  description = "Container image of the conversion job (one conversion per container, or one array child)."
  type        = string

  validation {
    condition     = length(trimspace(var.job_image)) > 0
    error_message = "job_image must not be empty."
  }
}

variable "job_command" {
  description = "Command of the job container; null keeps the image's own."
  type        = list(string)
  default     = null
}

variable "job_environment" {
  description = "Fixed environment variables of every job (per-conversion ones, such as CUTOVER_CONVERSION_ID, are set by the controller at submission)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.job_environment) : !startswith(k, "AWS_BATCH")])
    error_message = "Names starting with AWS_BATCH are reserved by AWS Batch."
  }
}

variable "vcpus_per_job" {
  description = "vCPUs of one job (a valid Fargate size)."
  type        = number
  default     = 2

  validation {
    condition     = contains([0.25, 0.5, 1, 2, 4, 8, 16], var.vcpus_per_job)
    error_message = "vcpus_per_job must be one of the Fargate sizes 0.25, 0.5, 1, 2, 4, 8, 16."
  }
}

variable "memory_per_job" {
  description = "Memory of one job in MiB; must pair with vcpus_per_job as Fargate allows (2 vCPU: 4096-16384 in 1024 steps)."
  type        = number
  default     = 4096

  validation {
    condition     = var.memory_per_job >= 512 && floor(var.memory_per_job) == var.memory_per_job
    error_message = "memory_per_job must be a whole number of MiB, at least 512."
  }
}

variable "budget" {
  description = "Conversions in flight on both paths together, at most (CUTOVER_BUDGET). The compute environment's max_vcpus is budget x vcpus_per_job: the new path can never run more than the whole budget."
  type        = number
  default     = 20

  validation {
    condition     = var.budget >= 1 && floor(var.budget) == var.budget
    error_message = "budget must be a whole number, at least 1."
  }
}

variable "controller_manages_max_vcpus" {
  description = "The controller sets max_vcpus to the new path's share of the budget every cycle (CUTOVER_MANAGE_MAX_VCPUS). Terraform then only sets the initial ceiling and ignores later changes, so an apply can never lift the cap above the share. Changing this replaces the compute environment."
  type        = bool
  default     = true
}

variable "retry_attempts" {
  description = "Attempts per job (1-10). Only infrastructure failures are retried; anything else exits at once."
  type        = number
  default     = 3

  validation {
    condition     = var.retry_attempts >= 1 && var.retry_attempts <= 10 && floor(var.retry_attempts) == var.retry_attempts
    error_message = "retry_attempts must be a whole number between 1 and 10."
  }
}

variable "attempt_timeout_seconds" {
  description = "Seconds one attempt may run before Batch stops it (timed-out attempts are not retried)."
  type        = number
  default     = 3600

  validation {
    condition     = var.attempt_timeout_seconds >= 60 && floor(var.attempt_timeout_seconds) == var.attempt_timeout_seconds
    error_message = "attempt_timeout_seconds must be a whole number, at least 60."
  }
}

variable "manifest_bucket_arn" {
  description = "ARN of the manifest bucket; jobs read their manifest and write their result next to it."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:s3:::[a-z0-9.-]+$", var.manifest_bucket_arn))
    error_message = "manifest_bucket_arn must be an S3 bucket ARN."
  }
}

variable "manifest_prefix" {
  description = "Key prefix of manifests and results in the bucket."
  type        = string
  default     = "manifests/"

  validation {
    condition     = endswith(var.manifest_prefix, "/") && !startswith(var.manifest_prefix, "/")
    error_message = "manifest_prefix must end with '/' and not start with one."
  }
}

variable "kms_key_arn" {
  description = "ARN of the customer-managed KMS key of the bucket and the log group."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be the ARN of a KMS key."
  }
}

variable "ecr_repository_arns" {
  description = "ECR repositories the job image is pulled from (none for a public image)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.ecr_repository_arns : can(regex("^arn:[a-z-]+:ecr:[a-z0-9-]+:[0-9]{12}:repository/.+$", a))])
    error_message = "ecr_repository_arns must hold ECR repository ARNs."
  }
}

variable "log_retention_days" {
  description = "Days the job logs are kept."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ..., 365, ..., 3653)."
  }
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
