variable "project_id" {
  type        = string
  description = "Google Cloud project id of this environment."
}

variable "region" {
  type        = string
  description = "Region of the functions (and, by default, Firestore)."
  default     = "europe-west1"
}

variable "name_prefix" {
  type        = string
  description = "Prefix of resource names (<prefix>-ingest, ...)."
  default     = "truecount"
}

variable "config_file" {
  type        = string
  description = "TOML config the build was made with, relative to this directory."
  default     = "../../../config/example.toml"
}

variable "build_dir" {
  type        = string
  description = "Output directory of `python scripts/build_functions.py`, relative to this directory."
  default     = "../../../build"
}

variable "enabled_destinations" {
  type        = set(string)
  description = "Destination types the config uses (ga4, meta, google_ads, linkedin, tiktok, http)."
  default     = []
}

variable "enabled_sources" {
  type        = set(string)
  description = "Authenticated sources in use (stripe, hubspot, crm, mp)."
  default     = ["stripe", "hubspot", "crm"]
}

variable "cors_allowed_origins" {
  type        = list(string)
  description = "Origins allowed to call ingest from the browser."
  default     = []
}

variable "max_delivery_attempts" {
  type        = number
  description = "Push deliveries to fanout before a message is dead-lettered (5..100); keep it above every max_attempts in the config (default 8)."
  default     = 12
}

variable "pubsub_kms_key_name" {
  type        = string
  description = "Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) for the Pub/Sub topics; null keeps Google-managed encryption."
  default     = null
}

variable "firestore_location" {
  type        = string
  description = "Firestore location; null uses region."
  default     = null
}

variable "manage_firestore_database" {
  type        = bool
  description = "Create the (default) Firestore database (false if the project already has one)."
  default     = true
}

variable "alert_notification_channels" {
  type        = list(string)
  description = "Notification channels (projects/P/notificationChannels/N) for alerts."
  default     = []
}

variable "enable_bigquery_subscription" {
  type        = bool
  description = "Stream every canonical event into BigQuery too."
  default     = false
}
