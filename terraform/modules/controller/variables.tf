variable "name" {
  description = "Prefix of the cluster, service, roles, security group and log group names."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,40}$", var.name))
    error_message = "name must be 1-40 letters, digits, '_' or '-'."
  }
}

variable "vpc_id" {
  description = "VPC the controller runs in."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "subnet_ids" {
  description = "Private subnets of the controller tasks (spread over availability zones; no public IP is assigned)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 1 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "subnet_ids must hold at least one subnet id."
  }
}

variable "allowed_cidr_blocks" {
  description = "Networks allowed to reach /status, /metrics, the API and the dashboard on port 8080 (the VPC, a VPN range). Nothing else can."
  type        = list(string)

  validation {
    condition     = length(var.allowed_cidr_blocks) >= 1 && alltrue([for c in var.allowed_cidr_blocks : can(cidrnetmask(c)) && try(tonumber(split("/", c)[1]) >= 8, false)])
    error_message = "allowed_cidr_blocks must hold at least one IPv4 CIDR block, none wider than /8 (so not 0.0.0.0/0, nor 0.0.0.0/1 and 128.0.0.0/1): the controller is internal."
  }
}

variable "image" {
  description = "Container image of the controller (runs `cutover run`)."
  type        = string

  validation {
    condition     = length(trimspace(var.image)) > 0
    error_message = "image must not be empty."
  }
}

variable "health_check_command" {
  description = "Container health check of the controller; it must exit 0 while GET /healthz on port 8080 answers 200. The default uses the image's Python."
  type        = list(string)
  default     = ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]

  validation {
    condition     = length(var.health_check_command) >= 2 && contains(["CMD", "CMD-SHELL"], var.health_check_command[0])
    error_message = "health_check_command must start with CMD or CMD-SHELL."
  }
}

variable "agent_image" {
  description = "Image of the AWS AppConfig Agent sidecar."
  type        = string
  default     = "public.ecr.aws/aws-appconfig/aws-appconfig-agent:2.x"
}

variable "agent_poll_interval_seconds" {
  description = "Seconds between the agent's polls of AppConfig: the longest a new flag version waits to reach a controller."
  type        = number
  default     = 30

  validation {
    condition     = var.agent_poll_interval_seconds >= 15 && var.agent_poll_interval_seconds <= 3600 && floor(var.agent_poll_interval_seconds) == var.agent_poll_interval_seconds
    error_message = "agent_poll_interval_seconds must be a whole number between 15 and 3600."
  }
}

variable "desired_count" {
  description = "Controller replicas. They are for availability, not throughput: the ledger makes several safe, and nothing scales them automatically."
  type        = number
  default     = 2

  validation {
    condition     = var.desired_count >= 1 && var.desired_count <= 10 && floor(var.desired_count) == var.desired_count
    error_message = "desired_count must be a whole number between 1 and 10."
  }
}

variable "cpu" {
  description = "CPU units of one controller task (both containers)."
  type        = number
  default     = 512

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096], var.cpu)
    error_message = "cpu must be one of 256, 512, 1024, 2048, 4096."
  }
}

variable "memory" {
  description = "Memory of one controller task in MiB (both containers; must pair with cpu as Fargate allows)."
  type        = number
  default     = 1024

  validation {
    condition     = var.memory >= 512 && var.memory <= 30720 && floor(var.memory) == var.memory
    error_message = "memory must be a whole number of MiB between 512 and 30720."
  }
}

variable "appconfig" {
  description = "Where the flag is read from: names the agent is asked for, the flag key, and the configuration ARN reads are authorised against."
  type = object({
    application       = string
    environment       = string
    profile           = string
    flag_key          = string
    configuration_arn = string
  })
}

variable "ledger_table_name" {
  description = "Ledger table (CUTOVER_LEDGER=dynamodb://<name>)."
  type        = string
}

variable "ledger_table_arn" {
  description = "ARN of the ledger table."
  type        = string
}

variable "manifest_bucket_name" {
  description = "Manifest bucket (CUTOVER_MANIFEST_BUCKET)."
  type        = string
}

variable "manifest_bucket_arn" {
  description = "ARN of the manifest bucket."
  type        = string
}

variable "manifest_prefix" {
  description = "Key prefix the controller writes manifests under."
  type        = string
  default     = "manifests/"

  validation {
    condition     = endswith(var.manifest_prefix, "/") && !startswith(var.manifest_prefix, "/")
    error_message = "manifest_prefix must end with '/' and not start with one."
  }
}

variable "batch" {
  description = "The new path: job queue ARN, job definition name and ARN without revision, Fargate compute environment ARN."
  type = object({
    job_queue_arn             = string
    job_definition_name       = string
    job_definition_arn_prefix = string
    compute_environment_arn   = string
  })
}

variable "manages_max_vcpus" {
  description = "The controller resizes the compute environment's max_vcpus to the new path's share of the budget (CUTOVER_MANAGE_MAX_VCPUS)."
  type        = bool
  default     = true
}

variable "legacy_project_name" {
  description = "The old path's CodeBuild project (CUTOVER_LEGACY_PROJECT)."
  type        = string
}

variable "legacy_project_arn" {
  description = "ARN of the old path's CodeBuild project."
  type        = string
}

variable "sns_topic_arn" {
  description = "Topic for terminal failures and flag changes (CUTOVER_SNS_TOPIC_ARN)."
  type        = string
}

variable "budget" {
  description = "Conversions in flight on both paths together, at most (CUTOVER_BUDGET)."
  type        = number
  default     = 20

  validation {
    condition     = var.budget >= 1 && floor(var.budget) == var.budget
    error_message = "budget must be a whole number, at least 1."
  }
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

variable "on_flag_unavailable" {
  description = "What the controller does while it has never read a valid flag: route everything to the old path (legacy) or hold (pause) (CUTOVER_ON_FLAG_UNAVAILABLE)."
  type        = string
  default     = "legacy"

  validation {
    condition     = contains(["legacy", "pause"], var.on_flag_unavailable)
    error_message = "on_flag_unavailable must be legacy or pause."
  }
}

variable "api_token_secret_arn" {
  description = "Secrets Manager secret holding the bearer token the mutating endpoints require (CUTOVER_API_TOKEN). Required: the task listens on all of its interfaces."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.api_token_secret_arn))
    error_message = "api_token_secret_arn must be a Secrets Manager secret ARN: the controller listens on all of its task's interfaces, so its mutating endpoints always require a token."
  }
}

variable "metric_namespace" {
  description = "CloudWatch namespace the controller may publish metrics in (and no other)."
  type        = string
  default     = "Cutover"
}

variable "service_discovery_namespace" {
  description = "Private DNS namespace (Cloud Map) the controller registers in; the dashboard is at http://controller.<namespace>:8080/."
  type        = string
  default     = "cutover.internal"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$", var.service_discovery_namespace))
    error_message = "service_discovery_namespace must be a DNS name such as cutover.internal."
  }
}

variable "kms_key_arn" {
  description = "ARN of the customer-managed KMS key of the bucket, topic, table and the controller's log group."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be the ARN of a KMS key."
  }
}

variable "ecr_repository_arns" {
  description = "ECR repositories the controller image is pulled from (none for a public image)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.ecr_repository_arns : can(regex("^arn:[a-z-]+:ecr:[a-z0-9-]+:[0-9]{12}:repository/.+$", a))])
    error_message = "ecr_repository_arns must hold ECR repository ARNs."
  }
}

variable "log_retention_days" {
  description = "Days the controller's and the agent's logs are kept."
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
