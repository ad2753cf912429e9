output "function_uri" {
  description = "HTTPS URL of the function's Cloud Run service (also the OIDC audience for push)."
  value       = google_cloudfunctions2_function.main.service_config[0].uri
}

output "function_name" {
  description = "Name of the function (and of its Cloud Run service)."
  value       = google_cloudfunctions2_function.main.name
}

output "service_account_email" {
  description = "Email of the function's runtime service account."
  value       = google_service_account.main.email
}

output "source_object" {
  description = "GCS object holding the deployed source zip (named by content hash)."
  value       = google_storage_bucket_object.source.name
}
