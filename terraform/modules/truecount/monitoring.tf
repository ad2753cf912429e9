# Observability. Log-based metrics follow the log contract in docs/deploy.md:
# fanout writes one JSON line per destination and attempt with
#   {"message", "severity", "event_id", "destination", "outcome"}
# where outcome is delivered | failed (permanent) | skipped | retry (transient,
# Pub/Sub redelivers), and ingest/webhook log outcome = "publish_failed" when
# Pub/Sub refuses a publish.

locals {
  delivery_outcomes = toset(["delivered", "failed", "retry", "skipped"])

  # Log-based metric suffix => outcomes it counts. The last two feed the
  # failure-rate alert: unsuccessful / attempted, per destination.
  delivery_metrics = merge(
    { for o in local.delivery_outcomes : o => [o] },
    {
      attempted    = ["delivered", "failed", "retry"]
      unsuccessful = ["failed", "retry"]
    },
  )

  fanout_service = module.function["fanout"].function_name
  edge_services  = { for fn in ["ingest", "webhook"] : fn => module.function[fn].function_name }
  all_services   = { for fn, m in module.function : fn => m.function_name }

  fanout_logs = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.fanout_service}\""
  metric_type = "logging.googleapis.com/user"

  # Tiles for the dashboard, 12 columns wide.
  delivery_chart = {
    title = "Destination outcomes (per minute)"
    xyChart = {
      dataSets = [
        for outcome in sort(tolist(local.delivery_outcomes)) : {
          plotType       = "STACKED_BAR"
          legendTemplate = "${outcome} $${metric.labels.destination}"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter = "metric.type=\"${local.metric_type}/${google_logging_metric.delivery[outcome].name}\" resource.type=\"cloud_run_revision\""
              aggregation = {
                alignmentPeriod    = "60s"
                perSeriesAligner   = "ALIGN_DELTA"
                crossSeriesReducer = "REDUCE_SUM"
                groupByFields      = ["metric.label.destination"]
              }
            }
          }
        }
      ]
    }
  }

  failure_chart = {
    title = "Delivery failures by destination"
    xyChart = {
      dataSets = [{
        plotType = "LINE"
        timeSeriesQuery = {
          timeSeriesFilter = {
            filter = "metric.type=\"${local.metric_type}/${google_logging_metric.delivery["failed"].name}\" resource.type=\"cloud_run_revision\""
            aggregation = {
              alignmentPeriod    = "300s"
              perSeriesAligner   = "ALIGN_DELTA"
              crossSeriesReducer = "REDUCE_SUM"
              groupByFields      = ["metric.label.destination"]
            }
          }
        }
      }]
    }
  }

  subscription_charts = [
    for title, sub in {
      "Dead-letter backlog (messages)"            = { name = google_pubsub_subscription.dead_letter.name, metric = "num_undelivered_messages" }
      "Events waiting for fanout (oldest age, s)" = { name = google_pubsub_subscription.fanout_push.name, metric = "oldest_unacked_message_age" }
      } : {
      title = title
      xyChart = {
        dataSets = [{
          plotType = "LINE"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter      = "metric.type=\"pubsub.googleapis.com/subscription/${sub.metric}\" resource.type=\"pubsub_subscription\" resource.label.subscription_id=\"${sub.name}\""
              aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_MAX" }
            }
          }
        }]
      }
    }
  ]

  publish_failure_chart = {
    title = "Publish failures (ingest, webhook)"
    xyChart = {
      dataSets = [{
        plotType = "STACKED_BAR"
        timeSeriesQuery = {
          timeSeriesFilter = {
            filter = "metric.type=\"${local.metric_type}/${google_logging_metric.publish_failed.name}\" resource.type=\"cloud_run_revision\""
            aggregation = {
              alignmentPeriod    = "60s"
              perSeriesAligner   = "ALIGN_DELTA"
              crossSeriesReducer = "REDUCE_SUM"
              groupByFields      = ["resource.label.service_name"]
            }
          }
        }
      }]
    }
  }

  request_charts = [
    for fn in ["ingest", "webhook", "fanout"] : {
      title = "${fn}: requests by response class"
      xyChart = {
        dataSets = [{
          plotType = "STACKED_BAR"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter = "metric.type=\"run.googleapis.com/request_count\" resource.type=\"cloud_run_revision\" resource.label.service_name=\"${local.all_services[fn]}\""
              aggregation = {
                alignmentPeriod    = "60s"
                perSeriesAligner   = "ALIGN_DELTA"
                crossSeriesReducer = "REDUCE_SUM"
                groupByFields      = ["metric.label.response_code_class"]
              }
            }
          }
        }]
      }
    }
  ]

  latency_charts = [
    for fn in ["ingest", "webhook", "fanout"] : {
      title = "${fn}: latency p50 / p95 / p99 (ms)"
      xyChart = {
        dataSets = [
          for p in ["50", "95", "99"] : {
            plotType       = "LINE"
            legendTemplate = "p${p}"
            timeSeriesQuery = {
              timeSeriesFilter = {
                filter = "metric.type=\"run.googleapis.com/request_latencies\" resource.type=\"cloud_run_revision\" resource.label.service_name=\"${local.all_services[fn]}\""
                aggregation = {
                  alignmentPeriod    = "60s"
                  perSeriesAligner   = "ALIGN_DELTA"
                  crossSeriesReducer = "REDUCE_PERCENTILE_${p}"
                }
              }
            }
          }
        ]
      }
    }
  ]

  dashboard_widgets = concat(
    [local.delivery_chart, local.failure_chart],
    local.subscription_charts,
    [local.publish_failure_chart],
    local.request_charts,
    local.latency_charts,
  )
}

