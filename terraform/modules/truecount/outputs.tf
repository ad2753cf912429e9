output "ingest_url" {
  description = "Base URL of ingest: web GTM's server_container_url (gtag sends /g/collect there)."
  value       = module.function["ingest"].function_uri
}

output "webhook_urls" {
  description = "Webhook endpoints to register with each provider (Stripe, HubSpot, your CRM/backend)."
  value       = { for route in ["stripe", "hubspot", "crm"] : route => "${module.function["webhook"].function_uri}/${route}" }
}

output "dead_letter_subscription" {
  description = "Pull subscription holding dead-lettered events (inspect and replay from here)."
  value       = google_pubsub_subscription.dead_letter.name
}

output "events_topic" {
  description = "Topic of canonical events (TRUECOUNT_EVENTS_TOPIC)."
  value       = google_pubsub_topic.events.name
}

output "dead_letter_topic" {
  description = "Dead-letter topic of the fanout push subscription."
  value       = google_pubsub_topic.dead_letter.name
}

output "fanout_subscription" {
  description = "Push subscription that drives fanout."
  value       = google_pubsub_subscription.fanout_push.name
}

output "functions" {
  description = "Per function: function_name, function_uri, service_account_email."
  value = {
    for fn, m in module.function : fn => {
      function_name         = m.function_name
      function_uri          = m.function_uri
      service_account_email = m.service_account_email
    }
  }
}

output "secret_ids" {
  description = "Environment variable => Secret Manager secret id. Add a version to each before the functions can start (docs/deploy.md)."
  value       = { for name, s in local.secrets : s.env_var => google_secret_manager_secret.this[name].secret_id }
}

output "dashboard_url" {
  description = "Cloud Console URL of the Truecount dashboard."
  value       = "https://console.cloud.google.com/monitoring/dashboards/custom/${element(split("/", google_monitoring_dashboard.main.id), length(split("/", google_monitoring_dashboard.main.id)) - 1)}?project=${var.project_id}"
}

output "bigquery_table" {
  description = "project.dataset.table receiving every event, or null when enable_bigquery_subscription is false."
  value       = var.enable_bigquery_subscription ? "${var.project_id}.${google_bigquery_dataset.events[0].dataset_id}.${google_bigquery_table.events[0].table_id}" : null
}
