"""Google Ads click-conversion upload destination."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import parse_qs

import httpx
import pytest

from truecount.core.pii import RawIdentity, hash_identity, sha256_hex
from truecount.destinations import google_ads
from truecount.errors import DeliveryError
from truecount.models.event import Consent
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


def _ads(**overrides: object) -> google_ads.GoogleAdsDestination:
    return google_ads.create("ads", dest_config("google_ads", **overrides), ENV)


def _conversion(result: OutboundRequest | Skip) -> dict:
    assert isinstance(result, OutboundRequest), result
    return result.json["conversions"][0]


@pytest.mark.parametrize(
    ("name", "make"),
    [("purchase", purchase_event), ("lead", lead_event), ("minimal", minimal_event)],
)
def test_google_ads_requests_match_golden(golden, name, make):
    """Exact upload bodies for a purchase, a lead and a minimal event."""
    golden(f"google_ads_{name}", describe(_ads().build(make(), NOW)))


def test_google_ads_hashed_email_strips_gmail_dots():
    """hashedEmail is the Google variant: gmail local-part dots removed."""
    identity = hash_identity(RawIdentity(email="John.Smith@Gmail.com"))
    conversion = _conversion(_ads().build(minimal_event(identity=identity), NOW))
    assert conversion["userIdentifiers"] == [
        {"hashedEmail": sha256_hex("johnsmith@gmail.com")}
    ]


def test_google_ads_click_id_precedence_and_single_click_id():
    """gclid > gbraid > wbraid, and exactly one is sent."""
    conversion = _conversion(_ads().build(purchase_event(), NOW))
    assert conversion["gclid"] == "Cj0KCQjw-gclid"
    assert "gbraid" not in conversion
    conversion = _conversion(_ads().build(lead_event(), NOW))
    assert conversion["gbraid"] == "gbraid-7"
    assert "wbraid" not in conversion
    conversion = _conversion(_ads().build(lead_event(click_ids={"wbraid": "w"}), NOW))
    assert conversion["wbraid"] == "w"


def test_google_ads_request_shape():
    """URL, headers, partialFailure, conversionDateTime and orderId."""
    req = _ads().build(purchase_event(), NOW)
    assert isinstance(req, OutboundRequest)
    assert req.url == (
        "https://googleads.googleapis.com/v23/customers/1234567890:uploadClickConversions"
    )
    assert req.headers["login-customer-id"] == "9876543210"
    assert req.secret_headers == {"developer-token": "dev-token-value"}
    assert req.json["partialFailure"] is True
    conversion = req.json["conversions"][0]
    assert conversion["conversionDateTime"] == "2026-04-05 14:30:00+00:00"
    assert (
        conversion["conversionAction"]
        == "customers/1234567890/conversionActions/987654"
    )
    assert conversion["orderId"] == "T-1001"
    assert conversion["conversionValue"] == 21
    assert conversion["consent"] == {"adUserData": "GRANTED"}


def test_google_ads_lead_order_id_is_lead_id():
    """Leads use the CRM lead id as orderId."""
    assert _conversion(_ads().build(lead_event(), NOW))["orderId"] == "L-77"


def test_google_ads_skips_unmapped_and_identifierless_events():
    """No conversion action, or no click id and no hashed email/phone: skipped."""
    assert _ads().build(lead_event(name="qualify_lead"), NOW) == Skip("unmapped_event")
    assert _ads().build(bare_event(), NOW) == Skip("missing_identifier")
    no_ids = lead_event(click_ids={}, identity={})
    assert _ads().build(no_ids, NOW) == Skip("missing_identifier")


def test_google_ads_unknown_consent_is_omitted():
    """Unknown ad_user_data sends no consent object."""
    event = purchase_event(consent=Consent())
    assert "consent" not in _conversion(_ads().build(event, NOW))


def test_google_ads_debug_is_validate_only():
    """Debug events are uploaded with validateOnly."""
    req = _ads().build(purchase_event(debug=True), NOW)
    assert isinstance(req, OutboundRequest)
    assert req.json["validateOnly"] is True


def test_google_ads_settings_are_validated():
    """Bad customer ids and conversion actions name their key."""
    from truecount.errors import ConfigError

    with pytest.raises(ConfigError, match=r"destinations\.ads\.customer_id"):
        _ads(customer_id="12345")
    with pytest.raises(ConfigError, match=r"destinations\.ads\.conversion_actions"):
        _ads(conversion_actions={"purchase": "conv/1"})


def test_google_ads_defaults():
    """ad_user_data needed, unknown denied, 90 days, no login id without config."""
    dest = _ads()
    assert dest.required_consent == ("ad_user_data",)
    assert dest.unknown_consent == "deny"
    assert dest.max_age == timedelta(days=90)


# --- OAuth -------------------------------------------------------------------


class TokenServer:
    """An httpx.MockTransport token endpoint behind a minimal HttpSender."""

    def __init__(self, status: int = 200, expires_in: int = 3600) -> None:
        self.calls: list[httpx.Request] = []
        self.status = status
        self.expires_in = expires_in
        self.client = httpx.Client(transport=httpx.MockTransport(self._handle))

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if self.status != 200:
            return httpx.Response(self.status, json={"error": "invalid_grant"})
        token = f"access-{len(self.calls)}"
        return httpx.Response(
            200, json={"access_token": token, "expires_in": self.expires_in}
        )

    def send(self, request: OutboundRequest) -> HttpResponse:
        response = self.client.request(
            request.method,
            request.url,
            headers={**request.headers, **request.secret_headers},
            content=request.content,
        )
        return HttpResponse(
            response.status_code, dict(response.headers), response.content
        )


def test_google_ads_token_is_fetched_once_cached_and_refreshed():
    """One exchange per token lifetime; refreshed a minute before expiry."""
    server = TokenServer(expires_in=3600)
    dest = _ads(token_url="http://127.0.0.1:1/token")
    req = dest.build(purchase_event(), NOW)
    assert isinstance(req, OutboundRequest)

    first = dest.authorize(req, server, NOW)
    again = dest.authorize(req, server, NOW + timedelta(minutes=58))
    later = dest.authorize(req, server, NOW + timedelta(minutes=59, seconds=1))

    assert first.secret_headers["Authorization"] == "Bearer access-1"
    assert first.secret_headers["developer-token"] == "dev-token-value"
    assert again.secret_headers["Authorization"] == "Bearer access-1"
    assert later.secret_headers["Authorization"] == "Bearer access-2"
    assert len(server.calls) == 2
    call = server.calls[0]
    assert str(call.url) == "http://127.0.0.1:1/token"
    form = parse_qs(call.content.decode())
    assert form == {
        "grant_type": ["refresh_token"],
        "client_id": ["client-id-value"],
        "client_secret": ["client-secret-value"],
        "refresh_token": ["refresh-token-value"],
    }
    assert "Authorization" not in req.secret_headers


def test_google_ads_token_request_records_no_secret():
    """The token request's recorded form carries no credential."""
    described = json.dumps(_ads().token_request().describe())
    assert "secret" not in described
    assert "refresh-token-value" not in described


