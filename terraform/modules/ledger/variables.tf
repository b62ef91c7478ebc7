variable "table_name" {
  description = "Name of the DynamoDB ownership ledger table; the controller is given it as CUTOVER_LEDGER=dynamodb://<name>."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{3,255}$", var.table_name))
    error_message = "table_name must be 3-255 characters of letters, digits, '_', '-' or '.'."
  }
}

variable "bucket_name" {
  description = "Name of the S3 bucket that holds build and array-job manifests and the results jobs write next to them."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3-63 lowercase letters, digits, '.' or '-')."
  }
}

variable "manifest_prefix" {
  description = "Key prefix under which the controller writes manifests and jobs write results."
  type        = string
  default     = "manifests/"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/$", var.manifest_prefix))
    error_message = "manifest_prefix must be a relative key prefix ending in '/', such as \"manifests/\"."
  }
}

variable "manifest_expiration_days" {
  description = "Days after which manifests and results expire; keep it longer than the longest build or job plus the time ops need to investigate."
  type        = number
  default     = 30

  validation {
    condition     = var.manifest_expiration_days >= 1 && floor(var.manifest_expiration_days) == var.manifest_expiration_days
    error_message = "manifest_expiration_days must be a whole number of days, at least 1."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days a replaced or deleted manifest version is kept before it is removed for good."
  type        = number
  default     = 7

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days
    error_message = "noncurrent_version_expiration_days must be a whole number of days, at least 1."
  }
}

variable "kms_key_arn" {
  description = "ARN of the customer-managed KMS key that encrypts the table and the bucket."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be the ARN of a KMS key (arn:...:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "deletion_protection" {
  description = "Protect the ledger table from deletion. The ledger is the record of who owns every conversion; turn this off only to tear down a test stack."
  type        = bool
  default     = true
}

variable "force_destroy_bucket" {
  description = "Let `terraform destroy` delete the manifest bucket with its objects. Off in production."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource of this module (the provider's default tags apply too)."
  type        = map(string)
  default     = {}
}
