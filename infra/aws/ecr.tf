# Artifact registry: the manager creates one ECR repository per project under
# "<name>-artifacts/", through the push role; deployments pull through the pull role.

data "aws_iam_policy_document" "ecr_push" {
  count = var.enable_artifact_registry ? 1 : 0

  statement {
    sid       = "EcrLogin"
    effect    = "Allow"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid    = "ManageArtifactRepositories"
    effect = "Allow"
    actions = [
      "ecr:CreateRepository",
      "ecr:DescribeRepositories",
      "ecr:SetRepositoryPolicy",
      "ecr:GetRepositoryPolicy",
      "ecr:BatchCheckLayerAvailability",
      "ecr:InitiateLayerUpload",
      "ecr:UploadLayerPart",
      "ecr:CompleteLayerUpload",
      "ecr:PutImage",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
      "ecr:DeleteRepository",
    ]
    resources = [local.repository_arn_pattern]
  }
}

data "aws_iam_policy_document" "ecr_pull" {
  count = var.enable_artifact_registry ? 1 : 0

  statement {
    sid       = "EcrLogin"
    effect    = "Allow"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid    = "PullArtifacts"
    effect = "Allow"
    actions = [
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
      "ecr:BatchCheckLayerAvailability",
    ]
    resources = [local.repository_arn_pattern]
  }
}

resource "aws_iam_role" "push" {
  count = var.enable_artifact_registry ? 1 : 0

  name               = "${var.name}-ecr-push"
  description        = "alien-manager ${var.name}: push release images to ${local.repository_prefix}/* in ECR"
  assume_role_policy = data.aws_iam_policy_document.trust_manager.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "push" {
  count = var.enable_artifact_registry ? 1 : 0

  name   = "ecr-push"
  role   = aws_iam_role.push[0].id
  policy = data.aws_iam_policy_document.ecr_push[0].json
}

resource "aws_iam_role" "pull" {
  count = var.enable_artifact_registry ? 1 : 0

  name               = "${var.name}-ecr-pull"
  description        = "alien-manager ${var.name}: pull release images from ${local.repository_prefix}/* in ECR"
  assume_role_policy = data.aws_iam_policy_document.trust_manager.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "pull" {
  count = var.enable_artifact_registry ? 1 : 0

  name   = "ecr-pull"
  role   = aws_iam_role.pull[0].id
  policy = data.aws_iam_policy_document.ecr_pull[0].json
}
