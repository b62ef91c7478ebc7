# Test-only stack: the modules moto implements (ledger, signals, batch, codebuild with an S3
# source), applied against a moto server on loopback. Kept out of terraform/ so that it is never
# mistaken for deployable configuration (and checkov does not scan its test provider).

terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.100, < 7.0"
    }
  }
}

variable "budget" {
  description = "Budget given to the batch module."
  type        = number
}

variable "vcpus_per_job" {
  description = "vCPUs per job given to the batch module."
  type        = number
}

# The endpoints and test credentials come from moto_provider_override.tf.tmpl.
provider "aws" {
  region = "us-east-1"
}

resource "aws_kms_key" "test" {
  description = "test key"
}

resource "aws_vpc" "test" {
  cidr_block = "10.20.0.0/16"
}

resource "aws_subnet" "test" {
  vpc_id     = aws_vpc.test.id
  cidr_block = "10.20.1.0/24"
}

# moto's Batch wants an explicit service role for a compute environment.
resource "aws_iam_role" "batch_service" {
  name = "test-batch-service"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = "sts:AssumeRole"
      Principal = { Service = "batch.amazonaws.com" }
    }]
  })
}

module "ledger" {
  source = "../terraform/modules/ledger"

  table_name           = "test-ledger"
  bucket_name          = "test-manifests"
  kms_key_arn          = aws_kms_key.test.arn
  deletion_protection  = false
  force_destroy_bucket = true
}

module "signals" {
  source = "../terraform/modules/signals"

  name        = "test"
  kms_key_arn = aws_kms_key.test.arn

  trigger_schedule = {
    expression = "rate(1 hour)"
    target_arn = "arn:aws:sqs:us-east-1:123456789012:cutover-test-intake"
  }
}

module "batch" {
  source = "../terraform/modules/batch"

  name                = "test"
  vpc_id              = aws_vpc.test.id
  subnet_ids          = [aws_subnet.test.id]
  service_role_arn    = aws_iam_role.batch_service.arn
  job_image           = "public.ecr.aws/docker/library/python:3.12-slim"
  budget              = var.budget
  vcpus_per_job       = var.vcpus_per_job
  memory_per_job      = 4096
  manifest_bucket_arn = module.ledger.bucket_arn
  kms_key_arn         = aws_kms_key.test.arn
}

module "codebuild" {
  source = "../terraform/modules/codebuild"

  project_name        = "test-legacy-export"
  source_type         = "S3"
  source_location     = "test-source/legacy.zip"
  manifest_bucket_arn = module.ledger.bucket_arn
  kms_key_arn         = aws_kms_key.test.arn
}

output "table_name" {
  value = module.ledger.table_name
}

output "bucket_name" {
  value = module.ledger.bucket_name
}

output "topic_arn" {
  value = module.signals.topic_arn
}

output "alarm_names" {
  value = module.signals.alarm_names
}

output "job_queue_arn" {
  value = module.batch.job_queue_arn
}

output "job_definition_name" {
  value = module.batch.job_definition_name
}

output "compute_environment_arn" {
  value = module.batch.compute_environment_arn
}

output "project_name" {
  value = module.codebuild.project_name
}

output "trigger_schedule_arn" {
  value = module.signals.trigger_schedule_arn
}
