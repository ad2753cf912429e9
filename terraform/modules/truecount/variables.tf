variable "project_id" {
  type        = string
  description = "Google Cloud project id to deploy into."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid Google Cloud project id (6-30 characters)."
  }
}

variable "region" {
  type        = string
  description = "Region of the functions, the source bucket and (by default) Firestore and BigQuery."
  default     = "europe-west1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must look like europe-west1."
  }
}

variable "name_prefix" {
  type        = string
  description = "Prefix of function, service account, subscription, secret and metric names (<prefix>-ingest, ...)."
  default     = "truecount"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,18}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 2-20 characters of a-z, 0-9 and '-', start with a letter and not end with '-'."
  }
}

variable "events_topic_name" {
  type        = string
  description = "Pub/Sub topic of canonical events. CONTRACT.md default; passed to the functions as TRUECOUNT_EVENTS_TOPIC."
  default     = "truecount-events"

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$", var.events_topic_name)) && !startswith(var.events_topic_name, "goog")
    error_message = "events_topic_name must be a valid Pub/Sub topic name (3-255 characters, not starting with goog)."
  }
}

variable "dead_letter_topic_name" {
  type        = string
  description = "Pub/Sub dead-letter topic. Must equal [fanout].dead_letter_topic in the config (default truecount-events-dead-letter), which is where fanout reads it; Terraform warns on a mismatch."
  default     = "truecount-events-dead-letter"

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$", var.dead_letter_topic_name)) && !startswith(var.dead_letter_topic_name, "goog")
    error_message = "dead_letter_topic_name must be a valid Pub/Sub topic name (3-255 characters, not starting with goog)."
  }
}

variable "enabled_destinations" {
  type        = set(string)
  description = "Destination types the config uses. Each one creates its credential secrets and mounts them into fanout."
  default     = []

  validation {
    condition     = alltrue([for d in var.enabled_destinations : contains(["ga4", "meta", "google_ads", "linkedin", "tiktok", "http"], d)])
    error_message = "enabled_destinations may only contain ga4, meta, google_ads, linkedin, tiktok, http."
  }
}

variable "enabled_sources" {
  type        = set(string)
  description = "Authenticated sources in use: stripe, hubspot, crm (webhook secrets) and mp (accepted api_secret values for ingest's /mp/collect)."
  default     = ["stripe", "hubspot", "crm"]

  validation {
    condition     = alltrue([for s in var.enabled_sources : contains(["stripe", "hubspot", "crm", "mp"], s)])
    error_message = "enabled_sources may only contain stripe, hubspot, crm, mp."
  }
}

variable "additional_secrets" {
  type = map(object({
    env_var   = string
    functions = set(string)
  }))
  description = "Extra secrets for credentials the config names under another variable (e.g. a second GA4 property): secret suffix => { env_var, functions }."
  default     = {}

  validation {
    condition     = alltrue([for k, s in var.additional_secrets : can(regex("^[a-z][a-z0-9-]{0,39}$", k)) && can(regex("^[A-Z_][A-Z0-9_]*$", s.env_var)) && length(s.functions) > 0 && alltrue([for f in s.functions : contains(["ingest", "webhook", "fanout"], f)])])
    error_message = "additional_secrets keys must be kebab-case (<= 40 chars), env_var UPPER_SNAKE_CASE, functions a non-empty subset of ingest, webhook, fanout."
  }
}

variable "build_dir" {
  type        = string
  description = "Directory written by `python scripts/build_functions.py` (holds ingest/, webhook/, fanout/)."
}

variable "config_file" {
  type        = string
  description = "The TOML config the build was made with. Terraform only checks it (it warns when the build holds another file, when the config names a destination type or dead-letter topic that this module does not provision, or when a max_attempts in it is not below max_delivery_attempts)."

  validation {
    condition     = endswith(var.config_file, ".toml")
    error_message = "config_file must be a .toml file."
  }
}

variable "config_path_in_source" {
  type        = string
  description = "Path of the config inside the deployed function (TRUECOUNT_CONFIG). Gen2 Python functions run from /workspace."
  default     = "/workspace/truecount.toml"
}

variable "runtime" {
  type        = string
  description = "Python runtime of the three functions."
  default     = "python311"

  validation {
    condition     = contains(["python311", "python312", "python313"], var.runtime)
    error_message = "runtime must be python311, python312 or python313."
  }
}

