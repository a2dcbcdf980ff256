# Commands store, KV half: one document per key in collection <collection_name>, with fields
# value (bytes) and expiresAt (timestamp). Firestore's TTL policy deletes expired documents
# eventually (typically within a day); the manager treats them as absent from their expiry on.

resource "google_firestore_database" "commands" {
  count = var.enable_commands_store ? 1 : 0

  project                           = var.project_id
  name                              = local.database_id
  location_id                       = local.firestore_location
  type                              = "FIRESTORE_NATIVE"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
}

resource "google_firestore_field" "expires_at" {
  count = var.enable_commands_store ? 1 : 0

  project    = var.project_id
  database   = google_firestore_database.commands[0].name
  collection = var.collection_name
  field      = "expiresAt"

  # The TTL policy; expiresAt keeps its single-field indexes.
  ttl_config {}
}

# value holds opaque bytes no query filters or orders on: no single-field indexes for it.
resource "google_firestore_field" "value" {
  count = var.enable_commands_store ? 1 : 0

  project    = var.project_id
  database   = google_firestore_database.commands[0].name
  collection = var.collection_name
  field      = "value"

  index_config {}

  # Firestore runs one field operation of a collection group at a time.
  depends_on = [google_firestore_field.expires_at]
}
