# Commands store, KV half: command state, one item per (pk, sk); expired items carry "ttl".

resource "aws_dynamodb_table" "commands" {
  #checkov:skip=CKV_AWS_119:A customer-managed KMS key is optional (var.kms_key_arn); by default the table is encrypted with the AWS-managed key aws/dynamodb, which needs no key policy.
  count = var.enable_commands_store ? 1 : 0

  name         = "${var.name}-commands"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"
  range_key    = "sk"

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "sk"
    type = "S"
  }

  ttl {
    attribute_name = "ttl"
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
