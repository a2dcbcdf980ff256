# Commands store, blob half: command params and responses under arc/commands/{id}/, uploaded
# and downloaded through V4 signed URLs. Bucket names are global, hence the project ID.

resource "google_storage_bucket" "commands" {
  #checkov:skip=CKV_GCP_78:Payloads are ephemeral and deleted on purpose when a command is forgotten; versioning would keep every deleted payload (and its cost) past the retention the manager enforces.
  #checkov:skip=CKV_GCP_62:Access logging needs a separate log bucket whose location and retention the vendor chooses; Cloud Audit Logs data access logs for storage.googleapis.com are the alternative.
  count = var.enable_commands_store ? 1 : 0

  project                     = var.project_id
  name                        = local.bucket_name
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels

  versioning {
    enabled = false
  }

  # Soft delete would keep every deleted payload for 7 more days, as versioning would.
  soft_delete_policy {
    retention_duration_seconds = 0
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]

    content {
      default_kms_key_name = encryption.value
    }
  }

  lifecycle_rule {
    condition {
      age            = var.payload_retention_days
      matches_prefix = ["arc/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }
}
