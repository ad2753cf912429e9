variable "project_id" {
  type        = string
  description = "Google Cloud project id that hosts the function."
}

variable "region" {
  type        = string
  description = "Region of the function and of its Cloud Run service."
}

variable "name" {
  type        = string
  description = "Kebab-case name of the function, its Cloud Run service and its service account (e.g. truecount-ingest)."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.name))
    error_message = "name must be 6-30 characters of a-z, 0-9 and '-', start with a letter and not end with '-' (it is also the service account id)."
  }
}

variable "description" {
  type        = string
  description = "Human-readable description of the function."
  default     = ""
}

variable "entry_point" {
  type        = string
  description = "Python function that functions-framework serves (CONTRACT.md: ingest, webhook, fanout)."

  validation {
    condition     = can(regex("^[A-Za-z_][A-Za-z0-9_]*$", var.entry_point))
    error_message = "entry_point must be a Python identifier."
  }
}

variable "runtime" {
  type        = string
  description = "Cloud Functions gen2 Python runtime."
  default     = "python311"

  validation {
    condition     = contains(["python311", "python312", "python313"], var.runtime)
    error_message = "runtime must be python311, python312 or python313."
  }
}

variable "source_dir" {
  type        = string
  description = "Directory produced by `python scripts/build_functions.py` (build/<fn>): main.py, requirements.txt, truecount.toml and the truecount package."
}

variable "source_bucket" {
  type        = string
  description = "Name of the GCS bucket that receives the source zip."
}

variable "environment_variables" {
  type        = map(string)
  description = "Plain (non-secret) environment variables. Never put a secret here: use secret_environment_variables."
  default     = {}
}

variable "secret_environment_variables" {
  type        = map(string)
  description = "Environment variable name => Secret Manager secret id (short id, same project). The function's service account gets roles/secretmanager.secretAccessor on exactly these secrets; the value is read from the latest version at instance start."
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.secret_environment_variables) : can(regex("^[A-Z_][A-Z0-9_]*$", k))])
    error_message = "secret environment variable names must be UPPER_SNAKE_CASE."
  }
}

variable "settings" {
  type = object({
    available_memory                 = optional(string, "512Mi")
    available_cpu                    = optional(string, "1")
    max_instance_request_concurrency = optional(number, 40)
    min_instance_count               = optional(number, 0)
    max_instance_count               = optional(number, 20)
    timeout_seconds                  = optional(number, 60)
  })
  description = "Sizing and scaling of the function's Cloud Run service."
  default     = {}

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.settings.available_memory))
    error_message = "settings.available_memory must look like 256Mi or 1Gi."
  }

  validation {
    condition     = can(tonumber(var.settings.available_cpu)) && try(tonumber(var.settings.available_cpu) > 0 && tonumber(var.settings.available_cpu) <= 8, false)
    error_message = "settings.available_cpu must be a number of vCPUs in (0, 8]."
  }

  validation {
    condition     = var.settings.max_instance_request_concurrency >= 1 && var.settings.max_instance_request_concurrency <= 1000
    error_message = "settings.max_instance_request_concurrency must be between 1 and 1000."
  }

  validation {
    condition     = var.settings.max_instance_request_concurrency == 1 || try(tonumber(var.settings.available_cpu) >= 1, false)
    error_message = "concurrency above 1 needs available_cpu >= 1 (Cloud Run functions rule)."
  }

  validation {
    condition     = var.settings.min_instance_count >= 0 && var.settings.max_instance_count >= 1 && var.settings.min_instance_count <= var.settings.max_instance_count
    error_message = "settings need 0 <= min_instance_count <= max_instance_count and max_instance_count >= 1."
  }

  validation {
    condition     = var.settings.timeout_seconds >= 1 && var.settings.timeout_seconds <= 3600
    error_message = "settings.timeout_seconds must be between 1 and 3600."
  }
}

variable "public" {
  type        = bool
  description = "Grant roles/run.invoker to allUsers. Only for endpoints that browsers or webhook providers call and that authenticate requests themselves."
  default     = false
}

variable "invoker_members" {
  type        = map(string)
  description = "Static key => IAM member granted roles/run.invoker on the function's Cloud Run service (e.g. { pubsub_push = \"serviceAccount:...\" }). Keys must be known at plan time."
  default     = {}
}

variable "ingress_settings" {
  type        = string
  description = "Who may reach the function over the network."
  default     = "ALLOW_INTERNAL_ONLY"

  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.ingress_settings)
    error_message = "ingress_settings must be ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
}

variable "build_service_account" {
  type        = string
  description = "Full resource name (projects/P/serviceAccounts/EMAIL) of the service account Cloud Build uses to build the function; null uses the project default."
  default     = null
}

variable "labels" {
  type        = map(string)
  description = "Labels applied to the function."
  default     = {}
}
