"""Pure aggregation over ledger documents written by fanout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ops_support import EXPECTED_CONVERSIONS, EXPECTED_COVERAGE, EXPECTED_STATUS

from truecount.core.dedup import doc_id
from truecount.ops import queries
from truecount.testing import InMemoryLedger

SINCE = datetime(2026, 4, 4, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("30m", timedelta(minutes=30)),
        ("2w", timedelta(weeks=2)),
        ("90s", timedelta(seconds=90)),
        (" 1.5H ", timedelta(hours=1.5)),
    ],
)
def test_parse_duration_reads_number_and_unit(text: str, expected: timedelta) -> None:
    """Durations take one number and one unit letter."""
    assert queries.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "0h", "-1d", "1y", "1d2h"])
def test_parse_duration_rejects_other_forms(text: str) -> None:
    """Anything else is a ValueError that quotes the input."""
    with pytest.raises(ValueError, match="not a duration"):
        queries.parse_duration(text)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"error": "http 400", "http_status": 400}, "http_400"),
        (
            {"error": "max_attempts: http 503", "http_status": 503},
            "max_attempts/http_503",
        ),
        ({"error": "max_attempts: timeout: over 25s"}, "max_attempts/timeout"),
        ({"error": "expired"}, "expired"),
        ({"error": "build: ValueError"}, "build"),
        ({"error": "send: ConnectError"}, "send"),
        ({}, "unknown"),
    ],
)
def test_error_class_prefers_http_status_then_first_word(
    record: dict[str, Any], expected: str
) -> None:
    """Failed records group by HTTP status, else by the error's first word."""
    assert queries.error_class(record) == expected


def test_status_report_counts_fanout_outcomes_per_destination(
    scenario_docs: list[dict[str, Any]],
) -> None:
    """Delivered, skipped by reason, failed by class and dedup hits match the day."""
    report = queries.status_report(scenario_docs, SINCE).to_dict()

    assert report["documents"] == EXPECTED_STATUS["documents"]
    assert report["held"] == EXPECTED_STATUS["held"]
    assert report["destinations"] == EXPECTED_STATUS["destinations"]
    assert report["dedup_hits"] == EXPECTED_STATUS["dedup_hits"]


def test_status_report_leaves_debug_events_out_unless_asked() -> None:
    """Debug entries are counted apart by default and included on request."""
    docs = [
        {
            "debug": True,
            "delivery_event_id": "e1",
            "destinations": {"a": {"status": "skipped", "reason": "debug"}},
        },
        {
            "delivery_event_id": "e2",
            "destinations": {"a": {"status": "pending", "retryable": True}},
        },
    ]

    default = queries.status_report(docs, SINCE)
    everything = queries.status_report(docs, SINCE, include_debug=True)

    assert (default.documents, default.debug) == (1, 1)
    assert default.destinations["a"].pending == 1
    assert default.destinations["a"].retrying == 1
    assert dict(everything.destinations["a"].skipped) == {"debug": 1}


def test_status_report_counts_deferred_destinations_apart_from_retries() -> None:
    """A pending record with ``not_before`` is deferred, not retrying."""
    docs = [
        {
            "delivery_event_id": "e1",
            "destinations": {
                "ads": {
                    "status": "pending",
                    "reason": "deferred:TOO_RECENT_EVENT",
                    "not_before": SINCE + timedelta(hours=6),
                }
            },
        },
        {
            "delivery_event_id": "e2",
            "destinations": {"ads": {"status": "pending", "retryable": True}},
        },
    ]

    row = queries.status_report(docs, SINCE).to_dict()["destinations"]["ads"]

    assert (row["pending"], row["retrying"], row["deferred"]) == (2, 1, 1)


def test_source_pair_names_repeated_source_twice() -> None:
    """Two event_ids from one source are a hit labelled source+source."""
    doc = {"sources": {"stripe": [{"event_id": "a"}, {"event_id": "b"}]}}

    assert queries.source_pair(doc) == "stripe+stripe"
    assert queries.source_pair({"sources": {"ga4": [{"event_id": "a"}]}}) is None


def test_reconcile_report_gives_backend_browser_shares_per_conversion(
    scenario_docs: list[dict[str, Any]],
) -> None:
    """Each conversion name's events split into both / backend only / browser only."""
    report = queries.reconcile_report(scenario_docs, SINCE)

    got = {
        c.name: (c.total, c.both, c.backend_only, c.browser_only)
        for c in report.conversions
    }
    assert got == EXPECTED_CONVERSIONS
    assert [c.name for c in report.conversions] == [
        "purchase",
        "generate_lead",
        "qualify_lead",
    ]
    purchase = report.conversions[0]
    assert purchase.share_both == pytest.approx(1 / 3)
    assert purchase.share_browser_only == pytest.approx(1 / 3)


