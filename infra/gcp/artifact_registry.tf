# Artifact registry: one Docker repository "<name>-artifacts"; release images go to
# <region>-docker.pkg.dev/<project>/<name>-artifacts/<image>. The manager hands out access tokens
# of the push and pull service accounts (Basic oauth2accesstoken:<token>), minted through IAM
# Credentials generateAccessToken, so only principal may mint them.

resource "google_artifact_registry_repository" "artifacts" {
  count = var.enable_artifact_registry ? 1 : 0

  project       = var.project_id
  location      = var.region
  repository_id = local.repository_id
  format        = "DOCKER"
  description   = "alien-manager ${var.name}: release images"
  kms_key_name  = var.kms_key_name
  labels        = var.labels
}

resource "google_service_account" "push" {
  count = var.enable_artifact_registry ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name}-gar-push"
  display_name = "alien-manager ${var.name} GAR push"
  description  = "alien-manager ${var.name}: push release images to ${local.repository_id} in Artifact Registry"
}

resource "google_artifact_registry_repository_iam_member" "push" {
  count = var.enable_artifact_registry ? 1 : 0

  project    = google_artifact_registry_repository.artifacts[0].project
  location   = google_artifact_registry_repository.artifacts[0].location
  repository = google_artifact_registry_repository.artifacts[0].name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.push[0].email}"
}

resource "google_service_account_iam_member" "push_token_creator" {
  count = var.enable_artifact_registry ? 1 : 0

  service_account_id = google_service_account.push[0].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = var.principal
}

resource "google_service_account" "pull" {
  count = var.enable_artifact_registry ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name}-gar-pull"
  display_name = "alien-manager ${var.name} GAR pull"
  description  = "alien-manager ${var.name}: pull release images from ${local.repository_id} in Artifact Registry"
}

resource "google_artifact_registry_repository_iam_member" "pull" {
  count = var.enable_artifact_registry ? 1 : 0

  project    = google_artifact_registry_repository.artifacts[0].project
  location   = google_artifact_registry_repository.artifacts[0].location
  repository = google_artifact_registry_repository.artifacts[0].name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.pull[0].email}"
}

resource "google_service_account_iam_member" "pull_token_creator" {
  count = var.enable_artifact_registry ? 1 : 0

  service_account_id = google_service_account.pull[0].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = var.principal
}

# At deploy time the manager grants the target project's Cloud Run service agent
# roles/artifactregistry.reader on the repository (read-modify-write of its IAM policy). Its own
# identity does that, never the push account: a push token leaves the manager (vendor CI), and
# whoever holds it could then rewrite the repository's policy. No predefined role holds just
# these permissions (roles/artifactregistry.admin also deletes repositories and artifacts).
resource "google_project_iam_custom_role" "repository_iam" {
  count = var.enable_artifact_registry ? 1 : 0

  project     = var.project_id
  role_id     = "${replace(var.name, "-", "_")}_gar_repository_iam"
  title       = "alien-manager ${var.name}: repository IAM policy"
  description = "Read the repository and read and set its IAM policy, to grant deploying projects pull access."
  permissions = [
    "artifactregistry.repositories.get",
    "artifactregistry.repositories.getIamPolicy",
    "artifactregistry.repositories.setIamPolicy",
  ]
}

resource "google_artifact_registry_repository_iam_member" "manager" {
  count = var.enable_artifact_registry ? 1 : 0

  project    = google_artifact_registry_repository.artifacts[0].project
  location   = google_artifact_registry_repository.artifacts[0].location
  repository = google_artifact_registry_repository.artifacts[0].name
  role       = google_project_iam_custom_role.repository_iam[0].name
  member     = var.principal
}
