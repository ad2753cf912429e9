"""Canonical events and requests the benchmarks send (development values only)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

from truecount.models.event import Event

#: The five platform destinations of the dev config (``[destinations.sink]``
#: is disabled in the fan-out benchmark).
PLATFORMS = ("/ga4", "/meta", "/google-ads", "/linkedin", "/tiktok")
CRM_KEY_ID = "dev"
CRM_SECRET = "crm-dev-secret"  # noqa: S105 - DEV_SECRETS value of the local stack


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def purchase(token: str, source: str = "stripe", **overrides: Any) -> Event:
    """A purchase that every platform of the dev config accepts.

    ``token`` appears in the event id and the transaction id, so a payload can
    be attributed to its event whatever the platform's format.
    """
    now = _now()
    email = f"buyer-{token}@example.com"
    data: dict[str, Any] = {
        "event_id": f"evt-{token}",
        "name": "purchase",
        "source": source,
        "occurred_at": now,
        "received_at": now,
        "client": {
            "client_id": "555.1700000000",
            "session_id": "1700000000",
            "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0 (bench)",
        },
        "page": {"location": "https://shop.example/checkout"},
        "identity": {
            "email_sha256": _sha(email),
            "email_sha256_google": _sha(email),
            "phone_sha256": _sha("15551234567"),
            "phone_sha256_e164": _sha("+15551234567"),
            "external_id": _sha(f"cus-{token}"),
        },
        "click_ids": {
            "gclid": f"gclid-{token}",
            "fbc": f"fb.1.1700000000000.{token}",
            "fbp": "fb.1.1700000000000.42",
            "ttclid": f"tt-{token}",
            "li_fat_id": f"li-{token}",
        },
        "consent": {
            "ad_storage": "granted",
            "analytics_storage": "granted",
            "ad_user_data": "granted",
            "ad_personalization": "granted",
        },
        "commerce": {
            "transaction_id": f"T-{token}",
            "value": "42.50",
            "currency": "EUR",
            "items": [{"item_id": "SKU-1", "item_name": "Shirt", "price": "42.50"}],
        },
    }
    data.update(overrides)
    if "dedup_key" not in data and data["name"] == "purchase":
        data["dedup_key"] = f"purchase:T-{token}"
    return Event.model_validate(data)


def page_view(token: str, with_click_ids: bool = False) -> Event:
    """A browser funnel event (GA4 client), optionally with click ids."""
    now = _now()
    data: dict[str, Any] = {
        "event_id": f"pv-{token}",
        "name": "page_view",
        "source": "ga4",
        "occurred_at": now,
        "received_at": now,
        "client": {"client_id": "555.1700000000", "session_id": "1700000000"},
        "page": {"location": f"https://shop.example/p/{token}"},
        "consent": {"analytics_storage": "granted", "ad_storage": "granted"},
    }
    if with_click_ids:
        data["click_ids"] = {"gclid": f"gclid-{token}", "fbc": f"fb.1.1.{token}"}
    return Event.model_validate(data)


def lead(token: str, name: str, source: str, email: str) -> Event:
    """A lead event (browser ``generate_lead`` or CRM ``close_convert_lead``)."""
    now = _now()
    data: dict[str, Any] = {
        "event_id": f"{name}-{token}",
        "name": name,
        "source": source,
        "occurred_at": now,
        "received_at": now,
        "identity": {"email_sha256": _sha(email), "lead_id": f"L-{token}"},
        "lead": {"lead_id": f"L-{token}", "value": "100", "currency": "EUR"},
        "consent": {
            "ad_storage": "granted",
            "analytics_storage": "granted",
            "ad_user_data": "granted",
            "ad_personalization": "granted",
        },
    }
    if source != "crm":
        data["client"] = {"client_id": f"{token}.1700000000", "session_id": "17"}
        data["click_ids"] = {"gclid": f"gclid-{token}", "li_fat_id": f"li-{token}"}
    return Event.model_validate(data)


def push_envelope(event: Event, subscription: str, message_id: str) -> dict[str, Any]:
    """The body a Pub/Sub push subscription POSTs for ``event``."""
    return {
        "message": {
            "data": base64.b64encode(event.to_json_bytes()).decode(),
            "attributes": event.pubsub_attributes(),
            "messageId": message_id,
            "publishTime": _now(),
        },
        "subscription": subscription,
    }


def crm_request(token: str) -> tuple[bytes, dict[str, str]]:
    """A signed ``POST /crm`` body and its headers (dev key)."""
    from truecount.webhooks.signatures import crm_signature_header

    body = json.dumps(
        {
            "name": "qualify_lead",
            "event_id": f"crm-{token}",
            "occurred_at": _now(),
            "lead": {"lead_id": f"L-{token}", "stage": "mql"},
            "identity": {"email": f"lead-{token}@example.com"},
            "consent": {"ad_user_data": "granted"},
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "Truecount-Key-Id": CRM_KEY_ID,
        "Truecount-Signature": crm_signature_header(body, CRM_SECRET, int(time.time())),
    }
    return body, headers
