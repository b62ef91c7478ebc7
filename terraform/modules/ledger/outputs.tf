output "table_name" {
  description = "Name of the ledger table."
  value       = aws_dynamodb_table.ledger.name
}

output "table_arn" {
  description = "ARN of the ledger table."
  value       = aws_dynamodb_table.ledger.arn
}

output "bucket_name" {
  description = "Name of the manifest bucket."
  value       = aws_s3_bucket.manifests.bucket
}

output "bucket_arn" {
  description = "ARN of the manifest bucket."
  value       = aws_s3_bucket.manifests.arn
}

output "manifest_prefix" {
  description = "Key prefix of manifests and results in the bucket."
  value       = var.manifest_prefix
}
