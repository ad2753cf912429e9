"""Cost per million events, from measured figures and Google Cloud list prices.

Inputs (result files of the other benchmarks, in ``benchmarks/results`` or
``BENCH_RESULTS_DIR``):

* ``firestore_ops.json``: Firestore reads and writes per event class, and the
  CPU time of ``FanoutService.handle`` per event;
* ``ingest_throughput.json``: server CPU ms per ingest request (GA4 batch of
  10, and Data Client single event);
* ``fanout_throughput.json``: fanout process CPU ms per conversion (five
  platforms) and the no-op push consumer's CPU ms per message (the framework's
  share of every fanout call).

Pub/Sub message sizes are computed from the canonical events the benchmarks
send. Billing model (Cloud Run functions are billed as Cloud Run services with
request-based billing): billed vCPU-seconds = measured CPU seconds /
``UTILISATION`` (an instance is billed while it serves, not only while it
computes), memory = the same instance-seconds x 0.5 GiB (the Terraform default,
512Mi, 1 vCPU). Free tiers are ignored.

Prices: USD list prices, Tier 1 region us-central1, read on :data:`PRICE_DATE`.

Run from the repository root (after the other benchmarks)::

    .venv/bin/python -m benchmarks.cost
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from benchmarks import common, events

PRICE_DATE = "2026-11-29"
REGION = "us-central1 (Cloud Run Tier 1; Firestore regional us-central1)"

#: Cloud Run / Cloud Run functions, request-based billing, Tier 1.
RUN_VCPU_S = 0.000024
RUN_GIB_S = 0.0000025
RUN_REQUEST = 0.40 / 1_000_000
#: Cloud Run, instance-based billing (CPU always allocated), Tier 1: sGTM.
RUN_ALWAYS_VCPU_S = 0.000018
RUN_ALWAYS_GIB_S = 0.000002
#: Pub/Sub throughput: $40 per TiB; at least 1000 bytes per publish/push request.
PUBSUB_PER_BYTE = 40 / 2**40
PUBSUB_MIN_BYTES = 1000
#: Firestore Standard edition, us-central1.
FIRESTORE_READ = 0.03 / 100_000
FIRESTORE_WRITE = 0.09 / 100_000

SOURCES = {
    "Cloud Run pricing (CPU, memory, requests; request- and instance-based)": (
        "https://cloud.google.com/run/pricing"
    ),
    "Cloud Run functions pricing (billed as Cloud Run)": (
        "https://cloud.google.com/functions/pricing-overview"
    ),
    "Pub/Sub pricing ($40/TiB, 1000-byte minimum per request)": (
        "https://cloud.google.com/pubsub/pricing"
    ),
    "Firestore pricing (per-location table)": "https://cloud.google.com/firestore/pricing",
    "sGTM on Cloud Run, planning infrastructure and costs": (
        "https://developers.google.com/tag-platform/learn/sst-fundamentals/"
        "7-planning-infrastructure"
    ),
}

UTILISATION = 0.5
MEMORY_GIB = 0.5
SECONDS_PER_MONTH = 730 * 3600
SGTM_INSTANCES = 3
VOLUMES = (1_000_000, 10_000_000, 100_000_000)
GOALS = {"funnel": 1.0, "conversion": 5.0}


def message_bytes(event: Any) -> int:
    """Billable size of one Pub/Sub message: body, attributes, timestamp, id."""
    attrs = sum(len(k) + len(v) for k, v in event.pubsub_attributes().items())
    return len(event.to_json_bytes()) + attrs + 20 + 16


@dataclass
class Line:
    """One cost component, in USD per event."""

    name: str
    usd: float
    basis: str


def compute_usd(cpu_ms: float) -> float:
    """CPU plus memory cost of ``cpu_ms`` of measured CPU on Cloud Run."""
    instance_s = cpu_ms / 1000 / UTILISATION
    return instance_s * RUN_VCPU_S + instance_s * MEMORY_GIB * RUN_GIB_S


def _required(name: str) -> dict[str, Any]:
    data = common.load_result(name)
    if data is None:
        raise SystemExit(
            f"{common.results_dir()}/{name}.json is missing: run "
            f"`python -m benchmarks.{name}` first (or `python -m benchmarks.run_all`)"
        )
    return data


def lines_per_class() -> tuple[dict[str, list[Line]], dict[str, Any]]:
    """The cost lines of a funnel event and of a conversion."""
    fs = _required("firestore_ops")["results"]
    ingest = _required("ingest_throughput")["results"]
    fanout = _required("fanout_throughput")["aggregate"]
    framework_ms = fanout["noop"]["cpu_ms_per_event"]
    ga4_ms = ingest["ga4"]["truecount"]["cpu_ms_per_request"] / 10
    data_ms = ingest["data"]["truecount"]["cpu_ms_per_request"]
    funnel_ms = framework_ms + fs["funnel"]["cpu_ms_per_event"]
    conv_ms = fanout["truecount"]["cpu_ms_per_event"]
    pv = message_bytes(events.page_view("0123456789ab"))
    buy = message_bytes(events.purchase("0123456789ab"))

    def firestore(key: str) -> Line:
        per = fs[key]["per_event"]
        usd = per["reads"] * FIRESTORE_READ + per["writes"] * FIRESTORE_WRITE
        return Line(
            "Firestore", usd, f"{per['reads']:g} reads + {per['writes']:g} writes"
        )

    funnel = [
        Line(
            "Cloud Run requests",
            1.1 * RUN_REQUEST,
            "0.1 ingest (GA4 batch of 10) + 1 fanout",
        ),
        Line("ingest CPU + memory", compute_usd(ga4_ms), f"{ga4_ms:.3f} CPU ms"),
        Line("fanout CPU + memory", compute_usd(funnel_ms), f"{funnel_ms:.2f} CPU ms"),
        Line(
            "Pub/Sub",
            (max(PUBSUB_MIN_BYTES, 10 * pv) / 10 + max(PUBSUB_MIN_BYTES, pv))
            * PUBSUB_PER_BYTE,
            f"{pv} B message: 1/10 of a publish + 1 push",
        ),
        firestore("funnel"),
    ]
    conversion = [
        Line("Cloud Run requests", 2 * RUN_REQUEST, "1 webhook + 1 fanout"),
        Line(
            "webhook CPU + memory",
            compute_usd(data_ms),
            f"{data_ms:.2f} CPU ms (ingest /data as proxy)",
        ),
        Line(
            "fanout CPU + memory",
            compute_usd(conv_ms),
            f"{conv_ms:.2f} CPU ms, 5 platforms",
        ),
        Line(
            "Pub/Sub",
            2 * max(PUBSUB_MIN_BYTES, buy) * PUBSUB_PER_BYTE,
            f"{buy} B message: 1 publish + 1 push",
        ),
        firestore("conversion"),
    ]
    inputs = {
        "framework_cpu_ms": framework_ms,
        "ingest_ga4_cpu_ms_per_event": ga4_ms,
        "ingest_data_cpu_ms_per_request": data_ms,
        "fanout_funnel_cpu_ms": funnel_ms,
        "fanout_conversion_cpu_ms": conv_ms,
        "page_view_message_bytes": pv,
        "purchase_message_bytes": buy,
    }
    return {"funnel": funnel, "conversion": conversion}, inputs


def sgtm_monthly() -> float:
    """3 always-on 1 vCPU / 512 MiB instances, instance-based billing."""
    per_s = RUN_ALWAYS_VCPU_S + MEMORY_GIB * RUN_ALWAYS_GIB_S
    return SGTM_INSTANCES * SECONDS_PER_MONTH * per_s


def run() -> dict[str, Any]:
    """Compute every figure; return the summary."""
    classes, inputs = lines_per_class()
    per_million = {k: sum(x.usd for x in v) * 1_000_000 for k, v in classes.items()}
    breakdown = []
    for key, lines in classes.items():
        for line in lines:
            breakdown.append([key, line.name, f"{line.usd * 1e6:.4f}", line.basis])
        verdict = common.verdict(per_million[key] <= GOALS[key])
        breakdown.append(
            [
                key,
                "**total**",
                f"**{per_million[key]:.3f}**",
                f"goal ≤ ${GOALS[key]:g}: {verdict}",
            ]
        )
    mix = 0.9 * per_million["funnel"] + 0.1 * per_million["conversion"]
    sgtm = sgtm_monthly()
    comparison = [
        [
            f"{volume:,}",
            f"{per_million['funnel'] * volume / 1e6:,.2f}",
            f"{per_million['conversion'] * volume / 1e6:,.2f}",
            f"{mix * volume / 1e6:,.2f}",
            f"{sgtm:,.2f}",
        ]
        for volume in VOLUMES
    ]
    return {
        "date": common.today(),
        "price_date": PRICE_DATE,
        "region": REGION,
        "inputs": inputs,
        "per_million": {k: round(v, 4) for k, v in per_million.items()},
        "sgtm_monthly": round(sgtm, 2),
        "breakdown": common.table(
            ["class", "component", "USD per million events", "basis"], breakdown
        ),
        "comparison": common.table(
            [
                "events / month",
                "Truecount, all funnel (USD)",
                "Truecount, all conversions (USD)",
                "Truecount, 90/10 mix (USD)",
                f"sGTM, {SGTM_INSTANCES} min instances (USD)",
            ],
            comparison,
        ),
    }


def markdown(summary: dict[str, Any], command: str) -> str:
    """The docs section."""
    sources = "\n".join(f"- {k}: <{v}>" for k, v in SOURCES.items())
    return f"""Computed {summary["date"]} from the result files of the benchmarks above.
