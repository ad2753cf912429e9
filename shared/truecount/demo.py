"""Demo traffic for the local stack (``truecount send``) and the end-to-end tests.

It covers the three architectures for one shopper, Jane:

1. a GA4 batched hit from gtag: a ``page_view`` that landed with a gclid, then a
   ``purchase`` of order ``T-1001`` with items;
2. a Data Client ``generate_lead`` carrying her email (hashed by ingest);
3. a signed Stripe ``checkout.session.completed`` for the same order, with the
   browser context in its metadata;
4. a signed HubSpot ``deal.propertyChange`` to ``closedwon`` for her deal. The
   local stack's capture sink answers the HubSpot CRM lookups.

Fanout then counts the order once (the backend is the truth), and the deal won
reaches Google Ads with the gclid the browser captured.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from truecount.devstack import DEV_SECRETS
from truecount.webhooks.signatures import (
    crm_signature_header,
    hubspot_v3_signature,
    stripe_signature_header,
)

MEASUREMENT_ID = "G-DEV0000001"
CLIENT_ID = "1234567890.1700000000"
SESSION_ID = "1700000000"
GCLID = "Cj0KCQiA-demo-gclid"
FBCLID = "IwAR-demo-fbclid"
ORDER_ID = "T-1001"
EMAIL = "jane.doe@example.com"
CONTACT_ID = "501"
DEAL_ID = "9876"
PORTAL_ID = 62515
PLATFORM_PREFIXES = ("/ga4", "/meta", "/google-ads", "/linkedin", "/tiktok", "/sink")


@dataclass(frozen=True)
class Shopper:
    """Who the demo traffic is about; tests vary it to keep scenarios apart."""

    client_id: str = CLIENT_ID
    session_id: str = SESSION_ID
    gclid: str = GCLID
    order_id: str = ORDER_ID
    email: str = EMAIL
    contact_id: str = CONTACT_ID
    deal_id: str = DEAL_ID
    consent: str = "G111"
    #: Consent Mode v2 gcd: all four types granted (as gtag sends after "accept")
    gcd: str = "13t3t3t3t5l1"


def ga4_batch(s: Shopper, page_load: str = "1712345678901") -> tuple[str, bytes]:
    """A gtag batch: shared params in the URL, one event per body line."""
    landing = f"https://shop.example/?gclid={s.gclid}&fbclid={FBCLID}"
    query = urlencode(
        {
            "v": "2",
            "tid": MEASUREMENT_ID,
            "gtm": "45je4a20v9",
            "_p": page_load,
            "cid": s.client_id,
            "sid": s.session_id,
            "sct": "1",
            "seg": "1",
            "ul": "en-us",
            "sr": "1920x1080",
            "gcs": s.consent,
            "gcd": s.gcd,
            "dl": landing,
            "dt": "Shop",
        }
    )
    lines = [
        "en=page_view&_s=1&_ss=1&_fv=1&_et=5",
        f"en=purchase&_s=2&_c=1&cu=EUR&ep.transaction_id={s.order_id}&epn.value=31.5"
        "&epn.tax=5.03&pr1=idSKU123~nmBlue%20Shirt~pr10.5~qt2"
        "&pr2=idSKU456~nmSocks~pr10.5~qt1~k0color~v0red",
    ]
    return query, "\n".join(lines).encode()


def data_client_lead(s: Shopper) -> dict[str, Any]:
    """A Data Client event carrying the shopper's email and click ids."""
    return {
        "event_name": "generate_lead",
        "event_id": f"lead-{s.client_id}",
        "client_id": s.client_id,
        "page_location": f"https://shop.example/contact?gclid={s.gclid}",
        "user_data": {"email_address": s.email},
        "consent_state": {
            "ad_storage": "granted",
            "analytics_storage": "granted",
            "ad_user_data": "granted",
            "ad_personalization": "granted",
        },
    }


def stripe_checkout(s: Shopper, created: int, event_id: str | None = None) -> bytes:
    """A Stripe ``checkout.session.completed`` event for the shopper's order."""
    event = {
        "id": event_id or f"evt_demo_{s.order_id}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "livemode": True,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": f"cs_live_{s.order_id}",
                "object": "checkout.session",
                "mode": "payment",
                "payment_status": "paid",
                "amount_total": 3150,
                "currency": "eur",
                "client_reference_id": s.client_id,
                "customer_details": {"email": s.email, "name": "Jane Doe"},
                "metadata": {
                    "order_id": s.order_id,
                    "client_id": s.client_id,
                    "session_id": s.session_id,
                },
                "payment_intent": f"pi_{s.order_id}",
            }
        },
    }
    return json.dumps(event).encode()


