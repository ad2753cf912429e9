# Firestore (native mode): the ledger and the identity (click-id) store.

locals {
  firestore_location = coalesce(var.firestore_location, var.region)
  ttl_collections    = toset(["ledger", "identities"])

  ledger_indexes = {
    for idx in var.ledger_indexes :
    join("__", [for f in idx : "${f.field_path}_${lower(substr(f.order, 0, 4))}"]) => idx
  }
}

resource "google_firestore_database" "main" {
  count = var.manage_firestore_database ? 1 : 0

  project                           = var.project_id
  name                              = "(default)"
  location_id                       = local.firestore_location
  type                              = "FIRESTORE_NATIVE"
  app_engine_integration_mode       = "DISABLED"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  deletion_policy                   = "ABANDON"

  depends_on = [google_project_service.this]
}

# TTL policies: documents are deleted (usually within 24 h) once expire_at is in
# the past. fanout sets expire_at from [fanout].ledger_ttl_days and
# identity_ttl_days; IP and user agent leave the ledger with the document.
resource "google_firestore_field" "expire_at_ttl" {
  for_each = local.ttl_collections

  project    = var.project_id
  database   = "(default)"
  collection = each.value
  field      = "expire_at"

  ttl_config {}

  depends_on = [google_firestore_database.main, google_project_service.this]
}

# Composite indexes for the ops CLI's ledger queries (see var.ledger_indexes).
resource "google_firestore_index" "ledger" {
  for_each = local.ledger_indexes

  project     = var.project_id
  database    = "(default)"
  collection  = "ledger"
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value

    content {
      field_path = fields.value.field_path
      order      = fields.value.order
    }
  }

  depends_on = [google_firestore_database.main, google_project_service.this]
}
