variable "create_project" {
  description = "Create the legacy CodeBuild project here (true), or use an existing one by name (false). Either way its service role is given access to the manifests."
  type        = bool
  default     = true
}

variable "project_name" {
  description = "Name of the legacy CodeBuild project (CUTOVER_LEGACY_PROJECT), created or existing."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{1,254}$", var.project_name))
    error_message = "project_name must be 2-255 letters, digits, '_' or '-', starting with a letter or digit."
  }
}

variable "existing_service_role_name" {
  description = "Name of the existing project's service role (only with create_project = false): the manifest access policy is attached to it."
  type        = string
  default     = null
}

variable "image" {
  description = "Build image of the old batch."
  type        = string
  default     = "aws/codebuild/amazonlinux2-x86_64-standard:5.0"
}

variable "compute_type" {
  description = "CodeBuild compute type of the old batch."
  type        = string
  default     = "BUILD_GENERAL1_MEDIUM"

  validation {
    condition     = can(regex("^BUILD_(GENERAL1|LAMBDA)_[A-Z0-9_]+$", var.compute_type))
    error_message = "compute_type must be a CodeBuild compute type such as BUILD_GENERAL1_MEDIUM."
  }
}

variable "source_type" {
  description = "Source of the old batch's code: S3 (a zip in a bucket), CODECOMMIT, GITHUB, GITLAB, BITBUCKET or NO_SOURCE (then buildspec is required)."
  type        = string
  default     = "S3"

  validation {
    condition     = contains(["S3", "CODECOMMIT", "GITHUB", "GITHUB_ENTERPRISE", "GITLAB", "GITLAB_SELF_MANAGED", "BITBUCKET", "NO_SOURCE"], var.source_type)
    error_message = "source_type must be one of S3, CODECOMMIT, GITHUB, GITHUB_ENTERPRISE, GITLAB, GITLAB_SELF_MANAGED, BITBUCKET, NO_SOURCE."
  }
}

variable "source_location" {
  description = "Location of the source: for S3 \"bucket/path/to/source.zip\", for a repository its clone URL; null for NO_SOURCE."
  type        = string
  default     = null
}

variable "buildspec" {
  description = "Buildspec (inline YAML or a path in the source); null uses buildspec.yml from the source."
  type        = string
  default     = null
}

variable "build_timeout_minutes" {
  description = "Hard timeout of one build in minutes (CodeBuild accepts 5-2160; AWS's quota page still lists 480 as the limit)."
  type        = number
  default     = 480

  validation {
    condition     = var.build_timeout_minutes >= 5 && var.build_timeout_minutes <= 2160 && floor(var.build_timeout_minutes) == var.build_timeout_minutes
    error_message = "build_timeout_minutes must be a whole number between 5 and 2160."
  }
}

variable "queued_timeout_minutes" {
  description = "Minutes a build may wait in CodeBuild's queue before it times out."
  type        = number
  default     = 60

  validation {
    condition     = var.queued_timeout_minutes >= 5 && var.queued_timeout_minutes <= 480 && floor(var.queued_timeout_minutes) == var.queued_timeout_minutes
    error_message = "queued_timeout_minutes must be a whole number between 5 and 480."
  }
}

variable "environment_variables" {
  description = "Fixed plain-text environment variables of the build (per-build ones, such as the manifest URI, are overridden by the controller at StartBuild)."
  type        = map(string)
  default     = {}
}

variable "manifest_bucket_arn" {
  description = "ARN of the manifest bucket; builds read their manifest and write their result next to it."
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
  description = "ARN of the customer-managed KMS key of the bucket, the build's artifacts and its log group."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be the ARN of a KMS key."
  }
}

variable "log_retention_days" {
  description = "Days the build logs are kept."
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
