"""Canonical event v1: valid examples round-trip, invalid ones name the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from truecount.models.event import Event, error_fields

SHA = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"


def purchase() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": "evt_3MtwBwLkdIwHu7ix28a3tqPa",
        "name": "purchase",
        "source": "stripe",
        "occurred_at": "2025-03-01T12:00:00Z",
        "received_at": "2025-03-01T12:00:01.250000Z",
        "dedup_key": "purchase:T-1001",
        "client": {
            "client_id": "123.456",
            "session_id": "1712345678",
            "session_number": 3,
            "ip": "203.0.113.9",
            "user_agent": "Mozilla/5.0",
        },
        "page": {"location": "https://shop.example.com/thanks", "title": "Thanks"},
        "identity": {"email_sha256": SHA, "lead_id": "L-1"},
        "click_ids": {"gclid": "Cj0KCQ", "fbc": "fb.1.1712345678901.IwAR2F4"},
        "consent": {
            "ad_storage": "granted",
            "analytics_storage": "granted",
            "ad_user_data": "denied",
            "ad_personalization": "unknown",
            "gcs": "G111",
        },
        "commerce": {
            "transaction_id": "T-1001",
            "value": "10.10",
            "currency": "EUR",
            "tax": "1.61",
            "shipping": 0,
            "coupon": "SPRING",
            "items": [
                {
                    "item_id": "SKU-1",
                    "item_name": "Mug",
                    "price": "5.05",
                    "quantity": 2,
                },
                {
                    "item_id": "SKU-2",
                    "price": 0.1,
                    "quantity": 1,
                    "item_category2": "Kitchen",
                    "params": {"color": "red", "size": 2},
                },
            ],
        },
        "params": {"plan": "pro", "count": 2, "ratio": 0.5},
        "user_properties": {"tier": "gold"},
        "debug": False,
    }


def lead() -> dict[str, Any]:
    return {
        "event_id": "hs-987",
        "name": "close_convert_lead",
        "source": "hubspot",
        "occurred_at": "2025-03-01T12:00:00+02:00",
        "received_at": "2025-03-01T10:00:02Z",
        "dedup_key": "close_convert_lead:L-77",
        "identity": {"lead_id": "L-77", "phone_sha256_e164": SHA},
        "lead": {
            "lead_id": "L-77",
            "stage": "closedwon",
            "value": 1500,
            "currency": "USD",
        },
    }


def page_view() -> dict[str, Any]:
    return {
        "event_id": "pv-1",
        "name": "page_view",
        "source": "ga4",
        "occurred_at": "2025-03-01T12:00:00Z",
        "received_at": "2025-03-01T12:00:00Z",
    }


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        Event.model_validate(data)
    return [f["path"] for f in error_fields(info.value.errors())]


# --- valid examples -----------------------------------------------------------


@pytest.mark.parametrize("example", [purchase, lead, page_view])
def test_valid_examples_round_trip_through_json(example: Any) -> None:
    """Serialising and parsing gives back an equal event and identical bytes."""
    event = Event.model_validate(example())

    body = event.to_json_bytes()
    again = Event.from_json_bytes(body)

    assert again == event
    assert again.to_json_bytes() == body


def test_money_is_exact_decimal_and_written_as_string() -> None:
    """10.10 stays exactly 10.10: a Decimal in Python, a string in JSON."""
    event = Event.model_validate(purchase())

    body = json.loads(event.to_json_bytes())

    assert event.commerce is not None
    assert event.commerce.value == Decimal("10.10")
    assert str(event.commerce.value) == "10.10"
    assert body["commerce"]["value"] == "10.10"
    assert body["commerce"]["shipping"] == "0"
    assert body["commerce"]["items"][0]["price"] == "5.05"
    assert body["commerce"]["items"][1]["price"] == "0.1"


def test_json_number_money_is_parsed_without_binary_float_error() -> None:
    """A JSON number 10.10 becomes Decimal('10.10'), not 10.0999999..."""
    data = purchase()
    text = json.dumps(data).replace('"value": "10.10"', '"value": 10.10')

    event = Event.from_json_bytes(text)

    assert event.commerce is not None
    assert event.commerce.value == Decimal("10.10")


def test_timestamps_are_normalised_to_utc_with_z() -> None:
    """An offset timestamp is converted to UTC and written with Z."""
    event = Event.model_validate(lead())

    body = json.loads(event.to_json_bytes())

    assert event.occurred_at == datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
    assert body["occurred_at"] == "2025-03-01T10:00:00.000000Z"


def test_minimal_page_view_gets_defaults() -> None:
    """A minimal event gets the default dedup key, consent and empty objects."""
    event = Event.model_validate(page_view())

    body = json.loads(event.to_json_bytes())

    assert event.dedup_key == "event:pv-1"
    assert event.consent.ad_storage == "unknown"
    assert event.is_browser is True
    assert body["schema_version"] == 1
    assert body["client"] == {}
    assert body["params"] == {}
    assert "page" not in body
    assert "commerce" not in body


def test_pubsub_attributes_are_the_contract_strings() -> None:
    """Every message carries event_id, dedup_key, name, source, schema_version."""
    event = Event.model_validate(purchase())

    assert event.pubsub_attributes() == {
        "event_id": "evt_3MtwBwLkdIwHu7ix28a3tqPa",
        "dedup_key": "purchase:T-1001",
        "name": "purchase",
        "source": "stripe",
        "schema_version": "1",
    }


def test_pubsub_attributes_use_the_default_dedup_key() -> None:
    """Without a dedup key the attribute carries event:<event_id>."""
    attributes = Event.model_validate(page_view()).pubsub_attributes()

    assert attributes["dedup_key"] == "event:pv-1"
    assert all(isinstance(v, str) for v in attributes.values())


def test_name_is_case_sensitive_and_kept_as_sent() -> None:
    """GA4 names like PROCEED_TO_CHECKOUT are valid and unchanged."""
    event = Event.model_validate({**page_view(), "name": "PROCEED_TO_CHECKOUT"})

    assert event.name == "PROCEED_TO_CHECKOUT"


# --- invalid examples -----------------------------------------------------------


DELETE = object()


def with_change(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Copy ``base`` and set a dotted path (``a.b.1.c``); value DELETE removes."""
    data: dict[str, Any] = json.loads(json.dumps(base))
    node: Any = data
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("change", "value", "expected"),
    [
        ("commerce.items.1.price", "ten", "commerce.items[1].price"),
        ("commerce.items.1.quantity", -1, "commerce.items[1].quantity"),
        ("name", "1purchase", "name"),
        ("name", "a" * 41, "name"),
        ("consent.ad_storage", "yes", "consent.ad_storage"),
        ("identity.email_sha256", "john@example.com", "identity.email_sha256"),
        ("identity.email_sha256", SHA.upper(), "identity.email_sha256"),
        ("occurred_at", "2025-03-01T12:00:00", "occurred_at"),
        ("commerce.currency", "EUX", "commerce.currency"),
        ("commerce.currency", "eur", "commerce.currency"),
        ("source", "shopify_plus", "source"),
        ("schema_version", 2, "schema_version"),
        ("event_id", "", "event_id"),
        ("commerce.value", "NaN", "commerce.value"),
        ("client.session_number", -1, "client.session_number"),
    ],
)
def test_invalid_field_is_reported_by_its_path(
    change: str, value: Any, expected: str
) -> None:
    """Each invalid value yields exactly one error, whose path names that field."""
    assert errors_of(with_change(purchase(), change, value)) == [expected]


