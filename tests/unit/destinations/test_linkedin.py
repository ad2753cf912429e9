"""LinkedIn Conversions API destination."""

from __future__ import annotations

import json

import pytest

from truecount.destinations import linkedin
from truecount.errors import ConfigError
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


def _li(**overrides: object) -> linkedin.LinkedInDestination:
    return linkedin.create("li", dest_config("linkedin", **overrides), ENV)


def _body(result: OutboundRequest | Skip) -> dict:
    assert isinstance(result, OutboundRequest), result
    return result.json


@pytest.mark.parametrize(
    ("name", "make"),
    [("purchase", purchase_event), ("lead", lead_event), ("minimal", minimal_event)],
)
def test_linkedin_requests_match_golden(golden, name, make):
    """Exact conversion events for a purchase, a lead and a minimal event."""
    golden(f"linkedin_{name}", describe(_li().build(make(), NOW)))


def test_linkedin_amount_is_a_string_and_time_in_ms():
    """conversionValue.amount is text; conversionHappenedAt is epoch ms."""
    body = _body(_li().build(purchase_event(), NOW))
    assert body["conversionValue"] == {"currencyCode": "EUR", "amount": "21.00"}
    assert body["conversionHappenedAt"] == 1775399400123
    assert body["conversion"] == "urn:lla:llaPartnerConversion:123456"
    assert body["eventId"] == "ord-1001"


def test_linkedin_headers_and_token():
    """Version headers are recorded; the bearer token is secret."""
    req = _li(version="202601").build(lead_event(), NOW)
    assert isinstance(req, OutboundRequest)
    assert req.url == "https://api.linkedin.com/rest/conversionEvents"
    assert req.headers["LinkedIn-Version"] == "202601"
    assert req.headers["X-Restli-Protocol-Version"] == "2.0.0"
    assert req.secret_headers == {"Authorization": "Bearer linkedin-token-value"}


def test_linkedin_user_ids_use_plain_email_hash_and_li_fat_id():
    """SHA256_EMAIL is email_sha256; li_fat_id is sent raw."""
    event = lead_event()
    ids = _body(_li().build(event, NOW))["user"]["userIds"]
    assert ids == [
        {"idType": "SHA256_EMAIL", "idValue": event.identity.email_sha256},
        {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "li-fat-7"},
    ]


def test_linkedin_skips():
    """Unmapped events and events without email or li_fat_id are skipped."""
    assert _li().build(lead_event(name="qualify_lead"), NOW) == Skip("unmapped_event")
    assert _li().build(bare_event(), NOW) == Skip("missing_identifier")


def test_linkedin_bad_conversion_names_its_key():
    """A malformed conversion URN is a config error naming conversions."""
    with pytest.raises(ConfigError, match=r"destinations\.li\.conversions"):
        _li(conversions={"purchase": "urn:li:wrong:1"})


def test_linkedin_defaults():
    """Ad consent needed, unknown denied, 90 days, no test mode."""
    dest = _li()
    assert dest.required_consent == ("ad_storage", "ad_user_data")
    assert dest.unknown_consent == "deny"
    assert dest.max_age is not None
    assert dest.max_age.days == 90
    assert dest.test_mode is False


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (201, b"", "delivered"),
        (400, b'{"status":400,"message":"timestamp out of range"}', "failed"),
        (
            401,
            b'{"status":401,"serviceErrorCode":65600,"code":"INVALID_ACCESS_TOKEN",'
            b'"message":"Invalid access token"}',
            "failed",
        ),
        (403, b'{"status":403,"message":"No ad accounts found"}', "failed"),
        (422, b'{"status":422,"message":"Unrecognized field"}', "failed"),
        (429, b"", "retry"),
        (500, b"", "retry"),
    ],
)
def test_linkedin_classify(status, body, expected):
    """201 delivered; 429/5xx retried; 400/401/403/422 permanent."""
    result = _li().classify(HttpResponse(status, {"x-restli-id": "rid"}, body))
    assert result.status == expected
    assert result.http_status == status
    assert result.request_id == "rid"


def test_linkedin_classify_error_text_and_retry_after():
    """The error names LinkedIn's code; 429 honours Retry-After."""
    body = json.dumps({"code": "INVALID_ACCESS_TOKEN", "message": "expired"}).encode()
    assert _li().classify(HttpResponse(401, {}, body)).error == (
        "http 401: INVALID_ACCESS_TOKEN expired"
    )
    result = _li().classify(HttpResponse(429, {"retry-after": "7"}, b""))
    assert result.retry_after == 7.0
