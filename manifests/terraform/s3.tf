# The bucket for logs: encrypted, never public, objects expire after retention_days.

resource "aws_s3_bucket" "logs" {
  count = var.create_bucket ? 1 : 0

  bucket        = var.bucket_name
  force_destroy = var.bucket_force_destroy
  tags          = local.tags
}

resource "aws_s3_bucket_public_access_block" "logs" {
  count = var.create_bucket ? 1 : 0

  bucket                  = aws_s3_bucket.logs[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  count = var.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.logs[0].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  count = var.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.logs[0].id
  rule {
    id     = "expire-logs"
    status = "Enabled"
    filter {}
    dynamic "expiration" {
      for_each = var.retention_days > 0 ? [var.retention_days] : []
      content {
        days = expiration.value
      }
    }
    # An upload given up by a crashed writer costs storage until removed.
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}
