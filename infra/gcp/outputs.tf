locals {
  # One entry per alien-manager.toml section; a section is left out when its switch is off.
  artifact_registry_config = var.enable_artifact_registry ? {
    "artifact-registry.gcp" = {
      service                 = "gar"
      repositoryName          = google_artifact_registry_repository.artifacts[0].id
      pullServiceAccountEmail = google_service_account.pull[0].email
      pushServiceAccountEmail = google_service_account.push[0].email
    }
  } : {}

  commands_config = var.enable_commands_store ? {
    "commands" = {
      kv = {
        service        = "firestore"
        projectId      = google_firestore_database.commands[0].project
        databaseId     = google_firestore_database.commands[0].name
        collectionName = google_firestore_field.expires_at[0].collection
      }
      storage = {
        service    = "gcs"
        bucketName = google_storage_bucket.commands[0].name
      }
    }
  } : {}

  impersonation_config = var.enable_impersonation ? {
    "impersonation.gcp" = {
      service  = "gcpserviceaccount"
      email    = google_service_account.management[0].email
      uniqueId = google_service_account.management[0].unique_id
    }
  } : {}
}

output "config_values" {
  description = "alien-manager.toml sections: keys are section paths, values that section's keys (render with infra/gcp/check.py render, or paste from terraform output -json config_values)."
  value       = merge(local.artifact_registry_config, local.commands_config, local.impersonation_config)
}

output "repository_name" {
  description = "Full name of the Artifact Registry repository (projects/P/locations/L/repositories/R)."
  value       = one(google_artifact_registry_repository.artifacts[*].id)
}

output "repository_url" {
  description = "Where images of the repository are pushed and pulled: <region>-docker.pkg.dev/<project>/<repository>."
  value       = var.enable_artifact_registry ? "${local.repository_host}/${var.project_id}/${local.repository_id}" : null
}

output "push_service_account_email" {
  description = "Push service account (roles/artifactregistry.writer on the repository)."
  value       = one(google_service_account.push[*].email)
}

output "pull_service_account_email" {
  description = "Pull service account (roles/artifactregistry.reader on the repository)."
  value       = one(google_service_account.pull[*].email)
}

output "database_id" {
  description = "Firestore database of the commands KV."
  value       = one(google_firestore_database.commands[*].name)
}

output "collection_name" {
  description = "Firestore collection of the commands KV."
  value       = var.enable_commands_store ? var.collection_name : null
}

output "bucket_name" {
  description = "GCS bucket of the command payloads."
  value       = one(google_storage_bucket.commands[*].name)
}

output "management_service_account_email" {
  description = "Email of the management service account (impersonation)."
  value       = one(google_service_account.management[*].email)
}

output "management_service_account_member" {
  description = "IAM member of the management service account; customers grant it roles/iam.serviceAccountTokenCreator on their deployment service account."
  value       = var.enable_impersonation ? "serviceAccount:${google_service_account.management[0].email}" : null
}

output "management_service_account_unique_id" {
  description = "Unique (numeric) ID of the management service account."
  value       = one(google_service_account.management[*].unique_id)
}