def test_google_ads_401_forgets_the_token():
    """After a 401 the next authorize exchanges the refresh token again."""
    server = TokenServer()
    dest = _ads()
    req = dest.build(purchase_event(), NOW)
    assert isinstance(req, OutboundRequest)
    dest.authorize(req, server, NOW)
    body = json.dumps({"error": {"code": 401, "status": "UNAUTHENTICATED"}}).encode()
    result = dest.classify(HttpResponse(401, {}, body))
    assert result.status == "retry"
    dest.authorize(req, server, NOW)
    assert len(server.calls) == 2


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (503, True)])
def test_google_ads_token_failure_raises_delivery_error(status, retryable):
    """A refused exchange is a DeliveryError; retryable only for 5xx/429."""
    dest = _ads()
    req = dest.build(purchase_event(), NOW)
    assert isinstance(req, OutboundRequest)
    with pytest.raises(DeliveryError) as info:
        dest.authorize(req, TokenServer(status=status), NOW)
    assert info.value.retryable is retryable
    assert info.value.destination == "ads"
    assert "refresh-token-value" not in str(info.value)


# --- classify ----------------------------------------------------------------


def _partial(*codes: str) -> HttpResponse:
    errors = [
        {
            "errorCode": {"conversionUploadError": code},
            "message": "m",
            "location": {
                "fieldPathElements": [{"fieldName": "conversions", "index": 0}]
            },
        }
        for code in codes
    ]
    body = {
        "partialFailureError": {
            "code": 3,
            "message": "partial",
            "details": [
                {
                    "@type": "type.googleapis.com/google.ads.googleads.v23.errors.GoogleAdsFailure",
                    "errors": errors,
                }
            ],
        },
        "results": [{}],
    }
    return HttpResponse(200, {"request-id": "req-9"}, json.dumps(body).encode())


