# Least privilege, resource-scoped grants (STYLE §8). No primitive roles.

# ingest and webhook publish canonical events, and nothing else.
resource "google_pubsub_topic_iam_member" "edge_publisher" {
  for_each = toset(["ingest", "webhook"])

  project = var.project_id
  topic   = google_pubsub_topic.events.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${module.function[each.key].service_account_email}"
}

# fanout parks unparseable messages on the dead-letter topic itself.
resource "google_pubsub_topic_iam_member" "fanout_dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${module.function["fanout"].service_account_email}"
}

# fanout's redrive republishes deferred events (scheduler.tf) to the events topic.
resource "google_pubsub_topic_iam_member" "fanout_redrive_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.events.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${module.function["fanout"].service_account_email}"
}

# Firestore has no collection-level IAM: roles/datastore.user on the project is
# the narrowest role that can read and write documents. The condition limits it
# to the database Truecount uses, so other databases in the project stay closed.
resource "google_project_iam_member" "fanout_firestore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${module.function["fanout"].service_account_email}"

  condition {
    title       = "truecount-default-database"
    description = "Only the (default) Firestore database."
    expression  = "resource.name == \"projects/${var.project_id}/databases/(default)\""
  }
}

# Pub/Sub service agent: forward dead letters (publisher on the DLQ topic, and
# subscriber on the source subscription to ack the forwarded message).
resource "google_pubsub_topic_iam_member" "dead_letter_agent_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "push_agent_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.fanout_push.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# The agent signs the push OIDC token as the invoker account; scoped to that one
# account instead of the project.
resource "google_service_account_iam_member" "push_agent_token_creator" {
  service_account_id = google_service_account.push_invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# Optional CMEK for the topics: Pub/Sub encrypts with the key as its service
# agent, so the agent needs the key before a topic can use it.
resource "google_kms_crypto_key_iam_member" "pubsub_agent" {
  count = var.pubsub_kms_key_name == null ? 0 : 1

  crypto_key_id = var.pubsub_kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.pubsub_service_agent

  depends_on = [google_project_service.this]
}
