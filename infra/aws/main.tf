data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name

  any_enabled = var.enable_artifact_registry || var.enable_commands_store || var.enable_impersonation

  repository_prefix      = "${var.name}-artifacts"
  repository_arn_pattern = "arn:${local.partition}:ecr:*:${local.account_id}:repository/${local.repository_prefix}/*"

  customer_role_pattern = coalesce(var.customer_role_pattern, "arn:${local.partition}:iam::*:role/alien-*")
}

# Trust policy of every role of this module: only the manager's own principal may assume it.
data "aws_iam_policy_document" "trust_manager" {
  statement {
    sid     = "TrustManagerPrincipal"
    effect  = "Allow"
    actions = ["sts:AssumeRole", "sts:TagSession"]

    principals {
      type        = "AWS"
      identifiers = [var.principal_arn]
    }
  }
}
