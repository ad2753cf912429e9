"""TikTok Events API destination."""

from __future__ import annotations

import json

import pytest

from truecount.destinations import tiktok
from truecount.ports import HttpResponse, OutboundRequest, Skip

from .conftest import (
    ENV,
    NOW,
    bare_event,
    describe,
    dest_config,
    lead_event,
    minimal_event,
    purchase_event,
)


def _tt(**overrides: object) -> tiktok.TikTokDestination:
    return tiktok.create("tt", dest_config("tiktok", **overrides), ENV)


def _data(result: OutboundRequest | Skip) -> dict:
    assert isinstance(result, OutboundRequest), result
    return result.json["data"][0]


@pytest.mark.parametrize(
    ("name", "make"),
    [("purchase", purchase_event), ("lead", lead_event), ("minimal", minimal_event)],
)
def test_tiktok_requests_match_golden(golden, name, make):
    """Exact Events API bodies for a purchase, a lead and a minimal event."""
    golden(f"tiktok_{name}", describe(_tt().build(make(), NOW)))


def test_tiktok_purchase_shape():
    """CompletePayment, seconds, browser event id, E.164 phone hash, raw ids."""
    event = purchase_event()
    req = _tt().build(event, NOW)
    assert isinstance(req, OutboundRequest)
    assert req.url == "https://business-api.tiktok.com/open_api/v1.3/event/track/"
    assert req.secret_headers == {"Access-Token": "tiktok-token-value"}
    assert req.json["event_source"] == "web"
    assert req.json["event_source_id"] == "C1ABCDEF23GHIJ"
    data = req.json["data"][0]
    assert data["event"] == "CompletePayment"
    assert data["event_time"] == 1775399400
    assert data["event_id"] == "ord-1001"
    assert data["user"]["email"] == event.identity.email_sha256
    assert data["user"]["phone"] == event.identity.phone_sha256_e164
    assert data["user"]["ttclid"] == "E.C.P.abc"
    assert data["properties"]["contents"] == [
        {
            "content_id": "SKU123",
            "content_name": "Blue Shirt",
            "content_category": "Shirts",
            "brand": "Acme",
            "quantity": 2,
            "price": 10.5,
        }
    ]


def test_tiktok_lead_name_and_test_event_code():
    """generate_lead is Lead; test_event_code only on debug events."""
    dest = _tt(test_event_code="TEST123")
    live = dest.build(lead_event(), NOW)
    debug = dest.build(lead_event(debug=True), NOW)
    assert isinstance(live, OutboundRequest)
    assert isinstance(debug, OutboundRequest)
    assert live.json["data"][0]["event"] == "Lead"
    assert "test_event_code" not in live.json
    assert debug.json["test_event_code"] == "TEST123"
    assert dest.test_mode is True
    assert _tt().test_mode is False


def test_tiktok_skips():
    """page_view has no default mapping; no user data at all is skipped."""
    assert _tt().build(lead_event(name="page_view"), NOW) == Skip("unmapped_event")
    assert _tt().build(bare_event(), NOW) == Skip("missing_identifier")


def test_tiktok_defaults():
    """Ad consent needed, unknown denied, 7 days."""
    dest = _tt()
    assert dest.required_consent == ("ad_storage", "ad_user_data")
    assert dest.unknown_consent == "deny"
    assert dest.max_age is not None
    assert dest.max_age.days == 7


def _envelope(code: int, status: int = 200) -> HttpResponse:
    body = {"code": code, "message": "msg", "request_id": "2024040512345", "data": {}}
    return HttpResponse(status, {}, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, "delivered"),
        (40001, "failed"),
        (40002, "failed"),
        (40100, "retry"),
        (40102, "failed"),
        (40105, "failed"),
        (50000, "retry"),
        (50002, "retry"),
    ],
)
def test_tiktok_classify_envelope_codes(code, expected):
    """HTTP 200 with the envelope code deciding (§5b.3)."""
    result = _tt().classify(_envelope(code))
    assert result.status == expected
    assert result.request_id == "2024040512345"
    if expected != "delivered":
        assert result.error == f"tiktok code {code}: msg"


def test_tiktok_classify_http_errors():
    """Non-2xx falls back to HTTP classification."""
    assert _tt().classify(HttpResponse(503, {}, b"")).status == "retry"
    assert _tt().classify(HttpResponse(404, {}, b"")).status == "failed"
    assert _tt().classify(HttpResponse(200, {}, b"not json")).status == "failed"
