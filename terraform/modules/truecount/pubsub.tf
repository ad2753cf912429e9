# Canonical events flow ingest/webhook -> events topic -> push subscription ->
# fanout. After max_delivery_attempts a message moves to the dead-letter topic,
# whose pull subscription keeps it for inspection and replay.

resource "google_pubsub_topic" "events" {
  # checkov:skip=CKV_GCP_83: CMEK is opt-in (var.pubsub_kms_key_name), Google-managed encryption at rest by default. Messages hold hashed identifiers plus the client IP and user agent (Meta and TikTok match on them); fanout keeps IP/UA in Firestore only until the ledger TTL, and Pub/Sub retention is 7 days at most.
  project      = var.project_id
  name         = var.events_topic_name
  kms_key_name = var.pubsub_kms_key_name
  labels       = local.labels

  depends_on = [
    google_project_service.this,
    google_kms_crypto_key_iam_member.pubsub_agent,
  ]
}

resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83: same data as the events topic (hashed identifiers, IP, user agent); CMEK is opt-in through var.pubsub_kms_key_name, Google-managed encryption at rest by default.
  project      = var.project_id
  name         = var.dead_letter_topic_name
  kms_key_name = var.pubsub_kms_key_name
  labels       = local.labels

  depends_on = [
    google_project_service.this,
    google_kms_crypto_key_iam_member.pubsub_agent,
  ]
}

# Identity Pub/Sub uses to sign the OIDC token of each push to fanout.
resource "google_service_account" "push_invoker" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-push"
  display_name = "Truecount Pub/Sub push to fanout"
  description  = "Only identity allowed to invoke the fanout function."
}

resource "google_pubsub_subscription" "fanout_push" {
  project = var.project_id
  name    = "${var.name_prefix}-fanout-push"
  topic   = google_pubsub_topic.events.id
  labels  = local.labels

  # fanout must finish (or fail) within its timeout; Pub/Sub waits as long.
  ack_deadline_seconds       = var.fanout_settings.timeout_seconds
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }

  push_config {
    push_endpoint = module.function["fanout"].function_uri

    oidc_token {
      service_account_email = google_service_account.push_invoker.email
      audience              = module.function["fanout"].function_uri
    }
  }

  retry_policy {
    minimum_backoff = "${var.retry_minimum_backoff_seconds}s"
    maximum_backoff = "${var.retry_maximum_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  lifecycle {
    precondition {
      condition     = var.retry_minimum_backoff_seconds <= var.retry_maximum_backoff_seconds
      error_message = "retry_minimum_backoff_seconds must not exceed retry_maximum_backoff_seconds."
    }
  }

  depends_on = [
    google_pubsub_topic_iam_member.dead_letter_agent_publisher,
    google_service_account_iam_member.push_agent_token_creator,
  ]
}

resource "google_pubsub_subscription" "dead_letter" {
  project = var.project_id
  name    = "${var.name_prefix}-dead-letter"
  topic   = google_pubsub_topic.dead_letter.id
  labels  = local.labels

  ack_deadline_seconds = 60
  # Keep acked messages too, so that an operator can seek back and replay.
  message_retention_duration = "${var.dead_letter_retention_days * 86400}s"
  retain_acked_messages      = true

  expiration_policy {
    ttl = ""
  }
}
