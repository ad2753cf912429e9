"""Stripe events to canonical events (pure: no SDK, no clock, no I/O).

Mapping (``type`` of the Stripe event → canonical name):

* ``checkout.session.completed`` (only ``payment_status == "paid"``, and only
  ``mode == "payment"``: a subscription Checkout is counted by the
  ``invoice.paid`` of its first invoice, which carries the payment) and
  ``checkout.session.async_payment_succeeded`` → ``purchase``;
* ``payment_intent.succeeded`` → ``purchase`` (value: ``amount_received``);
* ``invoice.paid`` → ``purchase``, or ``renewal_event_name`` when
  ``billing_reason == "subscription_cycle"``; invoices of 0 are ignored;
* ``customer.subscription.created`` → ``subscription_started``;
* ``charge.refunded`` → ``refund`` (value: ``amount_refunded``, cumulative).

``transaction_id`` is the same for one order whichever event carries it:
``metadata.order_id``, then ``client_reference_id`` (unless it looks like a GA
client id ``\\d+.\\d+``, which is then used as ``client.client_id``), then the
PaymentIntent id, then the object's own id.

Browser context travels through ``metadata`` (see docs/webhooks.md): ``client_id``,
``session_id``, ``user_id``, every click-id name (``gclid``, ``fbc``, ``fbp``, ...),
the four consent types, and ``event_id`` (the browser's event id, kept as
``params.truecount_browser_event_id`` so Meta/TikTok dedup with the pixel).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from truecount.config import StripeConfig
from truecount.core.currency import STRIPE_EXPONENTS, from_minor_units
from truecount.core.pii import RawIdentity, hash_identity
from truecount.errors import InvalidPayload
from truecount.models.event import (
    CONSENT_TYPES,
    ClickIds,
    Client,
    Commerce,
    Consent,
    Event,
    Identity,
    Item,
    error_fields,
)

PURCHASE = "purchase"
REFUND = "refund"
SUBSCRIPTION_STARTED = "subscription_started"
BROWSER_EVENT_ID_PARAM = "truecount_browser_event_id"

_GA_CLIENT_ID = re.compile(r"^\d+\.\d+$")
_CLICK_ID_KEYS: tuple[str, ...] = tuple(ClickIds.model_fields)
_CONSENT_VALUES = frozenset({"granted", "denied"})
_MAX_ID = 256
_MAX_SESSION_ID = 64
_MAX_CLICK_ID = 512
_MAX_EVENT_ID = 128

HANDLED_TYPES: frozenset[str] = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "payment_intent.succeeded",
        "invoice.paid",
        "customer.subscription.created",
        "charge.refunded",
    }
)


@dataclass(frozen=True)
class Ignored:
    """A verified event that is not published, and why (for the log)."""

    reason: str


# --- Stripe shapes (only the fields we read; everything else is ignored) -------


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Address(_Loose):
    city: str | None = None
    country: str | None = None
    postal_code: str | None = None
    state: str | None = None


class _Party(_Loose):
    email: str | None = None
    name: str | None = None
    phone: str | None = None
    address: _Address | None = None


class _TotalDetails(_Loose):
    amount_tax: int | None = None
    amount_shipping: int | None = None


Ref = str | dict[str, Any] | None
Metadata = dict[str, str | None] | None


class _CheckoutSession(_Loose):
    id: str
    mode: str | None = None
    payment_status: str | None = None
    amount_total: int | None = None
    currency: str | None = None
    client_reference_id: str | None = None
    customer: Ref = None
    customer_details: _Party | None = None
    customer_email: str | None = None
    metadata: Metadata = None
    payment_intent: Ref = None
    total_details: _TotalDetails | None = None


class _PaymentIntent(_Loose):
    id: str
    amount: int | None = None
    amount_received: int | None = None
    currency: str | None = None
    customer: Ref = None
    metadata: Metadata = None
    receipt_email: str | None = None
    shipping: _Party | None = None


class _SubscriptionDetails(_Loose):
    metadata: Metadata = None


class _InvoiceParent(_Loose):
    subscription_details: _SubscriptionDetails | None = None


class _Invoice(_Loose):
    id: str
    amount_paid: int | None = None
    currency: str | None = None
    customer: Ref = None
    customer_email: str | None = None
    customer_name: str | None = None
    customer_phone: str | None = None
    customer_address: _Address | None = None
    billing_reason: str | None = None
    payment_intent: Ref = None
    metadata: Metadata = None
    subscription: Ref = None
    subscription_details: _SubscriptionDetails | None = None
    parent: _InvoiceParent | None = None
    tax: int | None = None


class _Charge(_Loose):
    id: str
    amount_refunded: int | None = None
    currency: str | None = None
    customer: Ref = None
    payment_intent: Ref = None
    metadata: Metadata = None
    billing_details: _Party | None = None
    receipt_email: str | None = None


class _Price(_Loose):
    id: str | None = None
    product: Ref = None
    unit_amount: int | None = None
    currency: str | None = None


class _SubscriptionItem(_Loose):
    price: _Price | None = None
    quantity: int | None = None


class _SubscriptionItems(_Loose):
    data: list[_SubscriptionItem] = Field(default_factory=list)


class _Subscription(_Loose):
    id: str
    status: str | None = None
    currency: str | None = None
    customer: Ref = None
    metadata: Metadata = None
    items: _SubscriptionItems | None = None


class _Data(_Loose):
    object: dict[str, Any]


class StripeEnvelope(_Loose):
    """The Stripe event object (``evt_...``)."""

    id: str = Field(min_length=1, max_length=_MAX_EVENT_ID)
    type: str = Field(min_length=1, max_length=128)
    created: int = Field(ge=0, lt=253402300800)  # before year 10000
    livemode: bool = False
    data: _Data


# --- helpers ----------------------------------------------------------------


def _ref(value: Ref) -> str | None:
    """The id of a reference that may be expanded into an object."""
    if isinstance(value, dict):
        ident = value.get("id")
        return ident if isinstance(ident, str) and ident else None
    return value or None


def _meta(metadata: Mapping[str, str | None], key: str, limit: int) -> str | None:
    """A trimmed metadata value; None when absent or too long (dropped, not 400)."""
    value = (metadata.get(key) or "").strip()
    return value if value and len(value) <= limit else None


def looks_like_ga_client_id(value: str) -> bool:
    """Tell whether a value has the GA client id shape ``<digits>.<digits>``.

    Args:
        value: e.g. a Checkout ``client_reference_id``.

    Returns:
        True for e.g. ``"1234567890.1700000000"``.
    """
    return bool(_GA_CLIENT_ID.match(value.strip()))


def transaction_id(
    metadata: Mapping[str, str | None],
    client_reference_id: str | None,
    payment_intent: str | None,
    object_id: str,
) -> str:
    """The order's transaction id, the same whichever Stripe event carries it.

    Args:
        metadata: the object's metadata.
        client_reference_id: Checkout's ``client_reference_id``, if any.
        payment_intent: the PaymentIntent id linked to the object, if any.
        object_id: the object's own id.

    Returns:
        ``metadata.order_id``, else ``client_reference_id`` (not a GA client id),
        else the PaymentIntent id, else the object id.
    """
    order_id = _meta(metadata, "order_id", _MAX_ID)
    if order_id:
        return order_id
    ref = (client_reference_id or "").strip()
    if ref and len(ref) <= _MAX_ID and not looks_like_ga_client_id(ref):
        return ref
    return payment_intent or object_id


def _money(amount: int, currency: str | None, path: str) -> tuple[Decimal, str]:
    code = (currency or "").upper()
    try:
        return from_minor_units(amount, code, STRIPE_EXPONENTS), code
    except ValueError:
        message = "not an ISO 4217 currency"
        raise InvalidPayload(
            "unknown currency", [{"path": path, "message": message}]
        ) from None


def _split_name(name: str | None) -> tuple[str | None, str | None]:
    """``"Jane Q. Doe"`` → first ``Jane``, last ``Doe``; one word → first only."""
    parts = (name or "").split()
    if not parts:
        return None, None
    return parts[0], parts[-1] if len(parts) > 1 else None


def _identity(party: _Party | None, email: str | None, user_id: str | None) -> Identity:
    party = party or _Party()
    first, last = _split_name(party.name)
    address = party.address or _Address()
    return hash_identity(
        RawIdentity(
            email=party.email or email,
            phone=party.phone,
            first_name=first,
            last_name=last,
            city=address.city,
            region=address.state,
            postal_code=address.postal_code,
            country=address.country,
            external_id=user_id,
        )
    )


@dataclass(frozen=True)
class _Context:
    client: Client
    click_ids: ClickIds
    consent: Consent
    params: dict[str, str | int | float]


def _context(
    metadata: Mapping[str, str | None], client_reference_id: str | None = None
) -> _Context:
    client_id = _meta(metadata, "client_id", _MAX_ID)
    if client_id is None and client_reference_id:
        ref = client_reference_id.strip()
        client_id = ref if looks_like_ga_client_id(ref) else None
    click_ids = {
        k: v for k in _CLICK_ID_KEYS if (v := _meta(metadata, k, _MAX_CLICK_ID))
    }
    consent = {
        k: v for k in CONSENT_TYPES if (v := _meta(metadata, k, 16)) in _CONSENT_VALUES
    }
    params: dict[str, str | int | float] = {}
    browser_event_id = _meta(metadata, "event_id", _MAX_EVENT_ID)
    if browser_event_id:
        params[BROWSER_EVENT_ID_PARAM] = browser_event_id
    return _Context(
        client=Client(
            client_id=client_id,
            session_id=_meta(metadata, "session_id", _MAX_SESSION_ID),
            user_id=_meta(metadata, "user_id", _MAX_ID),
        ),
        click_ids=ClickIds.model_validate(click_ids),
        consent=Consent.model_validate(consent),
        params=params,
    )


@dataclass(frozen=True)
class _Draft:
    """What each type contributes; the envelope adds the rest."""

    name: str
    commerce: Commerce
    context: _Context
    identity: Identity
    params: dict[str, str | int | float]


def _base_params(obj_id: str, customer: Ref) -> dict[str, str | int | float]:
    params: dict[str, str | int | float] = {"stripe_object_id": obj_id}
    customer_id = _ref(customer)
    if customer_id:
        params["stripe_customer_id"] = customer_id
    return params


def _checkout(raw: dict[str, Any]) -> _Draft | Ignored:
    session = _CheckoutSession.model_validate(raw)
    if session.payment_status != "paid":
        return Ignored("checkout_not_paid")
    if session.mode not in (None, "payment"):
        return Ignored("subscription_checkout_counted_by_invoice")
    metadata = session.metadata or {}
    context = _context(metadata, session.client_reference_id)
    total = session.total_details or _TotalDetails()
    value, currency = _money(session.amount_total or 0, session.currency, "currency")
    tax = shipping = None
    if total.amount_tax is not None:
        tax = _money(total.amount_tax, currency, "currency")[0]
    if total.amount_shipping is not None:
        shipping = _money(total.amount_shipping, currency, "currency")[0]
    txn = transaction_id(
        metadata, session.client_reference_id, _ref(session.payment_intent), session.id
    )
    return _Draft(
        name=PURCHASE,
        commerce=Commerce(
            transaction_id=txn,
            value=value,
            currency=currency,
            tax=tax,
            shipping=shipping,
        ),
        context=context,
        identity=_identity(
            session.customer_details, session.customer_email, context.client.user_id
        ),
        params=_base_params(session.id, session.customer),
    )


def _payment_intent(raw: dict[str, Any]) -> _Draft:
    intent = _PaymentIntent.model_validate(raw)
    metadata = intent.metadata or {}
    context = _context(metadata)
    amount = (
        intent.amount_received if intent.amount_received is not None else intent.amount
    )
    value, currency = _money(amount or 0, intent.currency, "currency")
    return _Draft(
        name=PURCHASE,
        commerce=Commerce(
            transaction_id=transaction_id(metadata, None, intent.id, intent.id),
            value=value,
            currency=currency,
        ),
        context=context,
        identity=_identity(
            intent.shipping, intent.receipt_email, context.client.user_id
        ),
        params=_base_params(intent.id, intent.customer),
    )


def _invoice(raw: dict[str, Any], config: StripeConfig) -> _Draft | Ignored:
    invoice = _Invoice.model_validate(raw)
    if not invoice.amount_paid:
        return Ignored("invoice_zero_amount")
    metadata: dict[str, str | None] = {}
    for details in (
        invoice.parent.subscription_details if invoice.parent else None,
        invoice.subscription_details,
    ):
        metadata.update((details.metadata or {}) if details else {})
    metadata.update(invoice.metadata or {})
    context = _context(metadata)
    value, currency = _money(invoice.amount_paid, invoice.currency, "currency")
    tax = _money(invoice.tax, currency, "tax")[0] if invoice.tax is not None else None
    renewal = invoice.billing_reason == "subscription_cycle"
    party = _Party(
        email=invoice.customer_email,
        name=invoice.customer_name,
        phone=invoice.customer_phone,
        address=invoice.customer_address,
    )
    params = _base_params(invoice.id, invoice.customer)
    if invoice.billing_reason:
        params["stripe_billing_reason"] = invoice.billing_reason
    subscription = _ref(invoice.subscription)
    if subscription:
        params["stripe_subscription_id"] = subscription
    txn = transaction_id(metadata, None, _ref(invoice.payment_intent), invoice.id)
    return _Draft(
        name=config.renewal_event_name if renewal else PURCHASE,
        commerce=Commerce(transaction_id=txn, value=value, currency=currency, tax=tax),
        context=context,
        identity=_identity(party, None, context.client.user_id),
        params=params,
    )


def _subscription(raw: dict[str, Any]) -> _Draft:
    sub = _Subscription.model_validate(raw)
    metadata = sub.metadata or {}
    context = _context(metadata)
    currency_code = sub.currency
    items: list[Item] = []
    total = Decimal(0)
    priced = False
    for index, line in enumerate(sub.items.data if sub.items else []):
        price = line.price or _Price()
        code = price.currency or currency_code
        currency_code = currency_code or code
        quantity = line.quantity if line.quantity is not None else 1
        unit = None
        if price.unit_amount is not None:
            path = f"items.data[{index}].price.currency"
            unit = _money(price.unit_amount, code, path)[0]
            total += unit * quantity
            priced = True
        items.append(
            Item(item_id=_ref(price.product) or price.id, price=unit, quantity=quantity)
        )
    value: Decimal | None = None
    currency: str | None = None
    if currency_code:
        currency = _money(0, currency_code, "currency")[1]
        value = total if priced else None
    params = _base_params(sub.id, sub.customer)
    if sub.status:
        params["stripe_subscription_status"] = sub.status
    return _Draft(
        name=SUBSCRIPTION_STARTED,
        commerce=Commerce(
            transaction_id=transaction_id(metadata, None, None, sub.id),
            value=value,
            currency=currency,
            items=items,
        ),
        context=context,
        identity=_identity(None, None, context.client.user_id),
        params=params,
    )


def _refund(raw: dict[str, Any]) -> _Draft:
    charge = _Charge.model_validate(raw)
    metadata = charge.metadata or {}
    context = _context(metadata)
    value, currency = _money(charge.amount_refunded or 0, charge.currency, "currency")
    txn = transaction_id(metadata, None, _ref(charge.payment_intent), charge.id)
    return _Draft(
        name=REFUND,
        commerce=Commerce(transaction_id=txn, value=value, currency=currency),
        context=context,
        identity=_identity(
            charge.billing_details, charge.receipt_email, context.client.user_id
        ),
        params=_base_params(charge.id, charge.customer),
    )


def _draft(envelope: StripeEnvelope, config: StripeConfig) -> _Draft | Ignored:
    raw = envelope.data.object
    kind = envelope.type
    if kind in (
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
    ):
        return _checkout(raw)
    if kind == "payment_intent.succeeded":
        return _payment_intent(raw)
    if kind == "invoice.paid":
        return _invoice(raw, config)
    if kind == "customer.subscription.created":
        return _subscription(raw)
    if kind == "charge.refunded":
        return _refund(raw)
    return Ignored("unhandled_type")


def parse_envelope(data: Any) -> StripeEnvelope:
    """Validate the Stripe event envelope.

    Args:
        data: the parsed JSON body.

    Returns:
        The envelope.

    Raises:
        InvalidPayload: not a Stripe event object (400, with field paths).
    """
    try:
        return StripeEnvelope.model_validate(data)
    except ValidationError as exc:
        raise InvalidPayload(
            "not a Stripe event", error_fields(exc.errors()), "invalid_event"
        ) from None


def map_event(
    envelope: StripeEnvelope, config: StripeConfig, received_at: datetime
) -> Event | Ignored:
    """Map one verified Stripe event to a canonical event.

    Args:
        envelope: the validated event.
        config: the ``[sources.stripe]`` section.
        received_at: when the webhook arrived.

    Returns:
        The canonical event (without its dedup key; the caller applies the
        rule), or :class:`Ignored` with the reason.

    Raises:
        InvalidPayload: the object does not have the documented shape.
    """
    if not envelope.livemode and config.test_mode == "drop":
        return Ignored("test_mode")
    try:
        draft = _draft(envelope, config)
        if isinstance(draft, Ignored):
            return draft
        return Event(
            event_id=envelope.id,
            name=draft.name,
            source="stripe",
            occurred_at=datetime.fromtimestamp(envelope.created, UTC),
            received_at=received_at,
            client=draft.context.client,
            identity=draft.identity,
            click_ids=draft.context.click_ids,
            consent=draft.context.consent,
            commerce=draft.commerce,
            params={
                "stripe_event_type": envelope.type,
                **draft.params,
                **draft.context.params,
            },
            debug=not envelope.livemode and config.test_mode == "debug",
        )
    except ValidationError as exc:
        fields = error_fields(exc.errors(), "data.object")
        raise InvalidPayload(
            "unexpected Stripe object", fields, "invalid_event"
        ) from None
    except InvalidPayload as exc:
        for field in exc.fields:
            field["path"] = f"data.object.{field['path']}"
        raise
