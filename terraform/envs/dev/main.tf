# Development environment: scales to zero, small limits.

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = {
    env = "dev"
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

  ingest_settings  = { max_instance_count = 5 }
  webhook_settings = { max_instance_count = 3 }
  fanout_settings  = { max_instance_count = 3 }
}
