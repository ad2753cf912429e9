"""Stripe event mapping on complete events in Stripe's documented shape."""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from webhook_support import fixture_json

from truecount.config import Config, SourcesConfig, StripeConfig
from truecount.core.dedup import with_dedup_key
from truecount.errors import InvalidPayload
from truecount.models.event import Event, Item
from truecount.webhooks import stripe as mapping

RECEIVED = datetime(2024, 4, 5, 19, 35, tzinfo=UTC)
CONFIG = Config(sources=SourcesConfig(stripe=StripeConfig()))


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def load(name: str) -> dict[str, Any]:
    return copy.deepcopy(fixture_json("stripe", name))


def run(
    data: dict[str, Any], cfg: StripeConfig | None = None
) -> Event | mapping.Ignored:
    envelope = mapping.parse_envelope(data)
    result = mapping.map_event(envelope, cfg or StripeConfig(), RECEIVED)
    if isinstance(result, Event):
        return with_dedup_key(result, CONFIG.rule(result.name))
    return result


def run_event(data: dict[str, Any], cfg: StripeConfig | None = None) -> Event:
    result = run(data, cfg)
    assert isinstance(result, Event)
    return result


def test_checkout_session_completed_maps_to_purchase_with_context() -> None:
    """A paid Checkout Session becomes a purchase with money, hashed identity and
    the browser context from metadata."""
    event = run_event(load("checkout_session_completed"))
    assert event.event_id == "evt_1PcsCompleted0001"
    assert (event.name, event.source, event.debug) == ("purchase", "stripe", False)
    assert event.occurred_at == datetime(2024, 4, 5, 19, 34, 38, tzinfo=UTC)
    assert event.received_at == RECEIVED
    assert event.commerce is not None
    assert event.commerce.transaction_id == "1001"
    assert event.commerce.value == Decimal("23.50")
    assert event.commerce.currency == "EUR"
    assert event.commerce.tax == Decimal("1.00")
    assert event.commerce.shipping == Decimal("2.50")
    assert event.dedup_key == "purchase:1001"
    assert event.client.client_id == "1234567890.1700000000"
    assert event.client.session_id == "1712345000"
    assert event.client.user_id == "user-42"
    assert event.click_ids.gclid == "EAIaIQobChMI-test-gclid"
    assert event.click_ids.fbp == "fb.1.1596403881668.1116446470"
    assert event.click_ids.fbc == "fb.1.1712345678901.IwAR2F4-dbP0l7Mn1IawQQ"
    assert event.consent.ad_user_data == "granted"
    assert event.consent.ad_storage == "granted"
    assert event.consent.ad_personalization == "unknown"
    assert event.params["truecount_browser_event_id"] == "ord-1001"
    assert event.params["stripe_event_type"] == "checkout.session.completed"
    assert event.params["stripe_customer_id"] == "cus_Q1w2E3r4"


def test_checkout_identity_is_hashed_per_platform_rules() -> None:
    """customer_details is normalised and hashed; no raw value survives."""
    event = run_event(load("checkout_session_completed"))
    identity = event.identity
    assert (
        identity.email_sha256
        == "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    )
    assert identity.email_sha256_google == sha("john_smith@gmail.com")
    assert identity.phone_sha256 == sha("16505551212")
    assert identity.phone_sha256_e164 == sha("+16505551212")
    assert identity.first_name_sha256 == sha("john")
    assert identity.last_name_sha256 == sha("smith")
    assert identity.city_sha256 == sha("sanfrancisco")
    assert identity.region_sha256 == sha("ca")
    assert identity.postal_code_sha256 == sha("94105")
    assert identity.country_sha256 == sha("us")
    assert identity.external_id == sha("user-42")
    body = event.to_json_bytes().decode()
    for raw in ("John_Smith", "john_smith@", "650 555", "San Francisco", "94105-1234"):
        assert raw not in body


def test_same_order_via_checkout_and_payment_intent_shares_transaction_id() -> None:
    """checkout.session.completed and payment_intent.succeeded of one order give
    the same transaction_id and dedup key (metadata.order_id)."""
    session = run_event(load("checkout_session_completed"))
    intent = run_event(load("payment_intent_succeeded"))
    assert session.commerce
    assert intent.commerce
    assert session.commerce.transaction_id == intent.commerce.transaction_id == "1001"
    assert session.dedup_key == intent.dedup_key == "purchase:1001"
    assert session.event_id != intent.event_id


def test_without_order_id_both_events_fall_back_to_payment_intent_id() -> None:
    """With no metadata.order_id (and a GA client id as client_reference_id),
    both events use the PaymentIntent id."""
    session_data = load("checkout_session_completed")
    session_data["data"]["object"]["metadata"].pop("order_id")
    intent_data = load("payment_intent_succeeded")
    intent_data["data"]["object"]["metadata"] = {}
    session, intent = run_event(session_data), run_event(intent_data)
    assert session.dedup_key == intent.dedup_key == "purchase:pi_3P0abcdEFGH"
    assert session.client.client_id == "1234567890.1700000000"


def test_ga_client_id_in_client_reference_id_becomes_client_id() -> None:
    """A client_reference_id shaped like a GA client id is used as client_id when
    metadata has none, and is never the transaction id."""
    data = load("checkout_session_completed")
    meta = data["data"]["object"]["metadata"]
    meta.pop("client_id")
    meta.pop("order_id")
    event = run_event(data)
    assert event.client.client_id == "1234567890.1700000000"
    assert event.commerce
    assert event.commerce.transaction_id == "pi_3P0abcdEFGH"


def test_async_payment_succeeded_uses_client_reference_id_and_expanded_intent() -> None:
    """A non-GA client_reference_id is the transaction id; an expanded
    payment_intent object is read by its id; a one-word name is a first name."""
    event = run_event(load("checkout_session_async_payment_succeeded"))
    assert event.name == "purchase"
    assert event.commerce is not None
    assert event.commerce.transaction_id == "ORDER-2002"
    assert event.commerce.value == Decimal("50.00")
    assert event.identity.first_name_sha256 == sha("anna")
    assert event.identity.last_name_sha256 is None
    data = load("checkout_session_async_payment_succeeded")
    data["data"]["object"]["client_reference_id"] = None
    fallback = run_event(data)
    assert fallback.commerce
    assert fallback.commerce.transaction_id == "pi_3Sepa0002"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"payment_status": "unpaid"}, "checkout_not_paid"),
        ({"payment_status": "no_payment_required"}, "checkout_not_paid"),
        ({"mode": "subscription"}, "subscription_checkout_counted_by_invoice"),
    ],
)
def test_checkout_not_paid_or_subscription_is_ignored(
    changes: dict[str, str], reason: str
) -> None:
    """Unpaid sessions wait for async_payment_succeeded; subscription sessions are
    counted by their first invoice."""
    data = load("checkout_session_completed")
    data["data"]["object"].update(changes)
    assert run(data) == mapping.Ignored(reason)


