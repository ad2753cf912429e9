output "ingest_url" {
  description = "Set as server_container_url in web GTM / gtag."
  value       = module.truecount.ingest_url
}

output "webhook_urls" {
  description = "Register these with Stripe, HubSpot and your CRM/backend."
  value       = module.truecount.webhook_urls
}

output "dead_letter_subscription" {
  description = "Pull subscription with dead-lettered events."
  value       = module.truecount.dead_letter_subscription
}

output "functions" {
  description = "Per function: function_name, function_uri, service_account_email."
  value       = module.truecount.functions
}

output "secret_ids" {
  description = "Environment variable => secret id to add versions to."
  value       = module.truecount.secret_ids
}

output "dashboard_url" {
  description = "Monitoring dashboard."
  value       = module.truecount.dashboard_url
}
