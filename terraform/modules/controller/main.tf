# The controller: an ECS Fargate service of `cutover run` with the AWS AppConfig Agent beside it in
# every task, reachable only inside the VPC through Cloud Map DNS.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  region    = split(":", var.kms_key_arn)[3]
  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition

  port       = 8080
  agent_port = 2772

  # Every variable here is one controller/settings.py reads (tests/terraform checks that against
  # env_names()); AWS_REGION is boto3's own.
  controller_environment = {
    CUTOVER_FLAG_SOURCE               = "agent"
    CUTOVER_AGENT_URL                 = "http://localhost:${local.agent_port}"
    CUTOVER_APPCONFIG_APPLICATION     = var.appconfig.application
    CUTOVER_APPCONFIG_ENVIRONMENT     = var.appconfig.environment
    CUTOVER_APPCONFIG_PROFILE         = var.appconfig.profile
    CUTOVER_FLAG_KEY                  = var.appconfig.flag_key
    CUTOVER_ON_FLAG_UNAVAILABLE       = var.on_flag_unavailable
    CUTOVER_LEDGER                    = "dynamodb://${var.ledger_table_name}"
    CUTOVER_BACKEND                   = "aws"
    CUTOVER_LEGACY_PROJECT            = var.legacy_project_name
    CUTOVER_BATCH_JOB_QUEUE           = var.batch.job_queue_arn
    CUTOVER_BATCH_JOB_DEFINITION      = var.batch.job_definition_name
    CUTOVER_BATCH_COMPUTE_ENVIRONMENT = var.batch.compute_environment_arn
    CUTOVER_MANAGE_MAX_VCPUS          = tostring(var.manages_max_vcpus)
    CUTOVER_MANIFEST_BUCKET           = var.manifest_bucket_name
    CUTOVER_BUDGET                    = tostring(var.budget)
    CUTOVER_CYCLE_SECONDS             = tostring(var.cycle_seconds)
    CUTOVER_SNS_TOPIC_ARN             = var.sns_topic_arn
    AWS_REGION                        = local.region
  }

  # Values that must not sit in the task definition in clear text.
  controller_secrets = {
    CUTOVER_API_TOKEN = var.api_token_secret_arn
  }

  agent_environment = {
    SERVICE_REGION = local.region
    # Only containers of the same task reach the agent.
    HTTP_HOST     = "localhost"
    HTTP_PORT     = tostring(local.agent_port)
    POLL_INTERVAL = tostring(var.agent_poll_interval_seconds)
    PREFETCH_LIST = "${var.appconfig.application}:${var.appconfig.environment}:${var.appconfig.profile}"
    LOG_LEVEL     = "info"
  }

  log_options = {
    "awslogs-group"  = aws_cloudwatch_log_group.controller.name
    "awslogs-region" = local.region
  }

  container_definitions = [
    {
      name      = "controller"
      image     = var.image
      essential = true
      command   = ["cutover", "run", "--host", "0.0.0.0", "--port", tostring(local.port)]
      portMappings = [
        { name = "http", containerPort = local.port, protocol = "tcp" },
      ]
      environment = [for k in sort(keys(local.controller_environment)) : { name = k, value = local.controller_environment[k] }]
      secrets     = [for k in sort(keys(local.controller_secrets)) : { name = k, valueFrom = local.controller_secrets[k] }]
      healthCheck = {
        command     = var.health_check_command
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 30
      }
      # The controller retries the agent until it answers; starting it first avoids noise.
      dependsOn              = [{ containerName = "appconfig-agent", condition = "START" }]
      readonlyRootFilesystem = true
      privileged             = false
      mountPoints            = [{ sourceVolume = "controller-tmp", containerPath = "/tmp", readOnly = false }]
      linuxParameters        = { initProcessEnabled = true }
      stopTimeout            = 30
      logConfiguration = {
        logDriver = "awslogs"
        options   = merge(local.log_options, { "awslogs-stream-prefix" = "controller" })
      }
    },
    {
      name                   = "appconfig-agent"
      image                  = var.agent_image
      essential              = true
      environment            = [for k in sort(keys(local.agent_environment)) : { name = k, value = local.agent_environment[k] }]
      readonlyRootFilesystem = true
      privileged             = false
      mountPoints            = [{ sourceVolume = "agent-tmp", containerPath = "/tmp", readOnly = false }]
      logConfiguration = {
        logDriver = "awslogs"
        options   = merge(local.log_options, { "awslogs-stream-prefix" = "appconfig-agent" })
      }
    },
  ]
}

resource "aws_cloudwatch_log_group" "controller" {
  name              = "/ecs/${var.name}-controller"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = var.tags
}

