variable "name" {
  description = "Prefix of every resource name (lowercase letters, digits and hyphens; it also names the S3 bucket and ECR repositories)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,31}$", var.name))
    error_message = "name must be 1-32 characters of lowercase letters, digits and hyphens, starting with a letter or digit (the bucket name \"<name>-command-storage-<account>\" must fit in 63 characters)."
  }
}

variable "principal_arn" {
  description = "ARN of the IAM principal the manager runs as (e.g. the role of its ECS task or EC2 instance). Every role this module creates trusts it."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:iam::[0-9]{12}:", var.principal_arn))
    error_message = "principal_arn must be an IAM ARN, e.g. arn:aws:iam::123456789012:role/alien-manager."
  }
}

variable "enable_artifact_registry" {
  description = "Create the ECR push and pull roles for [artifact-registry.aws]."
  type        = bool
  default     = true
}

variable "enable_commands_store" {
  description = "Create the DynamoDB table and the S3 bucket for [commands] (kv and storage)."
  type        = bool
  default     = true
}

variable "enable_impersonation" {
  description = "Create the management role the manager assumes before assuming customer deployer roles ([impersonation.aws])."
  type        = bool
  default     = true
}

variable "payload_retention_days" {
  description = "Days after which S3 expires command payloads under arc/ (a backstop: the manager deletes payloads itself when a command is forgotten)."
  type        = number
  default     = 7

  validation {
    condition     = var.payload_retention_days >= 1
    error_message = "payload_retention_days must be at least 1."
  }
}

variable "customer_role_pattern" {
  description = "IAM role ARN pattern of the customer deployer roles the management role may assume. Null means arn:<partition>:iam::*:role/alien-*."
  type        = string
  default     = null

  validation {
    condition     = var.customer_role_pattern == null || can(regex("^arn:[a-z-]+:iam::", var.customer_role_pattern))
    error_message = "customer_role_pattern must be an IAM role ARN pattern, e.g. arn:aws:iam::*:role/alien-*."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for the DynamoDB table and the S3 bucket. Null uses the AWS-managed keys (aws/dynamodb, aws/s3)."
  type        = string
  default     = null
}

variable "manager_role_name" {
  description = "Name of an IAM role in this account to attach the manager policy to (usually the role of principal_arn). Null attaches nothing; use the manager_policy_arn output."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags applied to every resource that takes tags."
  type        = map(string)
  default     = {}
}
