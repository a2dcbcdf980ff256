# Impersonation: the manager assumes the management role, and the management role assumes
# the customer deployer role of a deployment (target.roleArn, with its external id).

data "aws_iam_policy_document" "management" {
  count = var.enable_impersonation ? 1 : 0

  statement {
    sid       = "AssumeCustomerDeployerRoles"
    effect    = "Allow"
    actions   = ["sts:AssumeRole", "sts:TagSession"]
    resources = [local.customer_role_pattern]
  }
}

resource "aws_iam_role" "management" {
  count = var.enable_impersonation ? 1 : 0

  name               = "${var.name}-management"
  description        = "alien-manager ${var.name}: assumes customer deployer roles (${local.customer_role_pattern})"
  assume_role_policy = data.aws_iam_policy_document.trust_manager.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "management" {
  count = var.enable_impersonation ? 1 : 0

  name   = "assume-customer-deployer-roles"
  role   = aws_iam_role.management[0].id
  policy = data.aws_iam_policy_document.management[0].json
}

# The manager's own least-privilege policy: what principal_arn needs to use the resources above.

data "aws_iam_policy_document" "manager" {
  dynamic "statement" {
    for_each = var.enable_commands_store ? [aws_dynamodb_table.commands[0].arn] : []

    content {
      sid    = "CommandsKv"
      effect = "Allow"
      # TransactWriteItems has no IAM action of its own: it is authorised per item, and the
      # commands KV's transactions hold only conditional puts and deletes.
      actions = [
        "dynamodb:DescribeTable",
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
      ]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.enable_commands_store ? [aws_s3_bucket.commands[0].arn] : []

    content {
      sid       = "CommandsStorageBucket"
      effect    = "Allow"
      actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.enable_commands_store ? [aws_s3_bucket.commands[0].arn] : []

    content {
      sid    = "CommandsStorageObjects"
      effect = "Allow"
      actions = [
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
      ]
      resources = ["${statement.value}/*"]
    }
  }

  dynamic "statement" {
    for_each = var.enable_commands_store && var.kms_key_arn != null ? [var.kms_key_arn] : []

    content {
      sid       = "CommandsCustomerManagedKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.enable_artifact_registry || var.enable_impersonation ? [1] : []

    content {
      sid     = "AssumeManagerRoles"
      effect  = "Allow"
      actions = ["sts:AssumeRole", "sts:TagSession"]
      resources = concat(
        aws_iam_role.push[*].arn,
        aws_iam_role.pull[*].arn,
        aws_iam_role.management[*].arn,
      )
    }
  }
}

resource "aws_iam_policy" "manager" {
  count = local.any_enabled ? 1 : 0

  name        = "${var.name}-manager"
  description = "alien-manager ${var.name}: least privilege of the manager's own identity (${var.principal_arn})"
  policy      = data.aws_iam_policy_document.manager.json
  tags        = var.tags
}

resource "aws_iam_role_policy_attachment" "manager" {
  count = local.any_enabled && var.manager_role_name != null ? 1 : 0

  role       = var.manager_role_name
  policy_arn = aws_iam_policy.manager[0].arn
}
