"""Identity keys, identity records and fill-missing merges."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal

from truecount.core.stitch import (
    extract_context,
    fill_missing,
    identity_doc_id,
    identity_keys,
    identity_record,
    merge_identities,
)
from truecount.models.event import (
    ClickIds,
    Client,
    Commerce,
    Consent,
    Event,
    Identity,
    Lead,
    Page,
)

NOW = datetime(2026, 4, 5, 12, 0, tzinfo=UTC)
EMAIL = "a" * 64


def _event(**kw: object) -> Event:
    base: dict[str, object] = {
        "event_id": "e-1",
        "name": "purchase",
        "source": "ga4",
        "occurred_at": NOW,
        "received_at": NOW,
    }
    base.update(kw)
    return Event.model_validate(base)


def test_context_is_flat_and_holds_only_set_fields() -> None:
    """Context keeps set fields under flat names; unknown consent is left out."""
    event = _event(
        client=Client(client_id="1.2", ip="203.0.113.9"),
        page=Page(location="https://shop.example/checkout"),
        click_ids=ClickIds(gclid="G-1"),
        consent=Consent(ad_storage="granted"),
    )

    assert extract_context(event) == {
        "client_id": "1.2",
        "ip": "203.0.113.9",
        "page_location": "https://shop.example/checkout",
        "gclid": "G-1",
        "consent_ad_storage": "granted",
    }


def test_fill_missing_never_overwrites_what_the_event_carries() -> None:
    """Only absent fields are filled; the event's own values stay."""
    event = _event(source="stripe", client=Client(ip="198.51.100.1"))

    filled, names = fill_missing(
        event,
        {"ip": "203.0.113.9", "client_id": "1.2", "fbc": "fb.1.x", "gclid": "G-1"},
    )

    assert filled.client.ip == "198.51.100.1"
    assert filled.client.client_id == "1.2"
    assert filled.click_ids.fbc == "fb.1.x"
    assert filled.click_ids.gclid == "G-1"
    assert names == ["client_id", "fbc", "gclid"]


def test_fill_missing_creates_a_page_and_fills_unknown_consent() -> None:
    """A backend event without a page gets one; unknown consent is filled."""
    event = _event(source="stripe", consent=Consent(ad_storage="denied"))

    filled, names = fill_missing(
        event,
        {
            "page_location": "https://shop.example/",
            "consent_ad_storage": "granted",
            "consent_ad_user_data": "granted",
        },
    )

    assert filled.page is not None
    assert filled.page.location == "https://shop.example/"
    assert filled.consent.ad_storage == "denied"
    assert filled.consent.ad_user_data == "granted"
    assert names == ["consent_ad_user_data", "page_location"]


def test_fill_missing_ignores_values_that_do_not_validate() -> None:
    """Stale data of the wrong shape is skipped, the rest is used."""
    event = _event(source="stripe")

    filled, names = fill_missing(event, {"email_sha256": "not-a-hash", "gclid": "G"})

    assert filled.identity.email_sha256 is None
    assert names == ["gclid"]


def test_identity_keys_come_most_specific_first() -> None:
    """transaction_id, lead_id, user_id, email_sha256, client_id, when present."""
    event = _event(
        client=Client(client_id="1.2", user_id="u-9"),
        identity=Identity(email_sha256=EMAIL),
        commerce=Commerce(transaction_id="T-1", value=Decimal("10"), currency="EUR"),
        lead=Lead(lead_id="L-7"),
    )

    assert identity_keys(event) == [
        ("transaction_id", "T-1"),
        ("lead_id", "L-7"),
        ("user_id", "u-9"),
        ("email_sha256", EMAIL),
        ("client_id", "1.2"),
    ]


def test_identity_doc_id_is_sha256_of_kind_and_value() -> None:
    """Document ids never hold the raw value."""
    expected = hashlib.sha256(b"client_id:1.2").hexdigest()

    assert identity_doc_id("client_id", "1.2") == expected


def test_identity_record_holds_click_ids_and_ids() -> None:
    """A browser event with a click id stores it with its ids, not IP or page."""
    event = _event(
        client=Client(client_id="1.2", session_id="s-3", ip="203.0.113.9"),
        click_ids=ClickIds(gclid="G-1", fbp="fb.1.p"),
        identity=Identity(email_sha256=EMAIL),
        page=Page(location="https://x.example/"),
    )

    assert identity_record(event) == {
        "gclid": "G-1",
        "fbp": "fb.1.p",
        "client_id": "1.2",
        "session_id": "s-3",
        "email_sha256": EMAIL,
    }


def test_identity_record_is_empty_when_nothing_would_help_later() -> None:
    """Only a client and session id: no write is worth its cost."""
    event = _event(client=Client(client_id="1.2", session_id="s-3"))

    assert identity_record(event) == {}


def test_merge_identities_prefers_the_earlier_key() -> None:
    """A field found under two keys comes from the more specific one."""
    values, origin = merge_identities(
        [
            ("lead_id", {"gclid": "G-lead"}),
            ("email_sha256", {"gclid": "G-email", "fbc": "fb.1.c"}),
        ]
    )

    assert values == {"gclid": "G-lead", "fbc": "fb.1.c"}
    assert origin == {"gclid": "lead_id", "fbc": "email_sha256"}
