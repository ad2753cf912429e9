"""The signed CRM contract: parsing, validation paths and mapping."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from truecount.config import Config
from truecount.core.dedup import with_dedup_key
from truecount.errors import InvalidPayload
from truecount.webhooks.crm import map_crm, parse_crm

RECEIVED = datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC)
WINDOW = timedelta(seconds=300)


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def body(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "qualify_lead",
        "event_id": "crm-lead-42-mql",
        "occurred_at": "2024-05-01T14:00:00+02:00",
        "lead": {"lead_id": "42", "stage": "mql", "value": "100.00", "currency": "EUR"},
        "identity": {
            "email": " Jane.Doe@Example.com ",
            "phone": "020 7946 0958",
            "phone_country_code": "44",
            "first_name": "Jane",
            "last_name": "Doe",
            "city": "London",
            "country": "GB",
            "external_id": "cust-42",
        },
        "click_ids": {"gclid": "crm-gclid"},
        "consent": {"ad_user_data": "granted", "ad_personalization": "denied"},
        "client": {"client_id": "111.222", "session_id": "333", "user_id": "u-42"},
        "params": {"plan": "pro", "seats": 5},
    }
    return base | changes


def test_crm_event_maps_to_canonical_event_with_hashed_identity() -> None:
    """Every contract field lands in the canonical event; PII is hashed."""
    event = map_crm(parse_crm(body()), RECEIVED, WINDOW)
    event = with_dedup_key(event, Config().rule(event.name))
    assert (event.event_id, event.name, event.source) == (
        "crm-lead-42-mql",
        "qualify_lead",
        "crm",
    )
    assert event.occurred_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert event.dedup_key == "qualify_lead:42"
    assert event.lead is not None
    assert event.lead.value == Decimal("100.00")
    assert event.identity.lead_id == "42"
    assert event.identity.email_sha256 == sha("jane.doe@example.com")
    assert event.identity.phone_sha256 == sha("442079460958")
    assert event.identity.phone_sha256_e164 == sha("+442079460958")
    assert event.identity.first_name_sha256 == sha("jane")
    assert event.identity.country_sha256 == sha("gb")
    assert event.identity.external_id == sha("cust-42")
    assert event.click_ids.gclid == "crm-gclid"
    assert event.consent.ad_user_data == "granted"
    assert event.consent.ad_personalization == "denied"
    assert event.consent.ad_storage == "unknown"
    assert event.client.client_id == "111.222"
    assert event.params == {"plan": "pro", "seats": 5}
    assert "Jane" not in event.to_json_bytes().decode()


def test_commerce_event_keys_on_transaction_id() -> None:
    """A purchase from a backend carries commerce and dedups on transaction_id."""
    data = body(
        name="purchase",
        lead=None,
        commerce={"transaction_id": "T-9", "value": 12.5, "currency": "USD"},
    )
    event = map_crm(parse_crm(data), RECEIVED, WINDOW)
    event = with_dedup_key(event, Config().rule(event.name))
    assert event.dedup_key == "purchase:T-9"
    assert event.commerce is not None
    assert event.commerce.value == Decimal("12.5")


def test_prehashed_identity_passes_through() -> None:
    """A sender may hash on its side: 64-hex values are kept (lower-cased)."""
    digest = sha("jane.doe@example.com").upper()
    event = map_crm(parse_crm(body(identity={"email": digest})), RECEIVED, WINDOW)
    assert event.identity.email_sha256 == digest.lower()


def test_email_in_params_is_removed_and_hashed() -> None:
    """A raw email in params never travels; it fills identity when missing."""
    data = body(identity={}, params={"contact": "jane@example.com", "plan": "pro"})
    event = map_crm(parse_crm(data), RECEIVED, WINDOW)
    assert event.params == {"plan": "pro"}
    assert event.identity.email_sha256 == sha("jane@example.com")


def test_debug_flag_is_kept() -> None:
    """``debug: true`` marks the event debug."""
    assert map_crm(parse_crm(body(debug=True)), RECEIVED, WINDOW).debug is True


@pytest.mark.parametrize(
    ("changes", "paths"),
    [
        ({"name": "1bad"}, ["name"]),
        ({"event_id": ""}, ["event_id"]),
        ({"occurred_at": "2024-05-01T12:00:00"}, ["occurred_at"]),
        ({"occurred_at": "yesterday"}, ["occurred_at"]),
        ({"unknown": 1}, ["unknown"]),
        ({"identity": {"email_address": "x"}}, ["identity.email_address"]),
        ({"lead": {"lead_id": "1", "value": "5"}}, ["lead"]),
        ({"commerce": {"currency": "EURO"}}, ["commerce.currency"]),
        ({"consent": {"ad_storage": "yes"}}, ["consent.ad_storage"]),
        ({"params": {"nested": {"a": 1}}}, ["params.nested"]),
        ({"click_ids": {"gclid": "g" * 513}}, ["click_ids.gclid"]),
    ],
)
def test_validation_errors_name_the_field_paths(
    changes: dict[str, Any], paths: list[str]
) -> None:
    """Bad input is a 400 whose fields name each bad path."""
    with pytest.raises(InvalidPayload) as info:
        parse_crm(body(**changes))
    assert info.value.status == 400
    assert info.value.code == "invalid_event"
    assert sorted({f["path"] for f in info.value.fields}) == paths


def test_missing_required_fields_are_all_named() -> None:
    """An empty object names name, event_id and occurred_at."""
    with pytest.raises(InvalidPayload) as info:
        parse_crm({})
    assert sorted(f["path"] for f in info.value.fields) == [
        "event_id",
        "name",
        "occurred_at",
    ]


def test_body_that_is_not_an_object_is_rejected() -> None:
    """A JSON array is not a CRM event."""
    with pytest.raises(InvalidPayload) as info:
        parse_crm([body()])
    assert info.value.fields[0]["path"] == "$"


def test_occurred_at_in_the_future_is_rejected() -> None:
    """More than the tolerance ahead of arrival is a 400 on occurred_at."""
    data = body(occurred_at="2024-05-01T12:10:00Z")
    with pytest.raises(InvalidPayload) as info:
        map_crm(parse_crm(data), RECEIVED, WINDOW)
    assert info.value.fields == [{"path": "occurred_at", "message": "is in the future"}]
