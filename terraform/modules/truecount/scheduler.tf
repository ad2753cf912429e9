# Redrive of deferred deliveries. Google Ads refuses a click conversion uploaded
# less than ~6 h after the click (TOO_RECENT_EVENT); fanout then keeps that
# destination pending with a not_before time and the event in the ledger
# (deferred_until), and acks. Every var.redrive_schedule Cloud Scheduler
# publishes a command message (attribute truecount_command = "redrive") to the
# events topic; fanout republishes the events whose deferred destinations are
# due, and the ledger keeps every other destination from being sent twice.

locals {
  # Cloud Scheduler publishes Pub/Sub targets as its service agent.
  cloud_scheduler_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-cloudscheduler.iam.gserviceaccount.com"
}

resource "google_pubsub_topic_iam_member" "scheduler_redrive_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.events.name
  role    = "roles/pubsub.publisher"
  member  = local.cloud_scheduler_agent

  depends_on = [google_project_service.this]
}

resource "google_cloud_scheduler_job" "redrive" {
  project     = var.project_id
  region      = var.region
  name        = "${var.name_prefix}-redrive"
  description = "Asks fanout to republish deferred deliveries that are due (Google Ads TOO_RECENT_EVENT)."
  schedule    = var.redrive_schedule
  time_zone   = "Etc/UTC"

  pubsub_target {
    topic_name = google_pubsub_topic.events.id
    data       = base64encode("{}")
    attributes = {
      truecount_command = "redrive"
    }
  }

  depends_on = [
    google_project_service.this,
    google_pubsub_topic_iam_member.scheduler_redrive_publisher,
  ]
}
