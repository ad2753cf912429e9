"""The whole system as a user runs it: real processes, emulators, push wiring."""

from __future__ import annotations

import json
import time
from typing import Any

from truecount.core.pii import sha256_hex
from truecount.demo import (
    FBCLID,
    DemoClient,
    Shopper,
    data_client_lead,
    hubspot_deal_won,
    script_hubspot_api,
    stripe_checkout,
)
from truecount.devstack import DEAD_LETTER_SUB, EVENTS_TOPIC

PLATFORMS = ("/ga4", "/meta", "/google-ads", "/linkedin", "/tiktok", "/sink")
ADS = ("/meta", "/google-ads", "/linkedin", "/tiktok")


def email_hash(s: Shopper) -> str:
    """The shopper's hashed email: in every platform's conversion payload."""
    return sha256_hex(s.email)


def _browser_purchase_then_held(client: DemoClient, world: Any, s: Shopper) -> None:
    assert client.ga4(s).status_code == 204
    held = world.wait_until(lambda: world.ledger(f"purchase:{s.order_id}"))
    assert held, "the browser purchase never reached the ledger"


def test_browser_and_stripe_purchase_count_once_per_platform_with_browser_context(
    client: DemoClient, world: Any, shopper: Shopper
) -> None:
    """GA4 purchase then Stripe for the same order: one request per platform,
    carrying the browser's client id, session id and click ids."""
    _browser_purchase_then_held(client, world, shopper)
    assert client.stripe(stripe_checkout(shopper, int(time.time()))).status_code == 200

    mark = email_hash(shopper)
    for prefix in PLATFORMS:
        world.wait_until(lambda p=prefix: world.about(p, mark))
    world.settle(mark)

    counts = {p: len(world.about(p, mark)) for p in PLATFORMS}
    assert counts == dict.fromkeys(PLATFORMS, 1)
    ga4 = world.about("/ga4", mark)[0].body
    assert ga4["client_id"] == shopper.client_id
    assert str(ga4["events"][0]["params"]["session_id"]) == shopper.session_id
    ads = world.about("/google-ads", mark)[0].body
    assert ads["conversions"][0]["gclid"] == shopper.gclid
    assert ads["conversions"][0]["orderId"] == shopper.order_id
    meta = world.about("/meta", mark)[0].body
    assert meta["data"][0]["user_data"]["fbc"].endswith(f".{FBCLID}")
    sink = world.about("/sink", mark)[0].body
    assert sink["source"] == "stripe"
    assert sink["click_ids"]["gclid"] == shopper.gclid
    entry = world.ledger(f"purchase:{shopper.order_id}")
    assert set(entry["sources"]) == {"ga4", "stripe"}


def test_stripe_retrying_the_same_webhook_three_times_still_delivers_once(
    client: DemoClient, world: Any, shopper: Shopper
) -> None:
    """Three deliveries of one Stripe event are one purchase everywhere."""
    _browser_purchase_then_held(client, world, shopper)
    body = stripe_checkout(shopper, int(time.time()))

    statuses = [client.stripe(body).status_code for _ in range(3)]

    assert statuses == [200, 200, 200]
    mark = email_hash(shopper)
    for prefix in PLATFORMS:
        world.wait_until(lambda p=prefix: world.about(p, mark))
    world.settle(mark)
    counts = {p: len(world.about(p, mark)) for p in PLATFORMS}
    assert counts == dict.fromkeys(PLATFORMS, 1)


def test_hubspot_deal_won_reaches_google_ads_with_the_gclid_seen_in_the_browser(
    client: DemoClient, world: Any, shopper: Shopper
) -> None:
    """A lead first seen in the browser with a gclid; the CRM deal won days later
    carries only the contact id, and still reaches Google Ads with that gclid."""
    assert client.data(data_client_lead(shopper)).status_code == 200
    assert world.wait_until(lambda: world.about("/sink", shopper.client_id))
    time.sleep(1.0)  # the identity store is written after delivery
    script_hubspot_api(world.stack.ports.url("capture"), shopper, client.http)

    resp = client.hubspot(hubspot_deal_won(shopper, int(time.time() * 1000)))

    assert resp.status_code == 200
    found = world.wait_until(lambda: world.about("/google-ads", shopper.gclid))
    assert len(found) == 1
    conversion = found[0].body["conversions"][0]
    assert conversion["gclid"] == shopper.gclid
    assert conversion["conversionAction"].endswith("/conversionActions/222")
    assert conversion["conversionValue"] == 1500


def test_denied_ad_consent_skips_ad_platforms_and_ga4_follows_its_config(
    client: DemoClient, world: Any, shopper: Shopper
) -> None:
    """ad_storage denied: Meta and TikTok are skipped with the reason; GA4 needs
    analytics_storage only, so it and the internal sink still receive the lead."""
    event = data_client_lead(shopper)
    event["consent_state"] = {
        "ad_storage": "denied", "analytics_storage": "granted",
        "ad_user_data": "denied", "ad_personalization": "denied",
    }  # fmt: skip

    assert client.data(event).status_code == 200

    assert world.wait_until(lambda: world.about("/ga4", shopper.client_id))
    world.settle(shopper.client_id)
    assert len(world.about("/sink", shopper.client_id)) == 1
    assert [len(world.about(p, shopper.client_id)) for p in ADS] == [0, 0, 0, 0]
    entry = world.wait_until(
        lambda: world.ledger(f"event:{event['event_id']}").get("destinations")
    )
    assert entry["meta"]["status"] == "skipped"
    assert "ad_storage" in entry["meta"]["reason"]
    assert entry["tiktok"]["status"] == "skipped"
    assert entry["ga4"]["status"] == "delivered"


def test_destination_answering_500_then_200_is_delivered_once_after_a_retry(
    client: DemoClient, world: Any, shopper: Shopper
) -> None:
    """LinkedIn fails once with a 500: Pub/Sub redelivers, LinkedIn gets the
    conversion on the second try, and no other platform gets it twice."""
    _browser_purchase_then_held(client, world, shopper)
    world.stack.capture.script("/linkedin", [500])

    assert client.stripe(stripe_checkout(shopper, int(time.time()))).status_code == 200

    mark = email_hash(shopper)
    attempts = world.wait_until(
        lambda: len(world.about("/linkedin", mark)) >= 2, timeout=60
    )
    assert attempts
    world.settle(mark)
    statuses = [r.status for r in world.about("/linkedin", mark)]
    assert statuses == [500, 200]
    others = {p: len(world.about(p, mark)) for p in PLATFORMS if p != "/linkedin"}
    assert others == dict.fromkeys(others, 1)
    entry = world.ledger(f"purchase:{shopper.order_id}")
    assert entry["destinations"]["linkedin"]["status"] == "delivered"
    assert entry["destinations"]["linkedin"]["attempts"] == 2


def test_poison_message_lands_on_the_dead_letter_topic_with_its_reason(
    world: Any,
) -> None:
    """A message that is not a canonical event is dead-lettered, not retried."""
    from google.cloud import pubsub_v1

    from truecount.emulators import pull

    project = world.stack.project
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(project, EVENTS_TOPIC)
    publisher.publish(topic, b'{"not": "an event"}', source="ga4").result(timeout=10)

    messages = pull(project, DEAD_LETTER_SUB, expect=1, timeout=30)

    poison = [m for m in messages if m.data == b'{"not": "an event"}']
    assert len(poison) == 1
    reason = poison[0].attributes.get("truecount_dead_letter_reason", "")
    assert "event_id" in reason or "invalid" in reason
    assert json.loads(poison[0].data) == {"not": "an event"}
