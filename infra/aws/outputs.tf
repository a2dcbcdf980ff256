locals {
  # One entry per alien-manager.toml section; a section is left out when its switch is off.
  artifact_registry_config = var.enable_artifact_registry ? {
    "artifact-registry.aws" = {
      service          = "ecr"
      repositoryPrefix = local.repository_prefix
      pushRoleArn      = aws_iam_role.push[0].arn
      pullRoleArn      = aws_iam_role.pull[0].arn
    }
  } : {}

  commands_config = var.enable_commands_store ? {
    "commands" = {
      kv = {
        service   = "dynamodb"
        tableName = aws_dynamodb_table.commands[0].name
        region    = local.region
      }
      storage = {
        service    = "s3"
        bucketName = aws_s3_bucket.commands[0].id
        region     = local.region
      }
    }
  } : {}

  impersonation_config = var.enable_impersonation ? {
    "impersonation.aws" = {
      service  = "awsiam"
      roleName = aws_iam_role.management[0].name
      roleArn  = aws_iam_role.management[0].arn
    }
  } : {}
}

output "config_values" {
  description = "alien-manager.toml sections: keys are section paths, values that section's keys (render with infra/aws/check.py render, or paste from terraform output -json config_values)."
  value       = merge(local.artifact_registry_config, local.commands_config, local.impersonation_config)
}

output "manager_policy_json" {
  description = "The manager identity's least-privilege IAM policy (null when every switch is off)."
  value       = local.any_enabled ? data.aws_iam_policy_document.manager.json : null
}

output "manager_policy_arn" {
  description = "ARN of the <name>-manager policy; attach it to the role of principal_arn (or set manager_role_name)."
  value       = one(aws_iam_policy.manager[*].arn)
}

output "repository_prefix" {
  description = "ECR repository prefix the manager creates repositories under."
  value       = var.enable_artifact_registry ? local.repository_prefix : null
}

output "push_role_arn" {
  description = "ECR push role ARN."
  value       = one(aws_iam_role.push[*].arn)
}

output "pull_role_arn" {
  description = "ECR pull role ARN."
  value       = one(aws_iam_role.pull[*].arn)
}

output "table_name" {
  description = "DynamoDB table of the commands KV."
  value       = one(aws_dynamodb_table.commands[*].name)
}

output "bucket_name" {
  description = "S3 bucket of the command payloads."
  value       = one(aws_s3_bucket.commands[*].id)
}

output "management_role_name" {
  description = "Name of the management role (impersonation)."
  value       = one(aws_iam_role.management[*].name)
}

output "management_role_arn" {
  description = "ARN of the management role; customer deployer roles trust it."
  value       = one(aws_iam_role.management[*].arn)
}
