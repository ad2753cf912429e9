# Plan-time sanity checks that warn (they do not block): Terraform cannot parse
# TOML, so these read the config with regular expressions.

locals {
  config_text = try(file(var.config_file), "")

  config_destination_types = toset([
    for m in regexall("(?m)^\\s*type\\s*=\\s*\"(ga4|meta|google_ads|linkedin|tiktok|http)\"", local.config_text) : m[0]
  ])

  config_dead_letter_topic = try(regex("(?m)^\\s*dead_letter_topic\\s*=\\s*\"([^\"]+)\"", local.config_text)[0], null)

  # Attempt limits: [fanout].max_attempts (default 8, like truecount.config)
  # and every max_attempts a destination sets. The [fanout] table runs from its
  # header to the next table header.
  config_fanout_table = try(regex("(?s)(?:^|\n)[ \t]*\\[fanout\\][ \t]*(?:#[^\n]*)?\n(.*?)(?:\n[ \t]*\\[|$)", local.config_text)[0], "")
  config_fanout_max_attempts = tonumber(try(
    regex("(?m)^[ \t]*max_attempts[ \t]*=[ \t]*([0-9]+)", local.config_fanout_table)[0],
    "8",
  ))
  config_max_attempts = max(local.config_fanout_max_attempts, [
    for m in regexall("(?m)^[ \t]*max_attempts[ \t]*=[ \t]*([0-9]+)", local.config_text) : tonumber(m[0])
  ]...)
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

# Pub/Sub must not dead-letter a message before fanout has used up its own
# attempts: fanout marks a destination failed only at max_attempts, so an
# earlier dead letter leaves the ledger entry pending.
check "dead_letter_after_fanout_attempts" {
  assert {
    condition     = var.max_delivery_attempts > local.config_max_attempts
    error_message = "max_delivery_attempts (${var.max_delivery_attempts}) must be greater than the largest max_attempts in ${var.config_file} (${local.config_max_attempts}, [fanout] default 8): Pub/Sub would dead-letter messages while fanout still retries them, leaving ledger destinations pending. Leave a margin of a few deliveries."
  }
}