def test_jpy_payment_intent_is_zero_decimal() -> None:
    """2100 JPY is 2100, not 21.00; the shipping contact is hashed."""
    event = run_event(load("payment_intent_succeeded_jpy"))
    assert event.commerce is not None
    assert event.commerce.value == Decimal("2100")
    assert event.commerce.currency == "JPY"
    assert event.commerce.transaction_id == "pi_3JpyOrder0004"
    assert event.identity.phone_sha256_e164 == sha("+81312345678")
    assert event.identity.last_name_sha256 == sha("yamada")


@pytest.mark.parametrize(
    ("currency", "amount", "value"),
    [
        ("krw", 15000, "15000"),
        ("kwd", 2100, "2.100"),
        ("usd", 1999, "19.99"),
        ("isk", 50000, "500.00"),
        ("mga", 500, "500"),
    ],
)
def test_minor_units_follow_the_currency_exponent(
    currency: str, amount: int, value: str
) -> None:
    """KRW has no minor unit, KWD has three digits, USD two; Stripe counts ISK
    with two digits and MGA with none, unlike ISO 4217."""
    data = load("payment_intent_succeeded_jpy")
    data["data"]["object"].update(currency=currency, amount_received=amount)
    event = run_event(data)
    assert event.commerce is not None
    assert event.commerce.value == Decimal(value)
    assert str(event.commerce.value) == value
    assert event.commerce.currency == currency.upper()


def test_invoice_renewal_uses_configured_event_name() -> None:
    """billing_reason subscription_cycle takes renewal_event_name; metadata from
    subscription_details carries the browser context."""
    event = run_event(
        load("invoice_paid_renewal"), StripeConfig(renewal_event_name="renewal")
    )
    assert event.name == "renewal"
    assert event.commerce is not None
    assert event.commerce.transaction_id == "pi_3RenewalPi0005"
    assert event.commerce.value == Decimal("19.00")
    assert event.commerce.currency == "USD"
    assert event.client.client_id == "555.666"
    assert event.click_ids.gclid == "renewal-gclid"
    assert event.identity.email_sha256 == sha("mary.jones@example.com")
    assert event.identity.first_name_sha256 == sha("mary")
    assert event.identity.last_name_sha256 == sha("jones")
    assert event.params["stripe_billing_reason"] == "subscription_cycle"
    assert event.params["stripe_subscription_id"] == "sub_1SubAbc"


def test_invoice_paid_is_purchase_by_default_and_for_other_reasons() -> None:
    """Default renewal name is purchase; a manual invoice is a purchase."""
    assert run_event(load("invoice_paid_renewal")).name == "purchase"
    data = load("invoice_paid_renewal")
    data["data"]["object"]["billing_reason"] = "manual"
    event = run_event(data, StripeConfig(renewal_event_name="renewal"))
    assert event.name == "purchase"
    assert event.dedup_key == "purchase:pi_3RenewalPi0005"


def test_zero_amount_invoice_is_ignored() -> None:
    """A 0 invoice (trial start) is not a purchase."""
    data = load("invoice_paid_renewal")
    data["data"]["object"]["amount_paid"] = 0
    assert run(data) == mapping.Ignored("invoice_zero_amount")


