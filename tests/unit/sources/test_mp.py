"""Measurement Protocol JSON (/mp/collect): auth, body fields, limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from truecount.core.pii import sha256_hex
from truecount.errors import InvalidPayload
from truecount.models.event import Event
from truecount.sources.mp import check_api_secret, parse_body

NOW = datetime(2024, 4, 5, 19, 34, 38, tzinfo=UTC)
HEX = sha256_hex("john_smith@gmail.com")

SPEC_BODY: dict[str, Any] = {
    "client_id": "1234567890.1700000000",
    "user_id": "u-42",
    "timestamp_micros": 1712345678000000,
    "consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
    "events": [
        {
            "name": "purchase",
            "params": {
                "transaction_id": "T-1001",
                "value": 21.0,
                "currency": "EUR",
                "session_id": "1712345600",
                "engagement_time_msec": 1,
                "items": [
                    {
                        "item_id": "SKU123",
                        "item_name": "Blue Shirt",
                        "price": 10.5,
                        "quantity": 2,
                    }
                ],
            },
        }
    ],
}


def parse(body: Any, max_events: int = 50) -> list[Event]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_body(raw, NOW, max_events=max_events)


def paths(body: Any) -> list[str]:
    with pytest.raises(InvalidPayload) as info:
        parse(body)
    assert info.value.status == 400
    return [f["path"] for f in info.value.fields]


def test_spec_example_maps_to_the_canonical_event() -> None:
    """The SPECS §2.8 example maps to client, commerce, consent and timestamps."""
    (event,) = parse(SPEC_BODY)
    assert event.source == "mp"
    assert event.name == "purchase"
    assert event.client.client_id == "1234567890.1700000000"
    assert event.client.user_id == "u-42"
    assert event.client.session_id == "1712345600"
    assert event.occurred_at == datetime(2024, 4, 5, 19, 34, 38, tzinfo=UTC)
    assert event.received_at == NOW
    assert event.commerce is not None
    assert event.commerce.transaction_id == "T-1001"
    assert event.commerce.value == Decimal("21.0")
    assert event.commerce.items[0].price == Decimal("10.5")
    assert event.consent.ad_user_data == "granted"
    assert event.consent.ad_personalization == "denied"
    assert event.consent.ad_storage == "unknown"
    assert event.params == {"engagement_time_msec": 1}


def test_event_timestamp_overrides_the_request_timestamp() -> None:
    """events[i].timestamp_micros wins over the request's."""
    body = {
        **SPEC_BODY,
        "events": [{"name": "x", "timestamp_micros": "1712345000000000"}],
    }
    (event,) = parse(body)
    assert event.occurred_at == datetime(2024, 4, 5, 19, 23, 20, tzinfo=UTC)


def test_no_timestamp_means_the_time_of_receipt() -> None:
    """Without any timestamp occurred_at is now."""
    (event,) = parse({"client_id": "1.2", "events": [{"name": "x"}]})
    assert event.occurred_at == NOW


def test_hashed_user_data_goes_into_identity_as_is() -> None:
    """sha256_* values pass through, address plain fields are hashed."""
    body = {
        "client_id": "1.2",
        "user_data": {
            "sha256_email_address": [HEX.upper()],
            "sha256_phone_number": [sha256_hex("+15551234567")],
            "address": [
                {
                    "sha256_first_name": sha256_hex("john"),
                    "city": "San Francisco",
                    "country": "US",
                }
            ],
        },
        "events": [{"name": "x"}],
    }
    (event,) = parse(body)
    assert event.identity.email_sha256 == HEX
    assert event.identity.email_sha256_google == HEX
    assert event.identity.phone_sha256_e164 == sha256_hex("+15551234567")
    assert event.identity.first_name_sha256 == sha256_hex("john")
    assert event.identity.city_sha256 == sha256_hex("sanfrancisco")


def test_raw_user_data_is_hashed_at_the_edge() -> None:
    """Raw email_address and names are accepted and hashed, never forwarded."""
    body = {
        "client_id": "1.2",
        "user_data": {
            "email_address": "John_Smith@gmail.com",
            "address": {"first_name": "John"},
        },
        "events": [{"name": "x"}],
    }
    (event,) = parse(body)
    assert event.identity.email_sha256 == HEX
    assert event.identity.first_name_sha256 == sha256_hex("john")
    assert "John" not in event.model_dump_json()


