locals {
  repository_id = "${var.name}-artifacts"
  # Where clients push and pull: <region>-docker.pkg.dev/<project>/<repository>/<image>.
  repository_host = "${var.region}-docker.pkg.dev"

  database_id        = var.firestore_database_id == null ? "${var.name}-commands" : var.firestore_database_id
  firestore_location = var.firestore_location == null ? var.region : var.firestore_location

  # Bucket names are global; project IDs are too.
  bucket_name = "${var.name}-command-storage-${var.project_id}"

  # The manager's own service account when principal is one. Without a key, the manager signs
  # GCS V4 URLs through IAM Credentials signBlob as this account, which needs a grant on itself.
  principal_service_account = startswith(var.principal, "serviceAccount:") ? trimprefix(var.principal, "serviceAccount:") : null
}
