# Truecount on one Google Cloud project: APIs, source bucket and the three
# functions. Pub/Sub, Firestore, secrets, IAM and monitoring live in the
# files named after them.

locals {
  labels = merge({ app = "truecount", truecount-prefix = var.name_prefix }, var.labels)

  # The Pub/Sub service agent forwards dead letters and mints push OIDC tokens.
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  services = setunion(
    [
      "artifactregistry.googleapis.com",
      "cloudbuild.googleapis.com",
      "cloudfunctions.googleapis.com",
      # the redrive job (scheduler.tf)
      "cloudscheduler.googleapis.com",
      # Not used for the fanout trigger (we own the push subscription) but the
      # Cloud Functions API expects it enabled for gen2.
      "eventarc.googleapis.com",
      "firestore.googleapis.com",
      "iam.googleapis.com",
      "logging.googleapis.com",
      "monitoring.googleapis.com",
      "pubsub.googleapis.com",
      "run.googleapis.com",
      "secretmanager.googleapis.com",
      "storage.googleapis.com",
    ],
    var.enable_bigquery_subscription ? ["bigquery.googleapis.com"] : [],
  )

  common_env = {
    GOOGLE_CLOUD_PROJECT   = var.project_id
    TRUECOUNT_CONFIG       = var.config_path_in_source
    TRUECOUNT_EVENTS_TOPIC = google_pubsub_topic.events.name
  }

  functions = {
    ingest = {
      description = "Truecount ingest: GA4 /g/collect, /data and /mp/collect hits to canonical events."
      public      = true
      ingress     = "ALLOW_ALL"
      settings    = var.ingest_settings
      env = merge(
        local.common_env,
        { for k, v in { TRUECOUNT_CORS_ALLOWED_ORIGINS = join(",", var.cors_allowed_origins) } : k => v if length(var.cors_allowed_origins) > 0 },
      )
    }
    webhook = {
      description = "Truecount webhook: Stripe, HubSpot and CRM webhooks to canonical events."
      public      = true
      ingress     = "ALLOW_ALL"
      settings    = var.webhook_settings
      env         = local.common_env
    }
    fanout = {
      description = "Truecount fanout: dedup, identity stitching and delivery to destinations."
      public      = false
      # Pub/Sub push from the same project counts as internal traffic.
      ingress  = "ALLOW_INTERNAL_ONLY"
      settings = var.fanout_settings
      # The dead-letter topic comes from [fanout].dead_letter_topic in the config;
      # checks.tf warns when it differs from var.dead_letter_topic_name.
      env = local.common_env
    }
  }
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_project_service" "this" {
  for_each = local.services

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

resource "google_storage_bucket" "sources" {
  # checkov:skip=CKV_GCP_62: holds only build artefacts (function zips); Cloud Audit Logs already record who changes them, a separate access-log bucket adds cost and no insight.
  project                     = var.project_id
  name                        = "${var.project_id}-${var.name_prefix}-sources"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  versioning {
    enabled = true
  }

  # Replaced zips become noncurrent versions; keep them a while for rollback.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.this]
}

module "function" {
  source   = "../function"
  for_each = local.functions

  project_id                   = var.project_id
  region                       = var.region
  name                         = "${var.name_prefix}-${each.key}"
  description                  = each.value.description
  entry_point                  = each.key
  runtime                      = var.runtime
  source_dir                   = "${var.build_dir}/${each.key}"
  source_bucket                = google_storage_bucket.sources.name
  environment_variables        = each.value.env
  secret_environment_variables = local.function_secrets[each.key]
  settings                     = each.value.settings
  public                       = each.value.public
  ingress_settings             = each.value.ingress
  invoker_members              = { for k, v in { pubsub_push = "serviceAccount:${google_service_account.push_invoker.email}" } : k => v if each.key == "fanout" }
  build_service_account        = var.build_service_account
  labels                       = merge(local.labels, { truecount-function = each.key })

  depends_on = [google_project_service.this]
}