def test_user_properties_device_ip_and_ua() -> None:
    """user_properties, device, ip_override and user_agent fill the event."""
    body = {
        "client_id": "1.2",
        "user_properties": {"plan": {"value": "pro"}, "seats": {"value": 3}},
        "device": {"language": "en", "screen_resolution": "1280x720"},
        "ip_override": "203.0.113.5",
        "user_agent": "UA/3",
        "non_personalized_ads": True,
        "events": [
            {
                "name": "x",
                "params": {"gclid": "G1", "page_location": "https://a.example/"},
            }
        ],
    }
    (event,) = parse(body)
    assert event.user_properties == {"plan": "pro", "seats": 3}
    assert event.client.language == "en"
    assert event.client.screen_resolution == "1280x720"
    assert event.client.ip == "203.0.113.5"
    assert event.client.user_agent == "UA/3"
    assert event.consent.ad_personalization == "denied"
    assert event.click_ids.gclid == "G1"
    assert event.page is not None
    assert event.page.location == "https://a.example/"


def test_event_id_from_params_or_derived_deterministically() -> None:
    """params.event_id is used; otherwise the id is derived from the content."""
    body = {
        "client_id": "1.2",
        "events": [{"name": "x", "params": {"event_id": "e-1"}}, {"name": "y"}],
    }
    first, second = parse(body)
    assert first.event_id == "e-1"
    assert second.event_id.startswith("mp-")
    assert len(second.event_id) == 35
    assert parse(body)[1].event_id == second.event_id


def test_required_fields_and_bad_values_are_named() -> None:
    """client_id, events, names, timestamps and hashes are checked with paths."""
    assert paths({"events": [{"name": "x"}]}) == ["client_id"]
    assert paths({"client_id": "1"}) == ["events"]
    assert paths({"client_id": "1", "events": [{"name": "ok"}, {"name": "1bad"}]}) == [
        "events[1].name"
    ]
    assert paths(
        {"client_id": "1", "events": [{"name": "x", "timestamp_micros": 5}]}
    ) == ["events[0].timestamp_micros"]
    assert paths(
        {
            "client_id": "1",
            "user_data": {"sha256_email_address": ["nothex"]},
            "events": [{"name": "x"}],
        }
    ) == ["user_data.sha256_email_address[0]"]
    assert paths(
        {
            "client_id": "1",
            "events": [{"name": "x", "params": {"items": [{"quantity": -1}]}}],
        }
    ) == ["events[0].params.items[0].quantity"]
    assert paths(b"[]") == ["$"]
    assert paths(b"{bad") == ["$"]


def test_more_than_25_events_is_400_and_over_the_request_limit_413() -> None:
    """26..max events is a 400 (MP limit); above max_events_per_request a 413."""
    events = [{"name": "x"}] * 26
    assert paths({"client_id": "1", "events": events}) == ["events"]
    with pytest.raises(InvalidPayload) as info:
        parse({"client_id": "1", "events": events}, max_events=25)
    assert info.value.status == 413


@pytest.mark.parametrize(
    ("query", "secrets"),
    [
        (b"", ["s3cr3t"]),
        (b"api_secret=", ["s3cr3t"]),
        (b"api_secret=wrong", ["s3cr3t"]),
        (b"api_secret=s3cr3t", []),
    ],
)
def test_missing_wrong_or_unconfigured_secret_is_401(
    query: bytes, secrets: list[str]
) -> None:
    """Missing or wrong api_secret, or no configured secret, is a 401."""
    with pytest.raises(InvalidPayload) as info:
        check_api_secret(query, secrets)
    assert info.value.status == 401
    assert info.value.code == "unauthorized"


def test_any_configured_secret_is_accepted() -> None:
    """During a rotation both secrets work."""
    check_api_secret(b"measurement_id=G-1&api_secret=new", ["old", "new"])
    check_api_secret(b"api_secret=old", ["old", "new"])