def hubspot_deal_won(s: Shopper, occurred_ms: int, event_id: int = 100) -> bytes:
    """A HubSpot webhook batch: the shopper's deal moved to ``closedwon``."""
    return json.dumps(
        [
            {
                "eventId": event_id,
                "subscriptionId": 2001,
                "portalId": PORTAL_ID,
                "appId": 54321,
                "occurredAt": occurred_ms,
                "subscriptionType": "deal.propertyChange",
                "attemptNumber": 0,
                "objectId": int(s.deal_id),
                "propertyName": "dealstage",
                "propertyValue": "closedwon",
                "changeSource": "CRM_UI",
            }
        ]
    ).encode()


def hubspot_api_answers(s: Shopper) -> dict[str, Any]:
    """What the fake HubSpot CRM API answers, by path under ``/hubspot-api``:
    the webhook's three batch reads (deals, their contacts, the contacts)."""
    return {
        "/hubspot-api/crm/v3/objects/deals/batch/read": {
            "status": "COMPLETE",
            "results": [
                {
                    "id": s.deal_id,
                    "properties": {
                        "amount": "1500",
                        "deal_currency_code": "EUR",
                        "dealstage": "closedwon",
                    },
                }
            ],
        },
        "/hubspot-api/crm/v4/associations/deals/contacts/batch/read": {
            "status": "COMPLETE",
            "results": [
                {
                    "from": {"id": s.deal_id},
                    "to": [{"toObjectId": int(s.contact_id), "associationTypes": []}],
                }
            ],
        },
        "/hubspot-api/crm/v3/objects/contacts/batch/read": {
            "status": "COMPLETE",
            "results": [
                {
                    "id": s.contact_id,
                    "properties": {
                        "email": s.email,
                        "firstname": "Jane",
                        "lastname": "Doe",
                    },
                }
            ],
        },
    }


class DemoClient:
    """Sends demo traffic to a running stack, signed like the real providers.

    Args:
        ingest: ingest base URL.
        webhook: webhook base URL.
        http: an httpx client (a default one with a 30 s timeout is created).
    """

    def __init__(self, ingest: str, webhook: str, http: httpx.Client | None = None):
        self.ingest = ingest.rstrip("/")
        self.webhook = webhook.rstrip("/")
        self.http = http or httpx.Client(timeout=30.0)

    def ga4(self, s: Shopper) -> httpx.Response:
        """POST the GA4 batch as gtag's beacon does."""
        query, body = ga4_batch(s)
        headers = {
            "Content-Type": "text/plain;charset=UTF-8",
            "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Demo",
            "X-Forwarded-For": "203.0.113.7",
            "Cookie": "_fbp=fb.1.1712000000000.1116446470",
        }
        return self.http.post(
            f"{self.ingest}/g/collect?{query}", content=body, headers=headers
        )

    def data(self, event: dict[str, Any]) -> httpx.Response:
        """POST a Data Client event."""
        return self.http.post(f"{self.ingest}/data", json=event)

    def stripe(self, body: bytes, secret: str | None = None) -> httpx.Response:
        """POST a Stripe event with a valid ``Stripe-Signature``."""
        secret = secret or DEV_SECRETS["TRUECOUNT_STRIPE_SIGNING_SECRETS"]
        header = stripe_signature_header(body, secret, int(time.time()))
        headers = {"Stripe-Signature": header, "Content-Type": "application/json"}
        return self.http.post(f"{self.webhook}/stripe", content=body, headers=headers)

    def hubspot(self, body: bytes, secret: str | None = None) -> httpx.Response:
        """POST a HubSpot batch with a valid v3 signature."""
        secret = secret or DEV_SECRETS["TRUECOUNT_HUBSPOT_CLIENT_SECRET"]
        url = f"{self.webhook}/hubspot"
        ts = str(int(time.time() * 1000))
        sig = hubspot_v3_signature(secret, "POST", url, body, ts)
        headers = {
            "X-HubSpot-Signature-v3": sig,
            "X-HubSpot-Request-Timestamp": ts,
            "Content-Type": "application/json",
        }
        return self.http.post(url, content=body, headers=headers)

    def crm(
        self, event: dict[str, Any], key: str = "dev:crm-dev-secret"
    ) -> httpx.Response:
        """POST an event in Truecount's signed CRM contract."""
        key_id, secret = key.split(":", 1)
        body = json.dumps(event).encode()
        headers = {
            "Truecount-Signature": crm_signature_header(body, secret, int(time.time())),
            "Truecount-Key-Id": key_id,
            "Content-Type": "application/json",
        }
        return self.http.post(f"{self.webhook}/crm", content=body, headers=headers)


