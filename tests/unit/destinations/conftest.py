"""Shared fixtures for destination tests: canonical events, configs, goldens."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from truecount.config import DestinationConfig
from truecount.core.pii import RawIdentity, hash_identity
from truecount.models.event import (
    ClickIds,
    Client,
    Commerce,
    Consent,
    Event,
    Item,
    Lead,
    Page,
)
from truecount.ports import OutboundRequest, Skip

GOLDEN_DIR = Path(__file__).parent / "golden"
NOW = datetime(2026, 4, 5, 15, 0, 0, tzinfo=UTC)
OCCURRED = datetime(2026, 4, 5, 14, 30, 0, 123456, tzinfo=UTC)

ENV = {
    "TRUECOUNT_GA4_API_SECRET": "ga4-secret-value",
    "TRUECOUNT_META_ACCESS_TOKEN": "meta-token-value",
    "TRUECOUNT_GOOGLE_ADS_DEVELOPER_TOKEN": "dev-token-value",
    "TRUECOUNT_GOOGLE_ADS_CLIENT_ID": "client-id-value",
    "TRUECOUNT_GOOGLE_ADS_CLIENT_SECRET": "client-secret-value",
    "TRUECOUNT_GOOGLE_ADS_REFRESH_TOKEN": "refresh-token-value",
    "TRUECOUNT_LINKEDIN_TOKEN": "linkedin-token-value",
    "TRUECOUNT_TIKTOK_ACCESS_TOKEN": "tiktok-token-value",
    "TRUECOUNT_HTTP_SINK_SECRET": "sink-secret-value",
}

OPTIONS: dict[str, dict[str, Any]] = {
    "ga4": {"measurement_id": "G-ABC1234567"},
    "meta": {"pixel_id": "1234567890", "test_event_code": "TEST12345"},
    "google_ads": {
        "customer_id": "123-456-7890",
        "login_customer_id": "9876543210",
        "conversion_actions": {
            "purchase": "987654",
            "generate_lead": "customers/1234567890/conversionActions/111",
        },
    },
    "linkedin": {
        "conversions": {
            "purchase": "123456",
            "generate_lead": "urn:lla:llaPartnerConversion:654321",
        }
    },
    "tiktok": {"pixel_code": "C1ABCDEF23GHIJ"},
    "http": {"endpoint": "https://sink.example/truecount"},
}


def dest_config(dest_type: str, **overrides: Any) -> DestinationConfig:
    """A destination config with the test options of its type, plus overrides."""
    return DestinationConfig.model_validate(
        {"type": dest_type, **OPTIONS[dest_type], **overrides}
    )


def _update(event: Event, updates: dict[str, Any]) -> Event:
    """A validated copy of ``event`` with some fields replaced."""
    if not updates:
        return event
    return Event.model_validate({**event.model_dump(), **updates})


def full_identity() -> Any:
    """Every identity field, hashed by the real PII module."""
    return hash_identity(
        RawIdentity(
            email="John_Smith@gmail.com",
            phone="+1 (650) 555-1212",
            first_name="John",
            last_name="Smith",
            city="San Francisco",
            region="CA",
            postal_code="94103",
            country="US",
            external_id="cust-42",
        )
    )


def purchase_event(**updates: Any) -> Event:
    """A fully populated backend purchase merged with its browser context."""
    event = Event(
        event_id="evt_stripe_1",
        name="purchase",
        source="stripe",
        occurred_at=OCCURRED,
        received_at=OCCURRED + timedelta(seconds=2),
        dedup_key="purchase:T-1001",
        client=Client(
            client_id="1234567890.1700000000",
            user_id="u-42",
            session_id="1775397000",
            session_number=3,
            ip="203.0.113.7",
            user_agent="Mozilla/5.0 (X11; Linux x86_64)",
            language="en-us",
        ),
        page=Page(
            location="https://shop.example/thanks",
            referrer="https://shop.example/cart",
            title="Thank you",
        ),
        identity=full_identity(),
        click_ids=ClickIds(
            gclid="Cj0KCQjw-gclid",
            gbraid="gbraid-1",
            fbc="fb.1.1775390000000.IwAR2F4abc",
            fbp="fb.1.1775000000000.1116446470",
            ttclid="E.C.P.abc",
            ttp="2abcDEF",
            li_fat_id="AQH5a6b7c8d9e0f",
        ),
        consent=Consent(
            ad_storage="granted",
            analytics_storage="granted",
            ad_user_data="granted",
            ad_personalization="granted",
        ),
        commerce=Commerce(
            transaction_id="T-1001",
            value=Decimal("21.00"),
            currency="EUR",
            tax=Decimal("3.35"),
            shipping=Decimal("0.00"),
            coupon="SPRING",
            items=[
                Item(
                    item_id="SKU123",
                    item_name="Blue Shirt",
                    price=Decimal("10.50"),
                    quantity=2,
                    item_brand="Acme",
                    item_category="Shirts",
                    params={"color": "blue"},
                )
            ],
        ),
        params={"truecount_browser_event_id": "ord-1001", "payment_type": "card"},
        user_properties={"plan": "pro"},
    )
    return _update(event, updates)


def lead_event(**updates: Any) -> Event:
    """A fully populated CRM lead with a stitched gbraid and browser context."""
    event = Event(
        event_id="hubspot-evt-9",
        name="generate_lead",
        source="hubspot",
        occurred_at=OCCURRED,
        received_at=OCCURRED + timedelta(seconds=5),
        dedup_key="lead:L-77",
        client=Client(
            client_id="555.666",
            session_id="1775396000",
            ip="2001:db8::1",
            user_agent="Mozilla/5.0 (iPhone)",
        ),
        page=Page(location="https://b2b.example/demo"),
        identity=full_identity().model_copy(update={"lead_id": "L-77"}),
        click_ids=ClickIds(gbraid="gbraid-7", wbraid="wbraid-7", li_fat_id="li-fat-7"),
        consent=Consent(
            ad_storage="granted",
            analytics_storage="granted",
            ad_user_data="granted",
            ad_personalization="denied",
        ),
        lead=Lead(lead_id="L-77", stage="new", value=Decimal("50"), currency="USD"),
        params={"form_id": "demo-request"},
    )
    return _update(event, updates)


def minimal_event(**updates: Any) -> Event:
    """A purchase with only an order id, a client id and a hashed email."""
    event = Event(
        event_id="evt-min-1",
        name="purchase",
        source="crm",
        occurred_at=OCCURRED,
        received_at=OCCURRED,
        dedup_key="purchase:T-2",
        client=Client(client_id="777.888"),
        identity=hash_identity(RawIdentity(email="min@example.com")),
        commerce=Commerce(transaction_id="T-2"),
    )
    return _update(event, updates)


def bare_event(name: str = "purchase") -> Event:
    """An event with no identifiers at all."""
    return Event(
        event_id="evt-bare",
        name=name,
        source="crm",
        occurred_at=OCCURRED,
        received_at=OCCURRED,
    )


def describe(result: OutboundRequest | Skip) -> dict[str, Any]:
    """What a golden file holds: the request minus secret values."""
    if isinstance(result, Skip):
        return {"skip": result.reason}
    out = result.describe()
    out["secret_header_names"] = sorted(result.secret_headers)
    out["secret_query_names"] = sorted(result.secret_query)
    if result.notes:
        out["notes"] = list(result.notes)
    return out


@pytest.fixture
def golden() -> Callable[[str, Any], None]:
    """Compare data with ``golden/<name>.json``; rewrite it when UPDATE_GOLDEN=1."""

    def check(name: str, data: Any) -> None:
        dumped = json.dumps(data)
        assert not [v for v in ENV.values() if v in dumped], "a secret leaked"
        path = GOLDEN_DIR / f"{name}.json"
        if os.environ.get("UPDATE_GOLDEN") == "1":
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        assert path.exists(), f"missing {path}; run with UPDATE_GOLDEN=1"
        assert json.loads(path.read_text()) == data

    return check
