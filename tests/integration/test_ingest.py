"""``ingest`` against the real Pub/Sub emulator: what lands on the topic.

The function runs in-process (functions-framework test client) with its real
Pub/Sub publisher; only the clock is fixed, through the documented seam
``truecount.apps.ingest.override(clock=...)``. Each test compares the pulled
messages with the expected canonical events, field by field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import functions_framework
import pytest

from truecount.apps import ingest as ingest_app
from truecount.core.pii import sha256_hex
from truecount.models.event import Event

SOURCE = str(Path(__file__).resolve().parents[2] / "functions" / "ingest" / "main.py")
NOW = datetime(2024, 4, 5, 12, 0, tzinfo=UTC)
TOPIC = "truecount-events"
SECRET = "mp-secret-1"
EMAIL_SHA = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
UNKNOWN = {
    "ad_storage": "unknown",
    "analytics_storage": "unknown",
    "ad_user_data": "unknown",
    "ad_personalization": "unknown",
}


@pytest.fixture
def topic_sub(pubsub: Any) -> str:
    """The events topic and a pull subscription on it."""
    pubsub.create_topic(TOPIC)
    return str(pubsub.subscribe(TOPIC))


@pytest.fixture
def client(project_id: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The ingest function with the real publisher and a fixed clock."""
    monkeypatch.setenv("TRUECOUNT_MP_API_SECRETS", SECRET)
    app = functions_framework.create_app(target="ingest", source=SOURCE)
    with ingest_app.override(clock=lambda: NOW):
        yield app.test_client()


def pulled(
    pubsub: Any, sub: str, expect: int
) -> list[tuple[dict[str, Any], dict[str, str]]]:
    messages = pubsub.pull(sub, expect=expect, timeout=20.0)
    assert len(messages) == expect
    out = [(json.loads(m.data), dict(m.attributes)) for m in messages]
    return sorted(out, key=lambda pair: pair[0]["event_id"])


def expected(**fields: Any) -> dict[str, Any]:
    """A canonical event as it appears on the wire (nulls left out)."""
    return Event.model_validate(fields).model_dump(mode="json", exclude_none=True)


def test_ga4_hits_land_on_the_topic_as_canonical_events(
    client: Any, pubsub: Any, topic_sub: str
) -> None:
    """A GA4 purchase and a batched page_view arrive as the expected events."""
    query = (
        "v=2&tid=G-ABC1234567&_p=1712345678901&cid=1234567890.1700000000&sid=1712345600"
        "&sct=3&ul=en-us&dl=https%3A%2F%2Fshop.example%2Fthanks%3Fgclid%3DG-CLICK"
        "&dt=Thanks&gcs=G111&gcd=13t3t3t3t5l1"
    )
    body = (
        "en=page_view&_s=1&_ss=1\n"
        "en=purchase&_s=2&cu=EUR&ep.transaction_id=T-1001&epn.value=21"
        "&pr1=idSKU123~nmBlue%20Shirt~pr10.5~qt2~k0color~v0blue&ep.email=John_Smith%40gmail.com"
    )
    resp = client.post(
        f"/g/collect?{query}",
        data=body,
        headers={"User-Agent": "UA/1", "X-Forwarded-For": "203.0.113.9"},
        content_type="text/plain;charset=UTF-8",
    )
    assert resp.status_code == 204

    def ga4_id(seq: str, name: str, index: str) -> str:
        parts = f"G-ABC1234567|1234567890.1700000000|1712345678901|{seq}|{name}|{index}"
        return "ga4-" + sha256_hex(parts)[:32]

    client_fields = {
        "client_id": "1234567890.1700000000",
        "session_id": "1712345600",
        "session_number": 3,
        "ip": "203.0.113.9",
        "user_agent": "UA/1",
        "language": "en-us",
    }
    common = {
        "source": "ga4",
        "occurred_at": NOW,
        "received_at": NOW,
        "client": client_fields,
        "page": {
            "location": "https://shop.example/thanks?gclid=G-CLICK",
            "title": "Thanks",
        },
        "click_ids": {"gclid": "G-CLICK"},
        "consent": {
            "ad_storage": "granted",
            "analytics_storage": "granted",
            "ad_user_data": "granted",
            "ad_personalization": "granted",
            "gcs": "G111",
            "gcd": "13t3t3t3t5l1",
        },
    }
    page_view = expected(
        event_id=ga4_id("1", "page_view", "0"),
        name="page_view",
        params={"session_start": 1},
        **common,
    )
    purchase = expected(
        event_id=ga4_id("2", "purchase", "1"),
        name="purchase",
        dedup_key="purchase:T-1001",
        identity={"email_sha256": EMAIL_SHA, "email_sha256_google": EMAIL_SHA},
        commerce={
            "transaction_id": "T-1001",
            "value": "21",
            "currency": "EUR",
            "items": [
                {
                    "item_id": "SKU123",
                    "item_name": "Blue Shirt",
                    "price": "10.5",
                    "quantity": 2,
                    "params": {"color": "blue"},
                }
            ],
        },
        **common,
    )
    messages = pulled(pubsub, topic_sub, 2)
    by_name = {data["name"]: (data, attrs) for data, attrs in messages}
    for want in (page_view, purchase):
        data, attrs = by_name[want["name"]]
        assert data == want
        assert attrs == {
            "event_id": want["event_id"],
            "dedup_key": want["dedup_key"],
            "name": want["name"],
            "source": "ga4",
            "schema_version": "1",
        }


