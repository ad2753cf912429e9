"""Meta Conversions API destination."""

from __future__ import annotations

import json

import pytest

from truecount.core.pii import RawIdentity, hash_identity
from truecount.destinations import meta
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

JOHN_SMITH_SHA256 = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"


def _meta(**overrides: object) -> meta.MetaDestination:
    return meta.create("meta", dest_config("meta", **overrides), ENV)


def _event(result: OutboundRequest | Skip) -> dict:
    assert isinstance(result, OutboundRequest), result
    return result.json["data"][0]


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("purchase", purchase_event),
        ("lead", lead_event),
        ("minimal", lambda: minimal_event(name="generate_lead", commerce=None)),
    ],
)
def test_meta_requests_match_golden(golden, name, make):
    """Exact CAPI bodies for a purchase, a lead and a minimal event."""
    golden(f"meta_{name}", describe(_meta().build(make(), NOW)))


def test_meta_em_is_the_verified_vector_for_john_smith():
    """em for John_Smith@gmail.com is Meta's documented hash (no gmail dot rule)."""
    event = purchase_event(
        identity=hash_identity(RawIdentity(email="John_Smith@gmail.com"))
    )
    assert _event(_meta().build(event, NOW))["user_data"]["em"] == [JOHN_SMITH_SHA256]


def test_meta_em_keeps_gmail_dots():
    """Meta hashes the address with its dots, unlike Google."""
    identity = hash_identity(RawIdentity(email="John.Smith@gmail.com"))
    event = lead_event(identity=identity)
    em = _event(_meta().build(event, NOW))["user_data"]["em"]
    assert em == [identity.email_sha256]
    assert identity.email_sha256 != identity.email_sha256_google


def test_meta_url_and_token_are_separate():
    """Pixel and version are in the path; the token only in secret_query."""
    req = _meta().build(purchase_event(), NOW)
    assert isinstance(req, OutboundRequest)
    assert req.url == "https://graph.facebook.com/v26.0/1234567890/events"
    assert req.secret_query == {"access_token": "meta-token-value"}


def test_meta_event_id_prefers_browser_event_id():
    """params.truecount_browser_event_id wins over event_id."""
    assert _event(_meta().build(purchase_event(), NOW))["event_id"] == "ord-1001"
    assert _event(_meta().build(lead_event(), NOW))["event_id"] == "hubspot-evt-9"


def test_meta_action_source_website_needs_page_and_user_agent():
    """website with a page URL and UA; otherwise the configured default."""
    assert _event(_meta().build(purchase_event(), NOW))["action_source"] == "website"
    event = purchase_event(page=None)
    assert _event(_meta().build(event, NOW))["action_source"] == "system_generated"
    dest = _meta(default_action_source="phone_call")
    event = lead_event(page=None)
    assert _event(dest.build(event, NOW))["action_source"] == "phone_call"


def test_meta_fbc_is_built_from_fbclid_when_no_cookie():
    """fb.1.<occurred ms>.<fbclid>, fbclid copied exactly."""
    event = lead_event(click_ids={"fbclid": "IwAR-Case_Sensitive"})
    fbc = _event(_meta().build(event, NOW))["user_data"]["fbc"]
    assert fbc == "fb.1.1775399400123.IwAR-Case_Sensitive"


def test_meta_test_event_code_only_for_debug_events():
    """test_event_code routes debug events to Test Events, never live ones."""
    dest = _meta()
    live = dest.build(lead_event(), NOW)
    debug = dest.build(lead_event(debug=True), NOW)
    assert isinstance(live, OutboundRequest)
    assert isinstance(debug, OutboundRequest)
    assert "test_event_code" not in live.json
    assert debug.json["test_event_code"] == "TEST12345"
    assert dest.test_mode is True
    assert _meta(test_event_code=None).test_mode is False


def test_meta_skips_unmapped_and_identifierless_events():
    """No default name for qualify_lead; no user data at all is skipped."""
    assert _meta().build(lead_event(name="qualify_lead"), NOW) == Skip("unmapped_event")
    assert _meta().build(bare_event(), NOW) == Skip("missing_identifier")
    dest = _meta(names={"qualify_lead": "QualifiedLead"})
    assert _event(dest.build(lead_event(name="qualify_lead"), NOW))["event_name"] == (
        "QualifiedLead"
    )


def test_meta_purchase_without_value_is_skipped():
    """Meta refuses a Purchase without value and currency, so it is not sent."""
    assert _meta().build(minimal_event(), NOW) == Skip("missing_value")


def test_meta_limited_data_use_and_opt_out():
    """LDU adds data_processing_options; denied personalisation sets opt_out."""
    event = _event(_meta(limited_data_use=True).build(lead_event(), NOW))
    assert event["data_processing_options"] == ["LDU"]
    assert event["data_processing_options_country"] == 0
    assert event["opt_out"] is True


def test_meta_defaults():
    """Ad consent needed, unknown denied, 7 days max age."""
    dest = _meta()
    assert dest.required_consent == ("ad_storage", "ad_user_data")
    assert dest.unknown_consent == "deny"
    assert dest.max_age is not None
    assert dest.max_age.days == 7


def _error(code: int, status: int = 400, **extra: object) -> HttpResponse:
    body = {
        "error": {
            "message": "msg",
            "type": "OAuthException",
            "code": code,
            "fbtrace_id": "TRACE1",
            **extra,
        }
    }
    return HttpResponse(status, {}, json.dumps(body).encode())


def test_meta_classify_success_keeps_fbtrace_id():
    """200 with events_received is delivered; fbtrace_id is the request id."""
    body = b'{"events_received": 1, "messages": [], "fbtrace_id": "AbC"}'
    result = _meta().classify(HttpResponse(200, {}, body))
    assert result.status == "delivered"
    assert result.request_id == "AbC"
    assert result.detail == {"events_received": 1}


@pytest.mark.parametrize(
    ("code", "status", "extra", "expected"),
    [
        (100, 400, {"error_subcode": 2804003, "is_transient": False}, "failed"),
        (190, 401, {}, "failed"),
        (2, 503, {}, "retry"),
        (1, 500, {"is_transient": True}, "retry"),
        (99999, 400, {"is_transient": True}, "retry"),
        (4, 400, {}, "retry"),
        (17, 400, {}, "retry"),
        (613, 400, {}, "retry"),
        (368, 400, {}, "failed"),
        (200, 403, {}, "failed"),
    ],
)
def test_meta_classify_graph_errors(code, status, extra, expected):
    """Graph error codes and is_transient decide retry vs failed (§3.6)."""
    result = _meta().classify(_error(code, status, **extra))
    assert result.status == expected
    assert result.request_id == "TRACE1"
    assert result.http_status == status
    assert result.error is not None
    assert result.error.startswith(f"meta error {code}")


def test_meta_classify_subcode_in_error_text():
    """The subcode is part of the error text for the ledger."""
    result = _meta().classify(_error(100, error_subcode=2804003))
    assert result.error == "meta error 100/2804003: msg"
    assert result.detail is not None
    assert result.detail["error_subcode"] == 2804003


def test_meta_classify_5xx_without_body_retries():
    """A 5xx without a parseable body is retried."""
    result = _meta().classify(HttpResponse(502, {"Retry-After": "30"}, b"<html>"))
    assert result.status == "retry"
    assert result.retry_after == 30.0
