# Production environment: one warm ingest instance (no cold start on browser
# hits), higher limits.

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = {
    env = "prod"
  }
}

module "truecount" {
  source = "../../modules/truecount"

  project_id                   = var.project_id
  region                       = var.region
  name_prefix                  = var.name_prefix
  build_dir                    = var.build_dir
  config_file                  = var.config_file
  enabled_destinations         = var.enabled_destinations
  enabled_sources              = var.enabled_sources
  cors_allowed_origins         = var.cors_allowed_origins
  max_delivery_attempts        = var.max_delivery_attempts
  pubsub_kms_key_name          = var.pubsub_kms_key_name
  firestore_location           = var.firestore_location
  manage_firestore_database    = var.manage_firestore_database
  alert_notification_channels  = var.alert_notification_channels
  enable_bigquery_subscription = var.enable_bigquery_subscription

  ingest_settings  = { min_instance_count = 1, max_instance_count = 100 }
  webhook_settings = { min_instance_count = 0, max_instance_count = 20 }
  fanout_settings  = { min_instance_count = 0, max_instance_count = 50, timeout_seconds = 300 }
}