def test_reconcile_report_gives_identifier_coverage_of_delivered_events(
    scenario_docs: list[dict[str, Any]],
) -> None:
    """Coverage counts only delivered conversions, from the merged context."""
    report = queries.reconcile_report(scenario_docs, SINCE)

    got = {c.destination: (c.delivered, dict(c.counts)) for c in report.coverage}
    expected = {
        d: (n, {k: v for k, v in counts.items() if v})
        for d, (n, counts) in EXPECTED_COVERAGE.items()
    }
    assert got == expected
    sink = report.coverage[1]
    assert sink.share("gclid") == pytest.approx(0.75)
    assert sink.share("fbc") == 0.0


def test_has_identifier_accepts_platform_variants_and_needs_both_session_ids() -> None:
    """Google's email hash counts as email; client_id alone is not enough."""
    assert queries.has_identifier({"email_sha256_google": "x"}, "email_sha256")
    assert queries.has_identifier({"phone_sha256_e164": "x"}, "phone_sha256")
    assert not queries.has_identifier({"client_id": "1"}, "client_id+session_id")
    assert queries.has_identifier(
        {"client_id": "1", "session_id": "2"}, "client_id+session_id"
    )


def test_candidate_doc_ids_for_dedup_key_and_bare_id() -> None:
    """A dedup key is tried as is and as debug; a bare id under each prefix."""
    assert queries.candidate_doc_ids("purchase:T-1") == [
        ("purchase:T-1", doc_id("purchase:T-1")),
        ("debug:purchase:T-1", doc_id("debug:purchase:T-1")),
    ]
    keys = [k for k, _ in queries.candidate_doc_ids("T-1")]
    assert keys[:4] == [
        "purchase:T-1",
        "debug:purchase:T-1",
        "refund:T-1",
        "debug:refund:T-1",
    ]
    assert "event:T-1" in keys
    assert "lead:T-1" in keys


def test_story_of_merged_purchase_tells_sources_roles_and_deliveries(
    scenario_ledger: InMemoryLedger,
) -> None:
    """The T-1 story: browser seen first, Stripe delivered, both destinations done."""
    st = queries.story(scenario_ledger.docs[doc_id("purchase:T-1")])

    assert st.dedup_key == "purchase:T-1"
    assert st.transaction_id == "T-1"
    assert st.first_event_id == "ga4-t1"
    assert st.delivery_event_id == "evt_st_t1"
    assert [(s.source, s.event_id, s.role) for s in st.sightings] == [
        ("ga4", "ga4-t1", "recorded"),
        ("stripe", "evt_st_t1", "delivered"),
    ]
    assert st.context["ip"] == "203.0.113.x"
    assert st.context["gclid"] == "G-1"
    assert [(d.destination, d.status, d.attempts) for d in st.destinations] == [
        ("ads", "delivered", 1),
        ("sink", "delivered", 1),
    ]
    sink = st.destinations[1]
    assert sink.request["json"]["commerce"]["transaction_id"] == "T-1"
    assert sink.response["status"] == 200
    assert st.merged_at is not None


def test_story_lists_identity_store_fields_and_duplicate_additions(
    scenario_ledger: InMemoryLedger,
) -> None:
    """Stitched fields name their identity key; duplicates show what they added."""
    qualified = queries.story(scenario_ledger.docs[doc_id("qualify_lead:L-7")])
    lead8 = queries.story(scenario_ledger.docs[doc_id("lead:L-8")])

    assert {(m.field, m.origin, m.value) for m in qualified.merged} == {
        ("client_id", "identity:lead_id", "777.888"),
        ("consent_ad_personalization", "identity:lead_id", "granted"),
        ("consent_ad_storage", "identity:lead_id", "granted"),
        ("consent_analytics_storage", "identity:lead_id", "granted"),
        ("gclid", "identity:lead_id", "G-7"),
        ("session_id", "identity:lead_id", "s-7"),
    }
    added = {(m.field, m.origin) for m in lead8.merged}
    assert ("fbc", "duplicate:data") in added
    assert [(s.source, s.role) for s in lead8.sightings] == [
        ("crm", "delivered"),
        ("data", "duplicate"),
    ]


def test_story_of_held_browser_event_marks_it_held() -> None:
    """A browser event still waiting for its backend event is 'held'."""
    at = datetime(2026, 4, 5, tzinfo=UTC)
    doc = {
        "dedup_key": "purchase:T-3",
        "delivery_event_id": None,
        "sources": {"ga4": [{"event_id": "g", "at": at}]},
        "destinations": {},
    }

    st = queries.story(doc)

    assert [(s.event_id, s.role) for s in st.sightings] == [("g", "held")]
    assert st.destinations == []


def test_mask_ip_hides_host_part() -> None:
    """IPv4 loses its last octet, IPv6 all but three groups."""
    assert queries.mask_ip("198.51.100.23") == "198.51.100.x"
    assert queries.mask_ip("2001:db8:1:2::5") == "2001:db8:1:..."
