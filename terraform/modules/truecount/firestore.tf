# Firestore (native mode): the ledger and the identity (click-id) store.

locals {
  firestore_location = coalesce(var.firestore_location, var.region)
  ttl_collections    = toset(["ledger", "identities"])

  # Map fields that are written often, read whole and never queried: without a
  # single-field index they cost no index entries (otherwise every key of a map,
  # and every element of an array, gets its own). The ops CLI (truecount.ops.store) queries updated_at,
  # created_at, name, transaction_id, lead_id, event_ids and the legacy
  # event_id, delivery_event_id and browser_event_id: those stay indexed, and
  # so does deferred_until (fanout's redrive queries it; only entries with a
  # deferred destination carry it).
  unindexed_fields = {
    ledger     = ["context", "destinations", "duplicates", "sources", "stitched"]
    identities = ["fields"]
  }
  unindexed_field_pairs = merge([
    for collection, fields in local.unindexed_fields : {
      for field in fields : "${collection}.${field}" => { collection = collection, field = field }
    }
  ]...)

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
  # Nothing queries expire_at, and an indexed, steadily increasing timestamp
  # is a write hotspot: no single-field index on it.
  index_config {}

  depends_on = [google_firestore_database.main, google_project_service.this]
}

# Single-field index exemptions (an empty index_config disables every index on
# the field and its subfields). expire_at has its own resource above: one
# google_firestore_field per (collection, field).
resource "google_firestore_field" "unindexed" {
  for_each = local.unindexed_field_pairs

  project    = var.project_id
  database   = "(default)"
  collection = each.value.collection
  field      = each.value.field

  index_config {}

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