def test_invalid_param_value_is_reported_by_its_path() -> None:
    """A param that is neither string nor number names params.<key> once."""
    assert errors_of(with_change(purchase(), "params.count", True)) == ["params.count"]


def test_unknown_field_is_rejected_with_its_path() -> None:
    """Unknown keys are errors at every level, not silently dropped."""
    data = with_change(purchase(), "commerce.items.0.colour", "red")
    data["extra_top"] = 1

    paths = errors_of(data)

    assert "commerce.items[0].colour" in paths
    assert "extra_top" in paths


def test_missing_required_field_is_reported() -> None:
    """A missing event_id names event_id."""
    assert errors_of(with_change(page_view(), "event_id", DELETE)) == ["event_id"]


def test_value_without_currency_is_reported_on_the_object() -> None:
    """commerce.value needs commerce.currency; the error names commerce."""
    data = with_change(purchase(), "commerce.currency", DELETE)

    assert errors_of(data) == ["commerce"]


def test_lead_value_without_currency_is_reported_on_lead() -> None:
    """lead.value needs lead.currency too."""
    assert errors_of(with_change(lead(), "lead.currency", DELETE)) == ["lead"]


def test_naive_datetime_object_is_rejected() -> None:
    """A Python datetime without tzinfo is refused, not assumed UTC."""
    data = page_view()
    data["occurred_at"] = datetime(2025, 3, 1, 12, 0)

    assert errors_of(data) == ["occurred_at"]


def test_aware_datetime_object_is_converted_to_utc() -> None:
    """A Python datetime with another offset is stored in UTC."""
    data = page_view()
    data["occurred_at"] = datetime(
        2025, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))
    )

    event = Event.model_validate(data)

    assert event.occurred_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert event.occurred_at.tzinfo == UTC


def test_error_fields_has_a_message_and_a_prefix() -> None:
    """Entries carry a message, and an optional prefix roots the path."""
    with pytest.raises(ValidationError) as info:
        Event.model_validate(with_change(page_view(), "name", "bad name"))

    (entry,) = error_fields(info.value.errors(), prefix="events[2]")

    assert entry["path"] == "events[2].name"
    assert "pattern" in entry["message"]


def test_invalid_json_body_is_a_validation_error() -> None:
    """from_json_bytes refuses a body that is not JSON."""
    with pytest.raises(ValidationError):
        Event.from_json_bytes(b"{not json")