resource "google_logging_metric" "delivery" {
  for_each = local.delivery_metrics

  project     = var.project_id
  name        = "${var.name_prefix}/delivery_${each.key}"
  description = "fanout destination attempts with outcome ${join(" or ", each.value)}, by destination."
  filter      = "${local.fanout_logs} AND jsonPayload.outcome=(${join(" OR ", [for o in each.value : "\"${o}\""])})"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Truecount ${var.name_prefix} delivery ${each.key}"

    labels {
      key         = "destination"
      value_type  = "STRING"
      description = "Destination id from the config ([destinations.<id>])."
    }
  }

  label_extractors = {
    destination = "EXTRACT(jsonPayload.destination)"
  }

  depends_on = [google_project_service.this]
}

resource "google_logging_metric" "publish_failed" {
  project     = var.project_id
  name        = "${var.name_prefix}/publish_failed"
  description = "ingest/webhook requests answered 503 because Pub/Sub did not accept the publish."
  filter      = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=(\"${local.edge_services["ingest"]}\" OR \"${local.edge_services["webhook"]}\") AND jsonPayload.outcome=\"publish_failed\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Truecount ${var.name_prefix} publish failures"
  }

  depends_on = [google_project_service.this]
}

resource "google_monitoring_alert_policy" "dead_letter_backlog" {
  project               = var.project_id
  display_name          = "Truecount ${var.name_prefix}: messages in the dead-letter subscription"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.alert_notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "Undelivered dead letters > 0"

    condition_threshold {
      filter          = "resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.dead_letter.name}\" AND metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "300s"

      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Events reached the dead-letter topic after ${var.max_delivery_attempts} push attempts, or fanout parked an unparseable message. Inspect them with `gcloud pubsub subscriptions pull ${google_pubsub_subscription.dead_letter.name} --limit=10` (do not ack), fix the cause, then replay (docs/deploy.md, Dead letters)."
  }
}

resource "google_monitoring_alert_policy" "delivery_failure_ratio" {
  project               = var.project_id
  display_name          = "Truecount ${var.name_prefix}: destination failure rate"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.alert_notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "(failed + retry) / attempted > ${var.delivery_failure_ratio_threshold} for a destination (15 min)"

    condition_threshold {
      filter             = "resource.type=\"cloud_run_revision\" AND metric.type=\"${local.metric_type}/${google_logging_metric.delivery["unsuccessful"].name}\""
      denominator_filter = "resource.type=\"cloud_run_revision\" AND metric.type=\"${local.metric_type}/${google_logging_metric.delivery["attempted"].name}\""
      comparison         = "COMPARISON_GT"
      threshold_value    = var.delivery_failure_ratio_threshold
      duration           = "0s"

      aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.destination"]
      }

      denominator_aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.destination"]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "More than ${var.delivery_failure_ratio_threshold * 100}% of a destination's sends failed (outcome failed: permanent) or will be retried (outcome retry: 429, 5xx, timeouts) over 15 minutes. Check fanout logs: `jsonPayload.outcome=(\"failed\" OR \"retry\")` and `jsonPayload.destination`, and the `ledger` documents in Firestore (destinations.<id>: status, error, http_status)."
  }
}

resource "google_monitoring_alert_policy" "http_5xx" {
  for_each = local.edge_services

  project               = var.project_id
  display_name          = "Truecount ${var.name_prefix}: ${each.key} answers 5xx"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.alert_notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "${each.key} 5xx responses > ${var.http_5xx_threshold} in 5 min"

    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${each.value}\" AND metric.type=\"run.googleapis.com/request_count\" AND metric.labels.response_code_class=\"5xx\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.http_5xx_threshold
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "${each.key} answered 5xx. Bad input is always 4xx, so this is Pub/Sub publish failures (503, see the publish_failed metric), a crash, or scaling limits (429/503 at max instances). Tags and webhook providers retry."
  }
}

resource "google_monitoring_alert_policy" "publish_failed" {
  project               = var.project_id
  display_name          = "Truecount ${var.name_prefix}: Pub/Sub publish failures"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.alert_notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "publish_failed log lines > 0 in 5 min"

    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"${local.metric_type}/${google_logging_metric.publish_failed.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "ingest or webhook could not publish to ${google_pubsub_topic.events.name} and answered 503. Senders retry; check Pub/Sub status, quotas and the functions' publisher role."
  }
}

resource "google_monitoring_dashboard" "main" {
  project = var.project_id
  dashboard_json = jsonencode({
    displayName = "Truecount (${var.name_prefix})"
    labels      = { truecount = "" }
    mosaicLayout = {
      columns = 12
      tiles = [
        for i, widget in local.dashboard_widgets : {
          xPos   = (i % 2) * 6
          yPos   = floor(i / 2) * 4
          width  = 6
          height = 4
          widget = widget
        }
      ]
    }
  })

  depends_on = [google_project_service.this]
}