variable "cors_allowed_origins" {
  type        = list(string)
  description = "Per-environment CORS origins for ingest, passed as TRUECOUNT_CORS_ALLOWED_ORIGINS (comma-separated, set only when non-empty). ingest adds them to the config's [ingest].cors_origins, so the config can hold the origins every environment shares and this variable the environment's own."
  default     = []

  validation {
    condition     = alltrue([for o in var.cors_allowed_origins : can(regex("^https?://[^/]+$", o))])
    error_message = "cors_allowed_origins entries must be origins like https://shop.example.com (scheme and host, no path)."
  }
}

variable "ingest_settings" {
  type = object({
    available_memory                 = optional(string, "512Mi")
    available_cpu                    = optional(string, "1")
    max_instance_request_concurrency = optional(number, 80)
    min_instance_count               = optional(number, 0)
    max_instance_count               = optional(number, 50)
    timeout_seconds                  = optional(number, 30)
  })
  description = "Sizing of ingest (browser hits: short, many, concurrent)."
  default     = {}
}

variable "webhook_settings" {
  type = object({
    available_memory                 = optional(string, "512Mi")
    available_cpu                    = optional(string, "1")
    max_instance_request_concurrency = optional(number, 40)
    min_instance_count               = optional(number, 0)
    max_instance_count               = optional(number, 20)
    timeout_seconds                  = optional(number, 60)
  })
  description = "Sizing of webhook (Stripe, HubSpot, CRM; HubSpot lookups make it slower)."
  default     = {}
}

variable "fanout_settings" {
  type = object({
    available_memory                 = optional(string, "512Mi")
    available_cpu                    = optional(string, "1")
    max_instance_request_concurrency = optional(number, 10)
    min_instance_count               = optional(number, 0)
    max_instance_count               = optional(number, 30)
    timeout_seconds                  = optional(number, 120)
  })
  description = "Sizing of fanout. timeout_seconds is also the push subscription's ack deadline, so it must be 10..600."
  default     = {}

  validation {
    condition     = var.fanout_settings.timeout_seconds >= 10 && var.fanout_settings.timeout_seconds <= 600
    error_message = "fanout_settings.timeout_seconds must be between 10 and 600 (the Pub/Sub ack deadline range)."
  }
}

variable "max_delivery_attempts" {
  type        = number
  description = "Pub/Sub deliveries of one message to fanout before it goes to the dead-letter topic. Must exceed every max_attempts in the config ([fanout] default 8, per-destination overrides): fanout settles a destination as failed only at its own limit, so a message dead-lettered earlier leaves the ledger saying pending. The margin covers deliveries that attempt nothing (lease held by a concurrent delivery, Firestore errors, timeouts) and Pub/Sub's best-effort delivery count. checks.tf warns when it is too small."
  default     = 12

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100 && floor(var.max_delivery_attempts) == var.max_delivery_attempts
    error_message = "max_delivery_attempts must be an integer between 5 and 100 (Pub/Sub limits)."
  }
}

variable "pubsub_kms_key_name" {
  type        = string
  description = "Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) that encrypts the events and dead-letter topics (CMEK). null keeps Google-managed encryption. When set, the Pub/Sub service agent gets roles/cloudkms.cryptoKeyEncrypterDecrypter on the key, so the deploying identity needs permission to set IAM on it."
  default     = null

  validation {
    condition     = var.pubsub_kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.pubsub_kms_key_name))
    error_message = "pubsub_kms_key_name must be null or projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY."
  }
}

variable "retry_minimum_backoff_seconds" {
  type        = number
  description = "Shortest wait before Pub/Sub redelivers a message fanout failed (exponential backoff)."
  default     = 10

  validation {
    condition     = var.retry_minimum_backoff_seconds >= 0 && var.retry_minimum_backoff_seconds <= 600
    error_message = "retry_minimum_backoff_seconds must be between 0 and 600."
  }
}

variable "retry_maximum_backoff_seconds" {
  type        = number
  description = "Longest wait between redeliveries (exponential backoff cap)."
  default     = 600

  validation {
    condition     = var.retry_maximum_backoff_seconds >= 0 && var.retry_maximum_backoff_seconds <= 600
    error_message = "retry_maximum_backoff_seconds must be between 0 and 600."
  }
}

