# One Secret Manager secret per credential. Terraform creates the empty secret
# and its IAM; values are added out of band (`gcloud secrets versions add`, see
# docs/deploy.md) and never appear in Terraform code, variables or state.

locals {
  # Logical name => the environment variable CONTRACT.md defines, the function
  # that reads it, and the destination type or source that needs it.
  secret_catalog = {
    ga4-api-secret             = { env_var = "TRUECOUNT_GA4_API_SECRET", function = "fanout", needed_by = "ga4" }
    meta-access-token          = { env_var = "TRUECOUNT_META_ACCESS_TOKEN", function = "fanout", needed_by = "meta" }
    google-ads-developer-token = { env_var = "TRUECOUNT_GOOGLE_ADS_DEVELOPER_TOKEN", function = "fanout", needed_by = "google_ads" }
    google-ads-client-id       = { env_var = "TRUECOUNT_GOOGLE_ADS_CLIENT_ID", function = "fanout", needed_by = "google_ads" }
    google-ads-client-secret   = { env_var = "TRUECOUNT_GOOGLE_ADS_CLIENT_SECRET", function = "fanout", needed_by = "google_ads" }
    google-ads-refresh-token   = { env_var = "TRUECOUNT_GOOGLE_ADS_REFRESH_TOKEN", function = "fanout", needed_by = "google_ads" }
    linkedin-token             = { env_var = "TRUECOUNT_LINKEDIN_TOKEN", function = "fanout", needed_by = "linkedin" }
    tiktok-access-token        = { env_var = "TRUECOUNT_TIKTOK_ACCESS_TOKEN", function = "fanout", needed_by = "tiktok" }
    http-sink-secret           = { env_var = "TRUECOUNT_HTTP_SINK_SECRET", function = "fanout", needed_by = "http" }
    stripe-signing-secrets     = { env_var = "TRUECOUNT_STRIPE_SIGNING_SECRETS", function = "webhook", needed_by = "stripe" }
    hubspot-client-secret      = { env_var = "TRUECOUNT_HUBSPOT_CLIENT_SECRET", function = "webhook", needed_by = "hubspot" }
    hubspot-token              = { env_var = "TRUECOUNT_HUBSPOT_TOKEN", function = "webhook", needed_by = "hubspot" }
    crm-keys                   = { env_var = "TRUECOUNT_CRM_KEYS", function = "webhook", needed_by = "crm" }
    mp-api-secrets             = { env_var = "TRUECOUNT_MP_API_SECRETS", function = "ingest", needed_by = "mp" }
  }

  enabled_features = setunion(var.enabled_destinations, var.enabled_sources)

  secrets = merge(
    {
      for name, s in local.secret_catalog : name => { env_var = s.env_var, functions = toset([s.function]) }
      if contains(local.enabled_features, s.needed_by)
    },
    var.additional_secrets,
  )

  # function => { ENV_VAR => secret id }: each function sees only its own.
  function_secrets = {
    for fn in ["ingest", "webhook", "fanout"] : fn => {
      for name, s in local.secrets : s.env_var => google_secret_manager_secret.this[name].secret_id
      if contains(s.functions, fn)
    }
  }
}

resource "google_secret_manager_secret" "this" {
  for_each = local.secrets

  project   = var.project_id
  secret_id = "${var.name_prefix}-${each.key}"
  labels    = merge(local.labels, { truecount-env-var = substr(lower(each.value.env_var), 0, 63) })

  replication {
    auto {}
  }

  lifecycle {
    precondition {
      condition     = length(distinct([for s in values(local.secrets) : s.env_var])) == length(local.secrets)
      error_message = "two secrets map to the same environment variable; check additional_secrets."
    }
  }

  depends_on = [google_project_service.this]
}
