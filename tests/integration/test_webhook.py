"""The ``webhook`` function publishing to the real Pub/Sub emulator.

Signed Stripe, HubSpot and CRM requests go through functions-framework's test
client with the real publisher (only the clock is fixed, through the documented
seam); what lands on the topic must equal the canonical events the pure mappers
produce for the same input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import functions_framework
import pytest
from webhook_support import FakeHubSpotApi, default_fake_hubspot, fixture_bytes

from truecount.adapters.hubspot_api import make_hubspot_api
from truecount.apps import webhook as webhook_app
from truecount.config import load_config
from truecount.core.dedup import with_dedup_key
from truecount.log import clear_secrets
from truecount.models.event import Event
from truecount.settings import get_settings
from truecount.webhooks import crm, hubspot, stripe
from truecount.webhooks.signatures import (
    crm_signature_header,
    hubspot_v3_signature,
    stripe_signature_header,
)

SOURCE = Path(__file__).parents[2] / "functions" / "webhook" / "main.py"
STRIPE_SECRET = "whsec_integration"
HUBSPOT_SECRET = "hubspot-integration-secret"
CRM_KEY = ("ops", "crm-integration-secret")


@pytest.fixture
def fake_hubspot() -> Iterator[FakeHubSpotApi]:
    """The local HubSpot API."""
    with default_fake_hubspot().running() as fake:
        yield fake


def test_published_events_equal_the_expected_canonical_events(
    pubsub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_hubspot
) -> None:
    """Stripe, HubSpot and CRM deliveries are published once each, acked before
    the 200, with bodies and attributes equal to the expected events."""
    topic = pubsub.create_topic("truecount-events")
    sub = pubsub.subscribe(topic)
    config_path = tmp_path / "truecount.toml"
    config_path.write_text(
        "[sources.stripe]\n[sources.crm]\n[sources.hubspot]\n"
        f'api_base_url = "{fake_hubspot.base_url}"\n'
    )
    env = {
        "TRUECOUNT_CONFIG": str(config_path),
        "TRUECOUNT_STRIPE_SIGNING_SECRETS": STRIPE_SECRET,
        "TRUECOUNT_HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET,
        "TRUECOUNT_HUBSPOT_TOKEN": fake_hubspot.token,
        "TRUECOUNT_CRM_KEYS": ":".join(CRM_KEY),
        "FUNCTION_TARGET": "webhook",
        "FUNCTION_SIGNATURE_TYPE": "http",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    received = datetime.now(UTC).replace(microsecond=0)
    now = int(received.timestamp())
    stripe_body = fixture_bytes("stripe", "checkout_session_completed")
    hubspot_body = fixture_bytes("hubspot", "webhook_batch_mixed")
    crm_body = json.dumps(
        {
            "name": "qualify_lead",
            "event_id": "crm-42-sql",
            "occurred_at": (received - timedelta(minutes=1)).isoformat(),
            "lead": {"lead_id": "42", "stage": "sql"},
            "identity": {"email": "lead42@example.com"},
            "click_ids": {"gclid": "crm-gclid"},
        }
    ).encode()

    with webhook_app.override(clock=lambda: received):
        client = functions_framework.create_app(
            target="webhook", source=str(SOURCE)
        ).test_client()
        responses = [
            client.post(
                "/stripe",
                data=stripe_body,
                headers={
                    "Stripe-Signature": stripe_signature_header(
                        stripe_body, STRIPE_SECRET, now
                    )
                },
            ),
            client.post(
                "/hubspot",
                data=hubspot_body,
                headers={
                    "X-HubSpot-Signature-v3": hubspot_v3_signature(
                        HUBSPOT_SECRET,
                        "POST",
                        "http://localhost/hubspot",
                        hubspot_body,
                        str(now * 1000),
                    ),
                    "X-HubSpot-Request-Timestamp": str(now * 1000),
                },
            ),
            client.post(
                "/crm",
                data=crm_body,
                headers={
                    "Truecount-Signature": crm_signature_header(
                        crm_body, CRM_KEY[1], now
                    ),
                    "Truecount-Key-Id": CRM_KEY[0],
                },
            ),
        ]
    clear_secrets()
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.get_json()["published"] for r in responses] == [1, 3, 1]
    assert len(fake_hubspot.requests) == 3  # deals, their contacts, contacts

    config = load_config(config_path)
    assert config.sources.stripe is not None
    assert config.sources.hubspot is not None
    stripe_event = stripe.map_event(
        stripe.parse_envelope(json.loads(stripe_body)), config.sources.stripe, received
    )
    assert isinstance(stripe_event, Event)
    with default_fake_hubspot().running() as second_fake:
        lookup = make_hubspot_api(second_fake.base_url, second_fake.token, 5.0)
        hubspot_events, _ = hubspot.map_batch(
            hubspot.parse_batch(json.loads(hubspot_body)),
            config.sources.hubspot,
            lookup,
            received,
        )
    crm_event = crm.map_crm(
        crm.parse_crm(json.loads(crm_body)), received, timedelta(seconds=300)
    )
    expected = [
        with_dedup_key(e, config.rule(e.name))
        for e in [stripe_event, *hubspot_events, crm_event]
    ]

    messages = pubsub.pull(sub, expect=len(expected), timeout=20.0)
    time.sleep(0.5)
    messages += pubsub.pull(sub, timeout=1.0)
    published = sorted(
        (Event.from_json_bytes(m.data) for m in messages), key=lambda e: e.event_id
    )
    assert published == sorted(expected, key=lambda e: e.event_id)
    by_id = {m.attributes["event_id"]: m.attributes for m in messages}
    assert by_id == {e.event_id: e.pubsub_attributes() for e in expected}
    raw = b"".join(m.data for m in messages)
    for pii in (b"John_Smith", b"john_smith@", b"lead42@", b"555-1212"):
        assert pii not in raw
