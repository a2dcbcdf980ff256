variable "project_id" {
  description = "Project that holds every resource of this module (the vendor's project)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID: 6-30 lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Location of the Artifact Registry repository and the bucket, and of the Firestore database unless firestore_location is set (e.g. us-central1)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]+(-[a-z]+[0-9]+)?$", var.region))
    error_message = "region must be a location such as us-central1, europe-west1 or the multi-region us."
  }
}

variable "name" {
  description = "Prefix of every resource name (lowercase letters, digits and hyphens; it also names the service accounts and the bucket)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,14}[a-z0-9])?$", var.name))
    error_message = "name must be 1-16 characters of lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen (the bucket name \"<name>-command-storage-<project_id>\" must fit in 63 characters, and service account IDs must start with a letter)."
  }
}

variable "principal" {
  description = "IAM member the manager runs as, e.g. serviceAccount:alien-manager@my-project.iam.gserviceaccount.com (the service account of its Cloud Run service or VM). It may mint tokens of every service account this module creates."
  type        = string

  validation {
    condition     = can(regex("^(serviceAccount|user|group):[^@\\s]+@[^@\\s]+\\.[a-z]+$", var.principal)) || can(regex("^principal(Set)?://iam\\.googleapis\\.com/.+", var.principal))
    error_message = "principal must be an IAM member such as serviceAccount:alien-manager@my-project.iam.gserviceaccount.com, user:alice@example.com, group:ops@example.com or a principal:// / principalSet:// workload identity federation member."
  }
}

variable "enable_artifact_registry" {
  description = "Create the Artifact Registry repository and its push and pull service accounts for [artifact-registry.gcp]."
  type        = bool
  default     = true
}

variable "enable_commands_store" {
  description = "Create the Firestore database (with the TTL policy) and the GCS bucket for [commands] (kv and storage)."
  type        = bool
  default     = true
}

variable "enable_impersonation" {
  description = "Create the management service account the manager impersonates before it impersonates customer deployment service accounts ([impersonation.gcp])."
  type        = bool
  default     = true
}

variable "payload_retention_days" {
  description = "Days after which GCS deletes command payloads under arc/ (a backstop: the manager deletes payloads itself when a command is forgotten)."
  type        = number
  default     = 7

  validation {
    condition     = var.payload_retention_days >= 1
    error_message = "payload_retention_days must be at least 1."
  }
}

variable "firestore_database_id" {
  description = "ID of the Firestore database to create. Null means \"<name>-commands\"; \"(default)\" creates the project's default database (it must not exist yet)."
  type        = string
  default     = null

  validation {
    condition     = var.firestore_database_id == null || var.firestore_database_id == "(default)" || can(regex("^[a-z][a-z0-9-]{2,61}[a-z0-9]$", var.firestore_database_id))
    error_message = "firestore_database_id must be \"(default)\" or 4-63 lowercase letters, digits and hyphens, starting with a letter and ending with a letter or digit."
  }
}

variable "firestore_location" {
  description = "Firestore location (a region such as us-central1, or a multi-region such as nam5). Null means region."
  type        = string
  default     = null
}

variable "collection_name" {
  description = "Firestore collection of the commands KV; the TTL policy is set on its expiresAt field."
  type        = string
  default     = "commands"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_-]{0,62}$", var.collection_name))
    error_message = "collection_name must be 1-63 lowercase letters, digits, '_' and '-', starting with a letter."
  }
}

variable "kms_key_name" {
  description = "Customer-managed Cloud KMS key (projects/P/locations/L/keyRings/K/cryptoKeys/C, in region) for the repository and the bucket. Null uses Google-managed keys. The Artifact Registry and Cloud Storage service agents need roles/cloudkms.cryptoKeyEncrypterDecrypter on it."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.kms_key_name))
    error_message = "kms_key_name must be a key name such as projects/my-project/locations/us-central1/keyRings/alien/cryptoKeys/alien."
  }
}

variable "labels" {
  description = "Labels applied to every resource that takes labels (the repository and the bucket)."
  type        = map(string)
  default     = {}
}