def test_google_ads_classify_clean_success():
    """No partialFailureError: delivered with the results."""
    body = {"results": [{"gclid": "g", "conversionAction": "a"}], "jobId": 5}
    result = _ads().classify(HttpResponse(200, {}, json.dumps(body).encode()))
    assert result.status == "delivered"
    assert result.detail == {"results": body["results"], "jobId": 5}


@pytest.mark.parametrize(
    "code", ["CLICK_CONVERSION_ALREADY_EXISTS", "ORDER_ID_ALREADY_IN_USE"]
)
def test_google_ads_classify_already_exists_is_a_dedup_hit(code):
    """The platform already has the conversion: delivered, detail says dedup."""
    result = _ads().classify(_partial(code))
    assert result.status == "delivered"
    assert result.request_id == "req-9"
    assert result.detail is not None
    assert result.detail["dedup"] is True
    assert result.detail["codes"] == [code]


@pytest.mark.parametrize("code", ["TOO_RECENT_EVENT", "TOO_RECENT_CONVERSION_ACTION"])
def test_google_ads_classify_too_recent_retries_after_six_hours_and_a_margin(code):
    """Uploaded too soon after the click: retry after 6 h 15 min (fanout defers)."""
    result = _ads().classify(_partial(code))
    assert result.status == "retry"
    assert result.error == f"partial failure: {code}"
    assert result.retry_after == 6 * 3600 + 900
    assert result.detail is not None
    assert result.detail["codes"] == [code]


def test_google_ads_too_recent_delay_is_configurable():
    """``too_recent_delay_seconds`` sets the wait of TOO_RECENT_EVENT."""
    cfg = dest_config("google_ads", too_recent_delay_seconds=7200)
    ads = google_ads.create("ads", cfg, ENV)
    assert ads.classify(_partial("TOO_RECENT_EVENT")).retry_after == 7200.0


def test_google_ads_whole_request_too_recent_also_waits_the_delay():
    """A non-2xx answer whose errors say TOO_RECENT_EVENT waits the delay too."""
    body = {
        "error": {
            "code": 400,
            "status": "INVALID_ARGUMENT",
            "details": [
                {
                    "errors": [
                        {"errorCode": {"conversionUploadError": "TOO_RECENT_EVENT"}}
                    ]
                }
            ],
        }
    }
    result = _ads().classify(HttpResponse(400, {}, json.dumps(body).encode()))
    assert result.status == "retry"
    assert result.retry_after == 6 * 3600 + 900
    assert result.detail == {"codes": ["TOO_RECENT_EVENT"]}


def test_google_ads_other_retryable_row_errors_keep_a_short_retry():
    """CONCURRENT_MODIFICATION is a plain retry: no long wait."""
    result = _ads().classify(_partial("CONCURRENT_MODIFICATION"))
    assert result.status == "retry"
    assert result.retry_after is None


@pytest.mark.parametrize(
    "code", ["CLICK_NOT_FOUND", "EXPIRED_EVENT", "UNPARSEABLE_GCLID"]
)
def test_google_ads_classify_permanent_row_errors_fail(code):
    """Other row errors are permanent and carry the code."""
    result = _ads().classify(_partial(code))
    assert result.status == "failed"
    assert result.detail is not None
    assert result.detail["codes"] == [code]


def test_google_ads_classify_429_with_retry_after():
    """RESOURCE_EXHAUSTED is retried after Retry-After."""
    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota"}}
    response = HttpResponse(429, {"Retry-After": "120"}, json.dumps(body).encode())
    result = _ads().classify(response)
    assert result.status == "retry"
    assert result.retry_after == 120.0
    assert result.error == "http 429 RESOURCE_EXHAUSTED: quota"


def test_google_ads_classify_503_retries_and_403_fails():
    """UNAVAILABLE retries; PERMISSION_DENIED is permanent."""
    assert _ads().classify(HttpResponse(503, {}, b"")).status == "retry"
    body = {"error": {"code": 403, "status": "PERMISSION_DENIED"}}
    result = _ads().classify(HttpResponse(403, {}, json.dumps(body).encode()))
    assert result.status == "failed"
    assert result.http_status == 403
