# One Cloud Functions (2nd gen) function with its own service account, its source
# upload, its secret access and its invoker bindings.

resource "google_service_account" "main" {
  project      = var.project_id
  account_id   = var.name
  display_name = "Truecount ${var.name} runtime"
  description  = "Runtime identity of the ${var.name} function. Granted only what this function needs."
}

# Terraform zips build/<fn> itself. The build script gives every file a fixed
# mtime and mode, and the archive provider writes fixed timestamps too, so the
# hash only changes when the content does.
data "archive_file" "source" {
  type             = "zip"
  source_dir       = var.source_dir
  output_path      = "${path.root}/.terraform/truecount-build/${var.name}.zip"
  output_file_mode = "0644"

  lifecycle {
    precondition {
      condition     = fileexists("${var.source_dir}/main.py") && fileexists("${var.source_dir}/requirements.txt") && fileexists("${var.source_dir}/truecount.toml")
      error_message = "${var.source_dir} is not a built function: run `python scripts/build_functions.py` before `terraform plan/apply`."
    }
  }
}

# The object name carries the content hash, so a changed zip is a new object and
# forces a new build and revision.
resource "google_storage_bucket_object" "source" {
  name   = "${data.archive_file.source.output_md5}-${var.name}.zip"
  bucket = var.source_bucket
  source = data.archive_file.source.output_path
}

resource "google_secret_manager_secret_iam_member" "accessor" {
  for_each = toset(values(var.secret_environment_variables))

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.main.email}"
}

resource "google_cloudfunctions2_function" "main" {
  # checkov:skip=CKV_GCP_124: ingress comes from var.ingress_settings. ingest (browsers, GTM) and webhook (Stripe, HubSpot, CRM) must be reachable from the internet; fanout is deployed with ALLOW_INTERNAL_ONLY.
  project     = var.project_id
  name        = var.name
  location    = var.region
  description = var.description
  labels      = var.labels

  build_config {
    runtime         = var.runtime
    entry_point     = var.entry_point
    service_account = var.build_service_account

    source {
      storage_source {
        bucket = var.source_bucket
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = var.settings.available_memory
    available_cpu                    = var.settings.available_cpu
    max_instance_request_concurrency = var.settings.max_instance_request_concurrency
    min_instance_count               = var.settings.min_instance_count
    max_instance_count               = var.settings.max_instance_count
    timeout_seconds                  = var.settings.timeout_seconds
    ingress_settings                 = var.ingress_settings
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.main.email
    environment_variables            = var.environment_variables

    # Secrets reach the code only as environment variables resolved by the
    # platform (STYLE §4); their values never pass through Terraform.
    dynamic "secret_environment_variables" {
      for_each = var.secret_environment_variables

      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = secret_environment_variables.value
        version    = "latest"
      }
    }
  }

  # The revision cannot start before its identity may read its secrets.
  depends_on = [google_secret_manager_secret_iam_member.accessor]
}

# Gen2 functions are Cloud Run services with the same name; invocation is
# authorised by roles/run.invoker on that service.
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  # checkov:skip=CKV_GCP_102: allUsers is granted only when var.public is true (ingest: browsers and GTM; webhook: Stripe/HubSpot/CRM). Those endpoints authenticate every request themselves (signatures, api_secret) and reject bad input with 4xx.
  for_each = merge({ for k, v in { public = "allUsers" } : k => v if var.public }, var.invoker_members)

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.main.name
  role     = "roles/run.invoker"
  member   = each.value
}
