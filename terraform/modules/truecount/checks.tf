# Plan-time sanity checks that warn (they do not block): Terraform cannot parse
# TOML, so these read the config with regular expressions.

locals {
  config_text = try(file(var.config_file), "")

  config_destination_types = toset([
    for m in regexall("(?m)^\\s*type\\s*=\\s*\"(ga4|meta|google_ads|linkedin|tiktok|http)\"", local.config_text) : m[0]
  ])

  config_dead_letter_topic = try(regex("(?m)^\\s*dead_letter_topic\\s*=\\s*\"([^\"]+)\"", local.config_text)[0], null)
}

check "build_uses_config_file" {
  assert {
    condition = alltrue([
      for fn in ["ingest", "webhook", "fanout"] :
      try(filemd5("${var.build_dir}/${fn}/truecount.toml") == filemd5(var.config_file), false)
    ])
    error_message = "build/<fn>/truecount.toml differs from ${var.config_file} (or is missing): rebuild with `python scripts/build_functions.py --config ${var.config_file}`."
  }
}

check "config_destinations_provisioned" {
  assert {
    condition     = length(setsubtract(local.config_destination_types, var.enabled_destinations)) == 0
    error_message = "The config uses destination types ${jsonencode(sort(tolist(setsubtract(local.config_destination_types, var.enabled_destinations))))} that enabled_destinations does not list, so fanout gets no secrets for them."
  }
}

check "config_dead_letter_topic" {
  assert {
    condition     = local.config_dead_letter_topic == null || local.config_dead_letter_topic == var.dead_letter_topic_name
    error_message = "[fanout].dead_letter_topic in the config is ${coalesce(local.config_dead_letter_topic, "unset")} but dead_letter_topic_name is ${var.dead_letter_topic_name}."
  }
}