def test_data_client_events_land_on_the_topic(
    client: Any, pubsub: Any, topic_sub: str
) -> None:
    """A Data Tag purchase arrives hashed, keyed and typed."""
    payload = {
        "event_name": "purchase",
        "event_id": "data-evt-1",
        "client_id": "111.222",
        "page_location": "https://shop.example/done",
        "value": "30.00",
        "currency": "usd",
        "transaction_id": "T-2002",
        "items": [{"item_id": "A", "price": "15.00", "quantity": 2}],
        "user_data": {"email_address": "John_Smith@gmail.com"},
        "consent_state": {"ad_storage": "granted", "ad_user_data": "denied"},
        "common_cookie": {"_fbp": "fb.1.1596403881668.1116446470"},
        "page_hostname": "shop.example",
    }
    resp = client.post(
        "/data",
        json=payload,
        headers={"X-Forwarded-For": "198.51.100.4", "User-Agent": "UA/2"},
    )
    assert resp.status_code == 200
    assert resp.get_json() == {"accepted": ["data-evt-1"]}
    want = expected(
        event_id="data-evt-1",
        name="purchase",
        source="data",
        occurred_at=NOW,
        received_at=NOW,
        dedup_key="purchase:T-2002",
        client={"client_id": "111.222", "ip": "198.51.100.4", "user_agent": "UA/2"},
        page={"location": "https://shop.example/done"},
        identity={"email_sha256": EMAIL_SHA, "email_sha256_google": EMAIL_SHA},
        click_ids={"fbp": "fb.1.1596403881668.1116446470"},
        consent={**UNKNOWN, "ad_storage": "granted", "ad_user_data": "denied"},
        commerce={
            "transaction_id": "T-2002",
            "value": "30.00",
            "currency": "USD",
            "items": [{"item_id": "A", "price": "15.00", "quantity": 2}],
        },
        params={"page_hostname": "shop.example"},
    )
    ((data, attrs),) = pulled(pubsub, topic_sub, 1)
    assert data == want
    assert attrs["dedup_key"] == "purchase:T-2002"


def test_mp_events_land_on_the_topic(client: Any, pubsub: Any, topic_sub: str) -> None:
    """An authenticated MP request arrives with its timestamps and consent."""
    body = {
        "client_id": "1234567890.1700000000",
        "user_id": "u-42",
        "timestamp_micros": 1712345678000000,
        "consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
        "user_data": {"sha256_email_address": [EMAIL_SHA]},
        "events": [
            {
                "name": "generate_lead",
                "params": {
                    "event_id": "mp-lead-1",
                    "lead_id": "L-7",
                    "value": 50,
                    "currency": "EUR",
                    "session_id": "1712345600",
                    "engagement_time_msec": 1,
                },
            }
        ],
    }
    resp = client.post(
        f"/mp/collect?measurement_id=G-ABC1234567&api_secret={SECRET}", json=body
    )
    assert resp.status_code == 204
    want = expected(
        event_id="mp-lead-1",
        name="generate_lead",
        source="mp",
        occurred_at=datetime(2024, 4, 5, 19, 34, 38, tzinfo=UTC),
        received_at=NOW,
        dedup_key="lead:L-7",
        client={
            "client_id": "1234567890.1700000000",
            "user_id": "u-42",
            "session_id": "1712345600",
        },
        identity={"email_sha256": EMAIL_SHA, "email_sha256_google": EMAIL_SHA},
        consent={**UNKNOWN, "ad_user_data": "granted", "ad_personalization": "denied"},
        lead={"lead_id": "L-7", "value": "50", "currency": "EUR"},
        params={"engagement_time_msec": 1},
    )
    ((data, _attrs),) = pulled(pubsub, topic_sub, 1)
    assert data == want


def test_rejected_requests_publish_nothing(
    client: Any, pubsub: Any, topic_sub: str
) -> None:
    """A 400 and a 401 leave the topic empty; a later good hit is the only message."""
    assert (
        client.post("/g/collect?v=2&tid=G-1", data="en=ok\nen=1bad").status_code == 400
    )
    assert client.post("/mp/collect?api_secret=wrong", json={}).status_code == 401
    assert client.get("/g/collect?v=2&tid=G-1&en=page_view&cid=1.2").status_code == 204
    ((data, _attrs),) = pulled(pubsub, topic_sub, 1)
    assert data["name"] == "page_view"
    assert pubsub.pull(topic_sub, timeout=2.0) == []
