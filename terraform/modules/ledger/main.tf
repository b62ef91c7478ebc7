# The ownership ledger and the manifest bucket.
#
# The key schema and index names below are the ones controller/ledger/dynamodb/schema.py declares and the
# DynamoDB ledger queries; tests/terraform compares the two, so change them together.

resource "aws_dynamodb_table" "ledger" {
  name                        = var.table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "state_key"
    type = "S"
  }

  attribute {
    name = "state_seq"
    type = "N"
  }

  attribute {
    name = "tenant_id"
    type = "N"
  }

  attribute {
    name = "received_at"
    type = "N"
  }

  # The cycle's and /status's state queries ("claimed#new", "dispatched#legacy", ... in receipt order).
  global_secondary_index {
    name            = "by_state"
    hash_key        = "state_key"
    range_key       = "state_seq"
    projection_type = "ALL"
  }

  # /tenants/{id}/route and per-tenant explanations.
  global_secondary_index {
    name            = "by_tenant"
    hash_key        = "tenant_id"
    range_key       = "received_at"
    projection_type = "ALL"
  }

  # Finished conversions expire after the controller's retention period (epoch seconds).
  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }

  tags = var.tags
}

resource "aws_s3_bucket" "manifests" {
  #checkov:skip=CKV_AWS_18:Manifests are short-lived working files; object access is audited by the account's CloudTrail data events rather than a second bucket of server access logs.
  #checkov:skip=CKV_AWS_144:Manifests expire within days and are rewritten by the controller on the next cycle; a cross-region copy would add nothing a regional outage of the whole workload does not already lose.
  #checkov:skip=CKV2_AWS_62:Nothing consumes object events: the controller tracks builds and jobs through the CodeBuild and Batch APIs.
  bucket        = var.bucket_name
  force_destroy = var.force_destroy_bucket
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "manifests" {
  bucket = aws_s3_bucket.manifests.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "manifests" {
  bucket                  = aws_s3_bucket.manifests.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "manifests" {
  bucket = aws_s3_bucket.manifests.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "manifests" {
  bucket = aws_s3_bucket.manifests.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "manifests" {
  bucket = aws_s3_bucket.manifests.id

  rule {
    id     = "expire-manifests"
    status = "Enabled"

    filter {
      prefix = var.manifest_prefix
    }

    expiration {
      days = var.manifest_expiration_days
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  # Uploads that never completed are removed wherever they were started.
  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.manifests]
}

data "aws_iam_policy_document" "manifests" {
  statement {
    # A deny of every S3 action is what "TLS only" means (and what AWS Config's
    # s3-bucket-ssl-requests-only rule looks for); wildcards are never used to allow.
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.manifests.arn,
      "${aws_s3_bucket.manifests.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "DenyOutdatedTls"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.manifests.arn, "${aws_s3_bucket.manifests.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}

resource "aws_s3_bucket_policy" "manifests" {
  bucket = aws_s3_bucket.manifests.id
  policy = data.aws_iam_policy_document.manifests.json

  depends_on = [aws_s3_bucket_public_access_block.manifests]
}
