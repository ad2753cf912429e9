# Optional: every canonical event also lands in BigQuery through a Pub/Sub
# BigQuery subscription (no code). The table holds hashed identifiers plus IP
# and user agent, so partitions expire after bigquery_partition_expiration_days.

locals {
  bigquery_count    = var.enable_bigquery_subscription ? 1 : 0
  bigquery_location = coalesce(var.bigquery_location, var.region)
}

resource "google_bigquery_dataset" "events" {
  # checkov:skip=CKV_GCP_81: Google-managed encryption at rest (the table holds hashed identifiers, IP and user agent; partitions expire); CMEK for BigQuery is an org policy decision outside this module.
  count = local.bigquery_count

  project                    = var.project_id
  dataset_id                 = replace("${var.name_prefix}_events", "-", "_")
  location                   = local.bigquery_location
  description                = "Truecount canonical events (Pub/Sub BigQuery subscription)."
  delete_contents_on_destroy = false
  labels                     = local.labels

  depends_on = [google_project_service.this]
}

resource "google_bigquery_table" "events" {
  # checkov:skip=CKV_GCP_80: Google-managed encryption at rest (see the dataset).
  count = local.bigquery_count

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.events[0].dataset_id
  table_id            = "events"
  description         = "One row per canonical event message; data is the event JSON."
  deletion_protection = true
  labels              = local.labels

  time_partitioning {
    type          = "DAY"
    field         = "publish_time"
    expiration_ms = var.bigquery_partition_expiration_days * 86400000
  }

  # The columns a BigQuery subscription with write_metadata = true fills.
  schema = jsonencode([
    { name = "subscription_name", type = "STRING", mode = "NULLABLE" },
    { name = "message_id", type = "STRING", mode = "NULLABLE" },
    { name = "publish_time", type = "TIMESTAMP", mode = "NULLABLE" },
    { name = "data", type = "JSON", mode = "NULLABLE" },
    { name = "attributes", type = "JSON", mode = "NULLABLE" },
  ])
}

resource "google_bigquery_table_iam_member" "pubsub_writer" {
  count = local.bigquery_count

  project    = var.project_id
  dataset_id = google_bigquery_dataset.events[0].dataset_id
  table_id   = google_bigquery_table.events[0].table_id
  role       = "roles/bigquery.dataEditor"
  member     = local.pubsub_service_agent
}

resource "google_pubsub_subscription" "bigquery" {
  count = local.bigquery_count

  project = var.project_id
  name    = "${var.name_prefix}-events-bigquery"
  topic   = google_pubsub_topic.events.id
  labels  = local.labels
  # Leave out the redrive's command messages and the events it republishes
  # (copies of rows already written).
  filter = "NOT attributes:truecount_command AND NOT attributes:truecount_redrive"

  expiration_policy {
    ttl = ""
  }

  bigquery_config {
    table          = "${var.project_id}.${google_bigquery_dataset.events[0].dataset_id}.${google_bigquery_table.events[0].table_id}"
    write_metadata = true
  }

  depends_on = [google_bigquery_table_iam_member.pubsub_writer]
}