def test_subscription_created_maps_to_subscription_started() -> None:
    """customer.subscription.created becomes subscription_started with its items."""
    event = run_event(load("customer_subscription_created"))
    assert event.name == "subscription_started"
    assert event.commerce is not None
    assert event.commerce.transaction_id == "sub_1SubAbc"
    assert event.commerce.value == Decimal("38.00")
    assert event.commerce.currency == "USD"
    assert event.commerce.items == [
        Item(item_id="prod_Pro", price=Decimal("19.00"), quantity=2)
    ]
    assert event.client.user_id == "user-77"
    assert event.params["stripe_subscription_status"] == "active"
    assert event.dedup_key == "event:evt_1SubCreated0006"


def test_charge_refunded_maps_to_refund_with_amount_refunded() -> None:
    """charge.refunded is a refund of amount_refunded, keyed by the PaymentIntent."""
    event = run_event(load("charge_refunded"))
    assert event.name == "refund"
    assert event.commerce is not None
    assert event.commerce.value == Decimal("10.00")
    assert event.commerce.currency == "EUR"
    assert event.commerce.transaction_id == "pi_3P0abcdEFGH"
    assert event.dedup_key == "refund:pi_3P0abcdEFGH"
    assert event.identity.email_sha256 == sha("john_smith@gmail.com")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("debug", True), ("accept", False), ("drop", None)],
)
def test_test_mode_events_follow_config(mode: str, expected: bool | None) -> None:
    """livemode=false: debug marks the event debug, accept keeps it, drop ignores."""
    data = load("payment_intent_succeeded")
    data["livemode"] = False
    result = run(data, StripeConfig(test_mode=mode))  # type: ignore[arg-type]
    if expected is None:
        assert result == mapping.Ignored("test_mode")
    else:
        assert isinstance(result, Event)
        assert result.debug is expected


def test_unhandled_type_is_ignored() -> None:
    """Verified events of other types are ignored with a reason."""
    data = load("payment_intent_succeeded")
    data["type"] = "payment_intent.created"
    assert run(data) == mapping.Ignored("unhandled_type")


def test_same_delivery_twice_gives_the_same_event() -> None:
    """Mapping is deterministic: a redelivery has the same event_id and key."""
    first = run_event(load("checkout_session_completed"))
    second = run_event(load("checkout_session_completed"))
    assert first == second


def test_oversized_metadata_values_are_dropped_not_rejected() -> None:
    """A metadata value longer than the canonical limit is left out."""
    data = load("checkout_session_completed")
    data["data"]["object"]["metadata"]["gclid"] = "g" * 600
    data["data"]["object"]["metadata"]["session_id"] = "s" * 65
    event = run_event(data)
    assert event.click_ids.gclid is None
    assert event.client.session_id is None


def test_envelope_without_id_is_a_400_naming_the_field() -> None:
    """A body that is not a Stripe event names the missing field."""
    data = load("payment_intent_succeeded")
    data.pop("id")
    with pytest.raises(InvalidPayload) as info:
        mapping.parse_envelope(data)
    assert info.value.status == 400
    assert {"path": "id", "message": "Field required"} in info.value.fields


def test_object_with_wrong_type_is_a_400_naming_the_path() -> None:
    """A non-integer amount names data.object.amount_total."""
    data = load("checkout_session_completed")
    data["data"]["object"]["amount_total"] = "lots"
    with pytest.raises(InvalidPayload) as info:
        run(data)
    assert [f["path"] for f in info.value.fields] == ["data.object.amount_total"]


def test_unknown_currency_is_a_400_naming_the_path() -> None:
    """A currency that is not ISO 4217 names data.object.currency."""
    data = load("payment_intent_succeeded")
    data["data"]["object"]["currency"] = "xyz"
    with pytest.raises(InvalidPayload) as info:
        run(data)
    assert info.value.fields == [
        {"path": "data.object.currency", "message": "not an ISO 4217 currency"}
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1234567890.1700000000", True),
        ("12.34", True),
        ("T-1001", False),
        ("1.", False),
    ],
)
def test_ga_client_id_shape(value: str, expected: bool) -> None:
    """Only <digits>.<digits> looks like a GA client id."""
    assert mapping.looks_like_ga_client_id(value) is expected


def test_transaction_id_precedence() -> None:
    """order_id, then non-GA client_reference_id, then PaymentIntent, then object."""
    assert mapping.transaction_id({"order_id": "A"}, "B", "pi", "obj") == "A"
    assert mapping.transaction_id({}, "B", "pi", "obj") == "B"
    assert mapping.transaction_id({}, "1.2", "pi", "obj") == "pi"
    assert mapping.transaction_id({"order_id": " "}, None, None, "obj") == "obj"


def test_signed_event_with_an_absurd_created_time_is_a_4xx_not_a_5xx() -> None:
    """A timestamp past year 9999 is bad input (400 naming it), not a crash."""
    from truecount.errors import InvalidPayload

    data = load("payment_intent_succeeded_jpy")
    data["created"] = 10**12
    with pytest.raises(InvalidPayload) as caught:
        run_event(data)
    assert caught.value.status == 400
    assert any("created" in f["path"] for f in caught.value.fields)