def script_hubspot_api(capture: str, s: Shopper, http: httpx.Client) -> None:
    """Make the capture sink answer the HubSpot CRM lookups for the shopper."""
    for path, body in hubspot_api_answers(s).items():
        payload = {"prefix": path, "statuses": [], "body": body}
        http.post(f"{capture.rstrip('/')}/_script", json=payload).raise_for_status()


def _event_of(path: str, body: Any) -> str:
    """The event a platform request carries, in that platform's own words."""
    if not isinstance(body, dict):
        return "?"
    if path.startswith("/ga4"):
        return ",".join(e.get("name", "?") for e in body.get("events", []))
    if path.startswith(("/meta", "/tiktok")):
        rows = body.get("data", [])
        return ",".join(str(r.get("event_name") or r.get("event")) for r in rows)
    if path.startswith("/google-ads"):
        rows = body.get("conversions", [])
        actions = (r.get("conversionAction", "?").rsplit("/", 1)[-1] for r in rows)
        return ",".join(f"action {a}" for a in actions)
    if path.startswith("/linkedin"):
        return "rule " + str(body.get("conversion", "?")).rsplit(":", 1)[-1]
    return f"{body.get('name')}({body.get('source')})"


def summarize(requests: list[dict[str, Any]]) -> str:
    """One line per platform: how many requests, and the events they carried."""
    seen: dict[str, list[str]] = {p: [] for p in PLATFORM_PREFIXES}
    for req in requests:
        prefix = next((p for p in PLATFORM_PREFIXES if req["path"].startswith(p)), None)
        if prefix and int(req.get("status", 200)) < 300:
            seen[prefix].append(_event_of(req["path"], req.get("body")))
    return "\n".join(
        f"  {p.strip('/'):<11} {len(events)} request(s): {', '.join(events)}"
        for p, events in seen.items()
    )


def run_demo(ingest: str, webhook: str, capture: str, wait: float) -> int:
    """Send the demo traffic and print what each destination received.

    Returns:
        A process exit code: 0 when every request was accepted.
    """
    shopper = Shopper()
    http = httpx.Client(timeout=30.0)
    client = DemoClient(ingest, webhook, http)
    script_hubspot_api(capture, shopper, http)
    now = int(time.time())
    steps: list[tuple[str, Callable[[], httpx.Response]]] = [
        ("GA4 batch: page_view (gclid) + purchase T-1001", lambda: client.ga4(shopper)),
        (
            "Data Client generate_lead with email",
            lambda: client.data(data_client_lead(shopper)),
        ),
        (
            "Stripe checkout.session.completed T-1001",
            lambda: client.stripe(stripe_checkout(shopper, now)),
        ),
        (
            "HubSpot deal.propertyChange -> closedwon",
            lambda: client.hubspot(hubspot_deal_won(shopper, now * 1000)),
        ),
    ]
    ok = True
    for label, step in steps:
        resp = step()
        ok &= resp.status_code < 300
        print(f"{resp.status_code}  {label}")
    time.sleep(min(wait, 3.0))
    deadline = time.monotonic() + wait
    seen = -1
    while time.monotonic() < deadline:
        captured = http.get(f"{capture.rstrip('/')}/_captured").json()["requests"]
        if len(captured) == seen:
            break
        seen = len(captured)
        time.sleep(2.0)
    platform = [
        r for r in captured if not r["path"].startswith(("/hubspot-api", "/oauth"))
    ]
    print("\nWhat each destination received:")
    print(summarize(platform))
    print(f"\nFull requests: {capture.rstrip('/')}/_ui")
    return 0 if ok else 1
