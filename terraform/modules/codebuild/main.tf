# The old path: the CodeBuild project that runs the whole batch as one long build. During the
# migration it receives exactly the conversions the controller routed to it, as a manifest.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  # A build reads the old path's manifests and writes only results: never a manifest, and never
  # the new path's objects (the adapters lay them out as <prefix><path>/<batch>/...).
  manifest_objects = "${var.manifest_bucket_arn}/${var.manifest_prefix}legacy/*"
  result_objects   = "${var.manifest_bucket_arn}/${var.manifest_prefix}legacy/*/results/*"

  # An S3 source is "bucket/key": the build may read exactly that object.
  s3_source_arn = var.source_type == "S3" && var.source_location != null ? "arn:${data.aws_partition.current.partition}:s3:::${var.source_location}" : null

  # The key and the bucket it encrypts live in the project's region (SSE-KMS needs that).
  region = split(":", var.kms_key_arn)[3]

  project_arn = var.create_project ? aws_codebuild_project.legacy[0].arn : "arn:${data.aws_partition.current.partition}:codebuild:${local.region}:${data.aws_caller_identity.current.account_id}:project/${var.project_name}"

  role_name = var.create_project ? aws_iam_role.legacy[0].name : var.existing_service_role_name
}

# An existing project keeps the log group it already has.
resource "aws_cloudwatch_log_group" "builds" {
  count = var.create_project ? 1 : 0

  name              = "/aws/codebuild/${var.project_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

data "aws_iam_policy_document" "codebuild_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["codebuild.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "legacy" {
  count = var.create_project ? 1 : 0

  name               = "${var.project_name}-codebuild"
  description        = "Service role of the legacy export build: its logs, its source and the manifests."
  assume_role_policy = data.aws_iam_policy_document.codebuild_assume.json
  tags               = var.tags
}

# What a build needs for cutover: read its manifest, write its result next to it.
data "aws_iam_policy_document" "manifests" {
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
      values   = ["${var.manifest_prefix}legacy/*"]
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

resource "aws_iam_role_policy" "manifests" {
  name   = "cutover-manifests"
  role   = local.role_name
  policy = data.aws_iam_policy_document.manifests.json

  lifecycle {
    precondition {
      condition     = var.create_project || var.existing_service_role_name != null
      error_message = "existing_service_role_name is required when create_project is false."
    }
  }
}

# What a project created here needs to run at all: its logs and its source.
data "aws_iam_policy_document" "build" {
  count = var.create_project ? 1 : 0

  statement {
    sid       = "WriteBuildLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.builds[0].arn}:log-stream:*"]
  }

  statement {
    sid       = "UseProjectKey"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }

  dynamic "statement" {
    for_each = local.s3_source_arn == null ? [] : [local.s3_source_arn]

    content {
      sid       = "ReadSource"
      actions   = ["s3:GetObject", "s3:GetObjectVersion"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "build" {
  count = var.create_project ? 1 : 0

  name   = "run-build"
  role   = aws_iam_role.legacy[0].id
  policy = data.aws_iam_policy_document.build[0].json
}

resource "aws_codebuild_project" "legacy" {
  count = var.create_project ? 1 : 0

  name           = var.project_name
  description    = "Legacy Excel export batch; during the cutover it runs the conversions the controller routes to the old path."
  service_role   = aws_iam_role.legacy[0].arn
  build_timeout  = var.build_timeout_minutes
  queued_timeout = var.queued_timeout_minutes
  encryption_key = var.kms_key_arn

  artifacts {
    type = "NO_ARTIFACTS"
  }

  environment {
    compute_type                = var.compute_type
    image                       = var.image
    type                        = "LINUX_CONTAINER"
    image_pull_credentials_type = "CODEBUILD"
    privileged_mode             = false

    dynamic "environment_variable" {
      for_each = var.environment_variables

      content {
        name  = environment_variable.key
        value = environment_variable.value
        type  = "PLAINTEXT"
      }
    }
  }

  source {
    type      = var.source_type
    location  = var.source_location
    buildspec = var.buildspec
  }

  logs_config {
    cloudwatch_logs {
      status     = "ENABLED"
      group_name = aws_cloudwatch_log_group.builds[0].name
    }

    s3_logs {
      status = "DISABLED"
    }
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.source_type == "NO_SOURCE" ? var.buildspec != null : var.source_location != null
      error_message = "A NO_SOURCE project needs a buildspec; every other source type needs source_location."
    }
  }

  depends_on = [aws_iam_role_policy.build, aws_iam_role_policy.manifests]
}