variable "redrive_schedule" {
  type        = string
  description = "Cron schedule (UTC) of the Cloud Scheduler job that asks fanout to redrive deferred deliveries (Google Ads TOO_RECENT_EVENT) once due."
  default     = "*/15 * * * *"

  validation {
    condition     = length(split(" ", trimspace(var.redrive_schedule))) == 5
    error_message = "redrive_schedule must be a 5-field cron expression, e.g. \"*/15 * * * *\"."
  }
}

variable "dead_letter_retention_days" {
  type        = number
  description = "How long dead-lettered messages (acked or not) stay replayable on the dead-letter subscription."
  default     = 7

  validation {
    condition     = var.dead_letter_retention_days >= 1 && var.dead_letter_retention_days <= 7
    error_message = "dead_letter_retention_days must be between 1 and 7 (Pub/Sub subscription retention limit)."
  }
}

variable "manage_firestore_database" {
  type        = bool
  description = "Create the (default) Firestore database. Set false when the project already has one (then import it or leave it unmanaged)."
  default     = true
}

variable "firestore_location" {
  type        = string
  description = "Firestore location (a region such as europe-west1 or a multi-region such as eur3); null uses var.region. Cannot change after creation."
  default     = null
}

variable "ledger_indexes" {
  type = list(list(object({
    field_path = string
    order      = optional(string, "ASCENDING")
  })))
  description = "Composite indexes on the ledger collection for the ops CLI (truecount.ops.store). Single-field indexes (updated_at for status; transaction_id, lead_id, event_ids, ... for trace) are automatic and need no entry; only the unqueried map fields are exempted (firestore.tf)."
  default = [
    # `truecount reconcile`: ledger where name in [...] and created_at >= since
    [{ field_path = "name" }, { field_path = "created_at" }],
    # newest entries of one event name (console and ad-hoc queries)
    [{ field_path = "name" }, { field_path = "updated_at", order = "DESCENDING" }],
  ]

  validation {
    condition     = alltrue([for idx in var.ledger_indexes : length(idx) >= 2 && alltrue([for f in idx : contains(["ASCENDING", "DESCENDING"], f.order)])])
    error_message = "each ledger index needs at least two fields, each ordered ASCENDING or DESCENDING."
  }
}

variable "alert_notification_channels" {
  type        = list(string)
  description = "Cloud Monitoring notification channel ids (projects/P/notificationChannels/N) that receive every alert."
  default     = []

  validation {
    condition     = alltrue([for c in var.alert_notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "alert_notification_channels entries must be projects/PROJECT/notificationChannels/ID."
  }
}

variable "delivery_failure_ratio_threshold" {
  type        = number
  description = "Alert when (failed + retry) / (delivered + failed + retry) for one destination exceeds this over 15 minutes."
  default     = 0.1

  validation {
    condition     = var.delivery_failure_ratio_threshold > 0 && var.delivery_failure_ratio_threshold <= 1
    error_message = "delivery_failure_ratio_threshold must be in (0, 1]."
  }
}

variable "http_5xx_threshold" {
  type        = number
  description = "Alert when ingest or webhook answers more 5xx responses than this in 5 minutes."
  default     = 5

  validation {
    condition     = var.http_5xx_threshold >= 0
    error_message = "http_5xx_threshold must not be negative."
  }
}

variable "enable_bigquery_subscription" {
  type        = bool
  description = "Also stream every canonical event into a BigQuery table (Pub/Sub BigQuery subscription) for analysis."
  default     = false
}

variable "bigquery_location" {
  type        = string
  description = "Location of the BigQuery dataset; null uses var.region."
  default     = null
}

variable "bigquery_partition_expiration_days" {
  type        = number
  description = "Days a day-partition of the events table is kept (events carry IP and user agent)."
  default     = 90

  validation {
    condition     = var.bigquery_partition_expiration_days >= 1 && var.bigquery_partition_expiration_days <= 3650
    error_message = "bigquery_partition_expiration_days must be between 1 and 3650."
  }
}

variable "build_service_account" {
  type        = string
  description = "Service account (projects/P/serviceAccounts/EMAIL) Cloud Build uses to build the functions; null uses the project default."
  default     = null
}

variable "labels" {
  type        = map(string)
  description = "Labels added to every labelled resource."
  default     = {}
}