# Roles: the execution role starts the task (image, logs, the API token); the task role is what
# the controller and its agent may do.

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
      values   = [local.account]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account}:*"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-controller-execution"
  description        = "Starts the cutover controller task: image, logs, API token."
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "WriteTaskLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.controller.arn}:log-stream:*"]
  }

  dynamic "statement" {
    for_each = length(var.ecr_repository_arns) > 0 ? [1] : []

    content {
      sid       = "PullControllerImage"
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

  statement {
    sid       = "ReadApiToken"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.api_token_secret_arn]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "start-controller"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role" "task" {
  name               = "${var.name}-controller"
  description        = "What the cutover controller and its AppConfig Agent may do."
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "task" {
  # The agent's reads of the one flag profile in the one environment.
  statement {
    sid       = "ReadFlag"
    actions   = ["appconfig:StartConfigurationSession", "appconfig:GetLatestConfiguration"]
    resources = [var.appconfig.configuration_arn]
  }

  statement {
    sid = "Ledger"
    actions = [
      "dynamodb:BatchGetItem",
      "dynamodb:BatchWriteItem",
      "dynamodb:ConditionCheckItem",
      "dynamodb:DeleteItem",
      "dynamodb:DescribeTable",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:Query",
      "dynamodb:UpdateItem",
    ]
    resources = [var.ledger_table_arn, "${var.ledger_table_arn}/index/*"]
  }

  statement {
    sid       = "SubmitJobs"
    actions   = ["batch:SubmitJob"]
    resources = [var.batch.job_queue_arn, "${var.batch.job_definition_arn_prefix}:*"]
  }

  # Jobs are tagged with their batch (cutover:batch), conversion, tenant and flag version at
  # submission; their ids are only known at run time, so the tags name them.
  statement {
    sid       = "TagJobsAtSubmission"
    actions   = ["batch:TagResource"]
    resources = ["arn:${local.partition}:batch:${local.region}:${local.account}:job/*"]

    condition {
      test     = "Null"
      variable = "aws:RequestTag/cutover:batch"
      values   = ["false"]
    }
  }

  # Cancel and terminate only the jobs cutover submitted, never another workload's.
  statement {
    sid       = "StopOwnJobs"
    actions   = ["batch:CancelJob", "batch:TerminateJob"]
    resources = ["arn:${local.partition}:batch:${local.region}:${local.account}:job/*"]

    condition {
      test     = "Null"
      variable = "aws:ResourceTag/cutover:batch"
      values   = ["false"]
    }
  }

  # The new path's concurrency is capped by the account's Fargate vCPU quota too: read it, so the
  # controller never plans with a default it did not read.
  statement {
    sid       = "ReadFargateQuota"
    actions   = ["servicequotas:GetServiceQuota"]
    resources = ["arn:${local.partition}:servicequotas:${local.region}:${local.account}:fargate/L-3032A538"]
  }

  statement {
    # These Batch reads have no resource-level permissions: AWS requires "*".
    sid = "DescribeBatch"
    actions = [
      "batch:DescribeComputeEnvironments",
      "batch:DescribeJobDefinitions",
      "batch:DescribeJobQueues",
      "batch:DescribeJobs",
      "batch:ListJobs",
    ]
    resources = ["*"]
  }

  dynamic "statement" {
    for_each = var.manages_max_vcpus ? [1] : []

    content {
      sid       = "ResizeNewPath"
      actions   = ["batch:UpdateComputeEnvironment"]
      resources = [var.batch.compute_environment_arn]
    }
  }

  statement {
    sid       = "RunLegacyBuilds"
    actions   = ["codebuild:BatchGetBuilds", "codebuild:ListBuildsForProject", "codebuild:StartBuild", "codebuild:StopBuild"]
    resources = [var.legacy_project_arn]
  }

  statement {
    sid       = "Manifests"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${var.manifest_bucket_arn}/${var.manifest_prefix}*"]
  }

  statement {
    sid       = "ListManifests"
    actions   = ["s3:ListBucket"]
    resources = [var.manifest_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.manifest_prefix}*"]
    }
  }

  statement {
    sid       = "Notify"
    actions   = ["sns:Publish"]
    resources = [var.sns_topic_arn]
  }

  statement {
    sid       = "UseDataKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values = [
        "dynamodb.${local.region}.amazonaws.com",
        "s3.${local.region}.amazonaws.com",
        "sns.${local.region}.amazonaws.com",
      ]
    }
  }

  statement {
    # cloudwatch:PutMetricData has no resource-level permissions: AWS requires "*". The
    # namespace condition keeps the controller to its own metrics.
    sid       = "PublishMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [var.metric_namespace]
    }
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "controller"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

resource "aws_ecs_task_definition" "controller" {
  family                   = "${var.name}-controller"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.cpu)
  memory                   = tostring(var.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions    = jsonencode(local.container_definitions)

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  # Writable scratch space on a read-only root filesystem.
  volume {
    name = "controller-tmp"
  }

  volume {
    name = "agent-tmp"
  }

  tags = var.tags
}

resource "aws_security_group" "controller" {
  name        = "${var.name}-controller"
  description = "cutover controller: port 8080 from the allowed networks only, HTTPS out to AWS APIs."
  vpc_id      = var.vpc_id
  tags        = var.tags

  ingress {
    description = "Status, metrics, API and dashboard"
    from_port   = local.port
    to_port     = local.port
    protocol    = "tcp"
    cidr_blocks = var.allowed_cidr_blocks
  }

  egress {
    description = "HTTPS to AWS APIs (AppConfig, DynamoDB, Batch, CodeBuild, S3, SNS, CloudWatch) through NAT or VPC endpoints"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_service_discovery_private_dns_namespace" "this" {
  name        = var.service_discovery_namespace
  description = "Internal names of the cutover controller."
  vpc         = var.vpc_id
  tags        = var.tags
}

resource "aws_service_discovery_service" "controller" {
  name = "controller"

  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.this.id
    routing_policy = "MULTIVALUE"

    dns_records {
      type = "A"
      ttl  = 10
    }
  }

  # ECS reports task health (the container health check on /healthz) to Cloud Map.
  health_check_custom_config {}

  tags = var.tags
}

# No autoscaling: replicas are for availability, and the budget, not the replica count, sets how
# much work runs at once.
resource "aws_ecs_service" "controller" {
  name                               = "${var.name}-controller"
  cluster                            = aws_ecs_cluster.this.id
  task_definition                    = aws_ecs_task_definition.controller.arn
  desired_count                      = var.desired_count
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  propagate_tags                     = "SERVICE"
  enable_execute_command             = false
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.controller.id]
    assign_public_ip = false
  }

  service_registries {
    registry_arn = aws_service_discovery_service.controller.arn
  }

  tags = var.tags

  depends_on = [aws_iam_role_policy.task, aws_iam_role_policy.execution]
}
