"""GA4 Measurement Protocol destination."""

from __future__ import annotations

import json

import pytest

from truecount.destinations import ga4
from truecount.models.event import Consent
from truecount.ports import HttpResponse, OutboundRequest, Skip

from .conftest import (
    ENV,
    NOW,
    OCCURRED,
    bare_event,
    describe,
    dest_config,
    lead_event,
    minimal_event,
    purchase_event,
)


def _ga4(**overrides: object) -> ga4.Ga4Destination:
    return ga4.create("ga4", dest_config("ga4", **overrides), ENV)


def _body(result: OutboundRequest | Skip) -> dict:
    assert isinstance(result, OutboundRequest), result
    return result.json


@pytest.mark.parametrize(
    ("name", "make"),
    [("purchase", purchase_event), ("lead", lead_event), ("minimal", minimal_event)],
)
def test_ga4_requests_match_golden(golden, name, make):
    """Exact MP bodies for a purchase, a lead and a minimal event."""
    golden(f"ga4_{name}", describe(_ga4().build(make(), NOW)))


def test_ga4_purchase_carries_session_engagement_and_transaction():
    """session_id, engagement_time_msec >= 1 and transaction_id are params."""
    params = _body(_ga4().build(purchase_event(), NOW))["events"][0]["params"]
    assert params["session_id"] == "1775397000"
    assert params["engagement_time_msec"] == 1
    assert params["transaction_id"] == "T-1001"
    assert params["value"] == 21
    assert params["items"][0]["price"] == 10.5
    assert "truecount_browser_event_id" not in params


def test_ga4_timestamp_is_microseconds_and_api_secret_is_secret():
    """timestamp_micros is exact; the api_secret never appears in url or body."""
    req = _ga4().build(purchase_event(), NOW)
    assert isinstance(req, OutboundRequest)
    assert req.json["timestamp_micros"] == 1775399400123456
    assert req.secret_query == {"api_secret": "ga4-secret-value"}
    assert "secret" not in req.url
    assert (
        req.url
        == "https://www.google-analytics.com/mp/collect?measurement_id=G-ABC1234567"
    )


def test_ga4_user_data_uses_google_email_hash_and_no_plain_address():
    """user_data has the gmail-dot-stripped hash and hashed names only."""
    event = purchase_event()
    user_data = _body(_ga4().build(event, NOW))["user_data"]
    assert user_data["sha256_email_address"] == [event.identity.email_sha256_google]
    assert user_data["sha256_phone_number"] == [event.identity.phone_sha256_e164]
    assert set(user_data["address"][0]) == {"sha256_first_name", "sha256_last_name"}


def test_ga4_consent_maps_to_upper_case_and_omits_unknown():
    """granted/denied become GRANTED/DENIED; unknown is left out."""
    consent = Consent(ad_user_data="denied", ad_personalization="unknown")
    body = _body(_ga4().build(purchase_event(consent=consent), NOW))
    assert body["consent"] == {"ad_user_data": "DENIED"}
    assert "user_data" not in body


def test_ga4_skips_without_client_id():
    """MP events need the browser's client_id."""
    assert _ga4().build(bare_event(), NOW) == Skip("missing_client_id")


def test_ga4_skips_reserved_event_names():
    """A name GA4 reserves is never sent."""
    event = minimal_event(name="session_start")
    assert _ga4().build(event, NOW) == Skip("reserved_event_name")


def test_ga4_name_override_is_applied():
    """names maps a canonical name to another GA4 name."""
    body = _body(_ga4(names={"purchase": "order_paid"}).build(minimal_event(), NOW))
    assert body["events"][0]["name"] == "order_paid"


def test_ga4_purchase_without_transaction_id_uses_dedup_key():
    """A purchase always has a non-empty transaction_id."""
    event = minimal_event(commerce=None, dedup_key="event:evt-min-1")
    params = _body(_ga4().build(event, NOW))["events"][0]["params"]
    assert params["transaction_id"] == "event:evt-min-1"


def test_ga4_debug_event_goes_to_validation_server():
    """Debug events use /debug/mp/collect."""
    req = _ga4().build(minimal_event(debug=True), NOW)
    assert isinstance(req, OutboundRequest)
    assert req.url.startswith("https://www.google-analytics.com/debug/mp/collect?")


def test_ga4_endpoint_override_and_eu_region():
    """endpoint replaces the base URL and keeps its path; eu uses region1."""
    req = _ga4(endpoint="http://127.0.0.1:9000/cap/").build(minimal_event(), NOW)
    assert isinstance(req, OutboundRequest)
    assert req.url == "http://127.0.0.1:9000/cap/mp/collect?measurement_id=G-ABC1234567"
    req = _ga4(region="eu").build(minimal_event(), NOW)
    assert isinstance(req, OutboundRequest)
    assert req.url.startswith("https://region1.google-analytics.com/mp/collect")


def test_ga4_future_event_time_is_clamped_to_now():
    """An event from the future is sent at now."""
    req = _ga4().build(minimal_event(occurred_at=NOW.replace(hour=16)), NOW)
    assert _body(req)["timestamp_micros"] == int(NOW.timestamp()) * 1_000_000


