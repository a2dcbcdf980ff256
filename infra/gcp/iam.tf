# Impersonation: the manager (principal) mints tokens of the management service account, and
# the management service account mints tokens of a deployment's customer service account
# (target.serviceAccountEmail), which the customer allows by granting it
# roles/iam.serviceAccountTokenCreator on that account.

resource "google_service_account" "management" {
  count = var.enable_impersonation ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name}-management"
  display_name = "alien-manager ${var.name} management"
  description  = "alien-manager ${var.name}: impersonates customer deployment service accounts that grant it roles/iam.serviceAccountTokenCreator"
}

resource "google_service_account_iam_member" "management_token_creator" {
  count = var.enable_impersonation ? 1 : 0

  service_account_id = google_service_account.management[0].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = var.principal
}

# The manager's own grants on the commands store (the repository's is in artifact_registry.tf,
# the token creator grants next to each service account).

# Documents of the commands database only: the condition names the database.
resource "google_project_iam_member" "manager_firestore" {
  count = var.enable_commands_store ? 1 : 0

  project = var.project_id
  role    = "roles/datastore.user"
  member  = var.principal

  condition {
    title       = "${var.name}-commands-database"
    description = "alien-manager ${var.name}: the commands KV database only"
    expression  = "resource.name == \"${google_firestore_database.commands[0].id}\""
  }
}

# Create, read, overwrite, list and delete objects; no bucket or IAM administration.
resource "google_storage_bucket_iam_member" "manager" {
  count = var.enable_commands_store ? 1 : 0

  bucket = google_storage_bucket.commands[0].name
  role   = "roles/storage.objectUser"
  member = var.principal
}

# A manager without a service account key signs V4 URLs with IAM Credentials signBlob as its
# own service account, which takes iam.serviceAccounts.signBlob on that account.
resource "google_service_account_iam_member" "manager_sign_blob" {
  count = var.enable_commands_store && local.principal_service_account != null ? 1 : 0

  service_account_id = "projects/-/serviceAccounts/${local.principal_service_account}"
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = var.principal
}