Command: `{command}`

Prices: USD list prices read {summary["price_date"]}, region {summary["region"]}; \
free tiers ignored. Cloud Run request-based billing: $0.000024 per vCPU-second, \
$0.0000025 per GiB-second, $0.40 per million requests; instance-based (sGTM): \
$0.000018 per vCPU-second, $0.000002 per GiB-second. Pub/Sub: $40 per TiB, at \
least 1000 bytes per publish or push request. Firestore: $0.03 per 100,000 \
reads, $0.09 per 100,000 writes (a multi-region location such as nam5 costs twice).

Model: billed instance-seconds = measured CPU seconds / {UTILISATION} (instances \
are billed while serving, including time waiting on Pub/Sub and Firestore), \
1 vCPU and {MEMORY_GIB} GiB per instance (the Terraform defaults), concurrency > 1. \
A funnel event arrives in a 10-event GA4 batch, is a `page_view` with \
idempotence = "none" and no click ids; a conversion is a backend purchase \
(webhook, ledger claim, identity lookup, five platforms).

{summary["breakdown"]}

Per month, compared with sGTM on Cloud Run with {SGTM_INSTANCES} always-on \
instances (1 vCPU, 512 MiB, instance-based billing, 730 h): the sGTM figure is a \
floor (no scale-out, no egress, no log volume) and does no deduplication or \
ledger. Truecount scales to zero (min instances 0).

{summary["comparison"]}

Price pages:

{sources}"""


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    summary = run()
    common.save_result("cost", summary)
    print(summary["breakdown"])
    print()
    print(summary["comparison"])
    if args.write_docs:
        common.update_docs("cost", markdown(summary, "python -m benchmarks.cost"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