def test_ga4_params_are_fitted_to_limits_with_notes():
    """Long values are truncated, reserved and surplus params dropped, noted."""
    params: dict[str, str | int] = {f"p{i:02d}": i for i in range(30)}
    params["long_text"] = "x" * 150
    params["ga_internal"] = "no"
    params["firebase_conversion"] = 1
    event = minimal_event(params=params)
    req = _ga4().build(event, NOW)
    assert isinstance(req, OutboundRequest)
    sent = req.json["events"][0]["params"]
    assert len(sent) == 25
    assert "ga_internal" not in sent
    assert "firebase_conversion" not in sent
    assert "p29" not in sent
    assert "params.ga_internal: dropped, reserved name" in req.notes
    assert "params.p29: dropped, over 25 params" in req.notes
    assert ga4.validate_payload(req.json) == []


def test_ga4_long_value_truncated_to_100_and_page_location_to_1000():
    """Param values keep 100 chars; page_location keeps GA4's 1000."""
    event = minimal_event(
        params={"note": "y" * 120},
        page={"location": "https://x.example/" + "a" * 1200},
    )
    req = _ga4().build(event, NOW)
    assert isinstance(req, OutboundRequest)
    sent = req.json["events"][0]["params"]
    assert sent["note"] == "y" * 100
    assert len(sent["page_location"]) == 1000
    assert "params.note: truncated to 100 characters" in req.notes


def test_ga4_user_properties_are_fitted():
    """Names over 24 or reserved are dropped; values keep 36 characters."""
    props = {
        "plan": "z" * 50,
        "a_very_long_user_property_name": "v",
        "first_open_time": 1,
        "user_id": "u",
    }
    body = _body(_ga4().build(minimal_event(user_properties=props), NOW))
    assert body["user_properties"] == {"plan": {"value": "z" * 36}}


def test_ga4_items_without_id_or_name_are_dropped_and_custom_params_capped():
    """Items need item_id or item_name; at most 10 custom params each."""
    custom = {f"c{i}": i for i in range(12)}
    commerce = {
        "transaction_id": "T-3",
        "items": [{"price": "1.00"}, {"item_id": "A", "params": custom}],
    }
    event = minimal_event(commerce=commerce)
    params = _body(_ga4().build(event, NOW))["events"][0]["params"]
    assert len(params["items"]) == 1
    assert len([k for k in params["items"][0] if k.startswith("c")]) == 10


def test_validate_payload_reports_each_problem():
    """validate_payload names bad names, counts, lengths and size."""
    body = {
        "events": [
            {
                "name": "first_visit",
                "params": {"_x": 1, "v": "q" * 101, **{f"k{i}": i for i in range(25)}},
            }
        ],
        "user_properties": {"way_too_long_user_property": {"value": "v" * 40}},
    }
    problems = ga4.validate_payload(body)
    assert "client_id: required" in problems
    assert "events[0].name: reserved" in problems
    assert "events[0].params: more than 25" in problems
    assert "events[0].params._x: invalid name" in problems
    assert "events[0].params.v: value longer than 100" in problems
    assert "user_properties.way_too_long_user_property: invalid name" in problems
    assert "user_properties.way_too_long_user_property: value too long" in problems


def test_validate_payload_rejects_oversized_body():
    """Bodies of 130 kB or more are refused."""
    items = [{"item_id": "i" * 90, "item_name": "n" * 90} for _ in range(200)]
    items += items[:0]
    body = {
        "client_id": "c",
        "events": [{"name": "purchase", "params": {"items": items}}],
    }
    body["user_id"] = "u"
    big = json.dumps(body)
    assert len(big) < 130_000
    body["events"][0]["params"]["items"] = items * 4
    problems = ga4.validate_payload(body)
    assert any(p.startswith("body:") for p in problems)
    assert "events[0].params.items: more than 200" in problems


def test_ga4_defaults():
    """analytics_storage needed, unknown allowed, 72 h max age, test mode."""
    dest = _ga4()
    assert dest.required_consent == ("analytics_storage",)
    assert dest.unknown_consent == "allow"
    assert dest.max_age is not None
    assert dest.max_age.total_seconds() == 72 * 3600
    assert dest.test_mode is True
    assert OCCURRED < NOW


def test_ga4_classify_204_is_delivered():
    """Production answers 204 with no body."""
    result = _ga4().classify(HttpResponse(204, {}, b""))
    assert result.status == "delivered"
    assert result.http_status == 204


def test_ga4_classify_debug_messages_fail():
    """Non-empty validationMessages from /debug/mp/collect: failed with detail."""
    messages = [
        {
            "fieldPath": "events[0].name",
            "description": "Event name is reserved",
            "validationCode": "NAME_RESERVED",
        }
    ]
    body = json.dumps({"validationMessages": messages}).encode()
    result = _ga4().classify(HttpResponse(200, {}, body))
    assert result.status == "failed"
    assert result.error == "validation: NAME_RESERVED"
    assert result.detail == {"validationMessages": messages}


def test_ga4_classify_debug_empty_messages_is_delivered():
    """An empty validationMessages array means valid."""
    result = _ga4().classify(HttpResponse(200, {}, b'{"validationMessages": []}'))
    assert result.status == "delivered"
    assert result.detail == {"validationMessages": []}


def test_ga4_classify_500_retries():
    """5xx is retried."""
    result = _ga4().classify(HttpResponse(500, {}, b"oops"))
    assert result.status == "retry"
    assert result.http_status == 500
