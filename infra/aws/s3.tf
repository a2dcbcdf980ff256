# Commands store, blob half: command params and responses under arc/commands/{id}/,
# uploaded and downloaded through presigned URLs. Bucket names are global, hence the account id.

resource "aws_s3_bucket" "commands" {
  #checkov:skip=CKV_AWS_21:Payloads are ephemeral and deleted on purpose when a command is forgotten; versioning would keep every deleted payload (and its cost) past the retention the manager enforces.
  #checkov:skip=CKV_AWS_144:Cross-region replication is not needed for ephemeral command payloads that live minutes to days; a lost payload fails one command, which the caller retries.
  #checkov:skip=CKV_AWS_18:Access logging needs a separate log bucket whose location and retention the vendor chooses; enable it with aws_s3_bucket_logging next to this module (CloudTrail data events are the alternative).
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket events: the manager learns of uploads through its own API, not through S3 notifications.
  count = var.enable_commands_store ? 1 : 0

  bucket = "${var.name}-command-storage-${local.account_id}"
  tags   = var.tags
}

resource "aws_s3_bucket_public_access_block" "commands" {
  count = var.enable_commands_store ? 1 : 0

  bucket                  = aws_s3_bucket.commands[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "commands" {
  count = var.enable_commands_store ? 1 : 0

  bucket = aws_s3_bucket.commands[0].id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "commands" {
  count = var.enable_commands_store ? 1 : 0

  bucket = aws_s3_bucket.commands[0].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "commands" {
  count = var.enable_commands_store ? 1 : 0

  bucket = aws_s3_bucket.commands[0].id

  rule {
    id     = "expire-command-payloads"
    status = "Enabled"

    filter {
      prefix = "arc/"
    }

    expiration {
      days = var.payload_retention_days
    }
  }

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "commands_bucket" {
  count = var.enable_commands_store ? 1 : 0

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.commands[0].arn,
      "${aws_s3_bucket.commands[0].arn}/*",
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
}

resource "aws_s3_bucket_policy" "commands" {
  count = var.enable_commands_store ? 1 : 0

  bucket = aws_s3_bucket.commands[0].id
  policy = data.aws_iam_policy_document.commands_bucket[0].json

  depends_on = [aws_s3_bucket_public_access_block.commands]
}
