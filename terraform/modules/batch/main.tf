# The new path: AWS Batch on Fargate, one container per conversion (or per array child).

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  # The new path may never run more than the whole budget at once; the controller narrows this to
  # the new path's share each cycle when it manages max_vcpus.
  max_vcpus = ceil(var.budget * var.vcpus_per_job)

  security_group_ids = concat([aws_security_group.jobs.id], var.extra_security_group_ids)

  compute_environment_arn = one(concat(
    aws_batch_compute_environment.controller_managed[*].arn,
    aws_batch_compute_environment.terraform_managed[*].arn,
  ))

  # The region, read off a resource this module creates (no deprecated data source attributes).
  region = split(":", aws_cloudwatch_log_group.jobs.arn)[3]

  # Valid Fargate memory sizes (MiB) for each vCPU size.
  fargate_memory = {
    "0.25" = [512, 1024, 2048]
    "0.5"  = [1024, 2048, 3072, 4096]
    "1"    = range(2048, 8193, 1024)
    "2"    = range(4096, 16385, 1024)
    "4"    = range(8192, 30721, 1024)
    "8"    = range(16384, 61441, 4096)
    "16"   = range(32768, 122881, 8192)
  }

  # A job reads the new path's manifests and writes only results: never a manifest, and never
  # the old path's objects (the adapters lay them out as <prefix><path>/<batch>/...).
  manifest_objects = "${var.manifest_bucket_arn}/${var.manifest_prefix}new/*"
  result_objects   = "${var.manifest_bucket_arn}/${var.manifest_prefix}new/*/results/*"
}

resource "aws_cloudwatch_log_group" "jobs" {
  name              = "/aws/batch/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_security_group" "jobs" {
  name        = "${var.name}-batch-jobs"
  description = "Conversion jobs on AWS Batch Fargate: no inbound traffic, HTTPS out to AWS APIs."
  vpc_id      = var.vpc_id
  tags        = var.tags

  egress {
    description = "HTTPS to AWS APIs (ECR, S3, CloudWatch Logs) through NAT or VPC endpoints"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

# Roles: the execution role starts the container (pulls the image, ships logs); the job role is
# what the conversion itself may do (read its manifest, write its result).

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-batch-execution"
  description        = "Starts cutover's conversion jobs: pulls the image, writes the job logs."
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "WriteJobLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.jobs.arn}:log-stream:*"]
  }

  dynamic "statement" {
    for_each = length(var.ecr_repository_arns) > 0 ? [1] : []

    content {
      sid       = "PullJobImage"
      actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
      resources = var.ecr_repository_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.ecr_repository_arns) > 0 ? [1] : []

    content {
      # ecr:GetAuthorizationToken has no resource-level permissions: AWS requires "*".
      sid       = "EcrLogin"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "start-conversion-jobs"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role" "job" {
  name               = "${var.name}-batch-job"
  description        = "What a cutover conversion job may do: read its manifest, write its result next to it."
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "job" {
  statement {
    sid       = "ReadManifests"
    actions   = ["s3:GetObject"]
    resources = [local.manifest_objects]
  }

  statement {
    sid       = "WriteResults"
    actions   = ["s3:PutObject"]
    resources = [local.result_objects]
  }

  statement {
    sid       = "ListManifestPrefix"
    actions   = ["s3:ListBucket"]
    resources = [var.manifest_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.manifest_prefix}new/*"]
    }
  }

  statement {
    sid       = "UseBucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "job" {
  name   = "manifests"
  role   = aws_iam_role.job.id
  policy = data.aws_iam_policy_document.job.json
}

# Two variants of one compute environment, chosen by who owns max_vcpus after creation. Only one
# exists at a time. Neither sets a name: provider 5.x calls that argument
# compute_environment_name and 6.x calls it name, so Terraform generates it and everything refers
# to the environment by ARN.

resource "aws_batch_compute_environment" "controller_managed" {
  count = var.controller_manages_max_vcpus ? 1 : 0

  type         = "MANAGED"
  state        = "ENABLED"
  service_role = var.service_role_arn

  compute_resources {
    type               = "FARGATE"
    max_vcpus          = local.max_vcpus
    subnets            = var.subnet_ids
    security_group_ids = local.security_group_ids
  }

  tags = merge(var.tags, { Name = "${var.name}-fargate" })

  lifecycle {
    # The controller resizes max_vcpus to the new path's share of the budget every cycle; an
    # apply must not lift it back to the whole budget while legacy builds are running.
    ignore_changes = [compute_resources[0].max_vcpus]
  }
}

resource "aws_batch_compute_environment" "terraform_managed" {
  count = var.controller_manages_max_vcpus ? 0 : 1

  type         = "MANAGED"
  state        = "ENABLED"
  service_role = var.service_role_arn

  compute_resources {
    type               = "FARGATE"
    max_vcpus          = local.max_vcpus
    subnets            = var.subnet_ids
    security_group_ids = local.security_group_ids
  }

  tags = merge(var.tags, { Name = "${var.name}-fargate" })
}

resource "aws_batch_job_queue" "jobs" {
  name     = "${var.name}-jobs"
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = local.compute_environment_arn
  }

  tags = var.tags
}

resource "aws_batch_job_definition" "conversion" {
  name                  = "${var.name}-conversion"
  type                  = "container"
  platform_capabilities = ["FARGATE"]
  propagate_tags        = true

  container_properties = jsonencode(merge(
    {
      image            = var.job_image
      jobRoleArn       = aws_iam_role.job.arn
      executionRoleArn = aws_iam_role.execution.arn
      resourceRequirements = [
        { type = "VCPU", value = tostring(var.vcpus_per_job) },
        { type = "MEMORY", value = tostring(var.memory_per_job) },
      ]
      fargatePlatformConfiguration = { platformVersion = "LATEST" }
      networkConfiguration         = { assignPublicIp = "DISABLED" }
      environment                  = [for k in sort(keys(var.job_environment)) : { name = k, value = var.job_environment[k] }]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          "awslogs-group"         = aws_cloudwatch_log_group.jobs.name
          "awslogs-region"        = local.region
          "awslogs-stream-prefix" = "conversion"
        }
      }
    },
    var.job_command == null ? {} : { command = var.job_command },
  ))

  # Infrastructure failures are retried; everything else exits. A job that matches no rule is
  # retried, so the last rule must catch all. Timeouts are never retried by Batch.
  retry_strategy {
    attempts = var.retry_attempts

    evaluate_on_exit {
      action           = "RETRY"
      on_status_reason = "Host EC2*"
    }

    evaluate_on_exit {
      action           = "RETRY"
      on_status_reason = "CannotPullContainerError*"
    }

    evaluate_on_exit {
      action           = "RETRY"
      on_status_reason = "ResourceInitializationError*"
    }

    evaluate_on_exit {
      action           = "RETRY"
      on_status_reason = "Task failed to start"
    }

    evaluate_on_exit {
      action    = "EXIT"
      on_reason = "*"
    }
  }

  timeout {
    attempt_duration_seconds = var.attempt_timeout_seconds
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = contains(local.fargate_memory[tostring(var.vcpus_per_job)], var.memory_per_job)
      error_message = "memory_per_job ${var.memory_per_job} MiB is not a Fargate size for ${var.vcpus_per_job} vCPU."
    }
  }
}
