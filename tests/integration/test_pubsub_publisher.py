"""PubSubPublisher against the real Pub/Sub emulator."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from truecount import emulators as emu
from truecount.adapters.pubsub import PubSubPublisher, get_publisher
from truecount.errors import PublishError
from truecount.models.event import Commerce, Consent, Event, Item


def _event(index: int) -> Event:
    occurred = datetime(2025, 3, 1, 12, 0, tzinfo=UTC) + timedelta(seconds=index)
    return Event(
        event_id=f"evt-{index:04d}",
        name="purchase" if index % 2 else "page_view",
        source="stripe" if index % 3 else "ga4",
        occurred_at=occurred,
        received_at=occurred + timedelta(milliseconds=250),
        dedup_key=f"purchase:T-{index}" if index % 2 else "",
        consent=Consent(ad_storage="granted", analytics_storage="denied"),
        commerce=Commerce(
            transaction_id=f"T-{index}",
            value=Decimal("21.00") + index,
            currency="JPY" if index % 5 == 0 else "EUR",
            items=[Item(item_id=f"sku-{index}", price=Decimal("10.50"), quantity=2)],
        )
        if index % 2
        else None,
        params={"n": index, "label": f"café {index}"},
    )


def test_hundred_events_round_trip_with_equal_bodies_and_attributes(pubsub):
    """100 published events come back with identical bodies and attributes."""
    topic = pubsub.create_topic("truecount-events")
    sub = pubsub.subscribe(topic)
    publisher = PubSubPublisher(pubsub.project, topic, timeout=10.0)
    events = [_event(i) for i in range(100)]

    ids = publisher.publish(events)
    messages = pubsub.pull(sub, expect=100, timeout=20.0)
    publisher.close()

    assert len(ids) == 100
    assert len(set(ids)) == 100
    assert len(messages) == 100
    by_id = {m.message_id: m for m in messages}
    assert set(by_id) == set(ids)
    for event, message_id in zip(events, ids, strict=True):
        message = by_id[message_id]
        assert Event.from_json_bytes(message.data) == event
        assert message.attributes == event.pubsub_attributes()
        assert message.data == event.to_json_bytes()


def test_publish_raw_reaches_another_topic_with_its_attributes(pubsub):
    """publish_raw sends bytes and attributes to a second topic on the same client."""
    pubsub.create_topic("truecount-events")
    dead = pubsub.create_topic("truecount-dead-letter")
    sub = pubsub.subscribe(dead)
    publisher = PubSubPublisher(pubsub.project, "truecount-events", timeout=10.0)

    message_id = publisher.publish_raw(dead, b"\x00not json", {"reason": "unparsable"})
    messages = pubsub.pull(sub, expect=1)
    publisher.close()

    assert [(m.message_id, m.data, m.attributes) for m in messages] == [
        (message_id, b"\x00not json", {"reason": "unparsable"})
    ]


def test_publish_to_missing_topic_raises_publish_error(pubsub):
    """A topic that does not exist gives PublishError, without payload contents."""
    publisher = PubSubPublisher(pubsub.project, "no-such-topic", timeout=5.0)

    with pytest.raises(PublishError) as caught:
        publisher.publish([_event(1)])

    assert "no-such-topic" in str(caught.value)
    assert "evt-0001" not in str(caught.value)
    assert "T-1" not in str(caught.value)


def test_get_publisher_returns_one_instance_per_project_and_topic(project_id):
    """get_publisher caches one publisher per (project, topic, timeout)."""
    first = get_publisher(project_id, "truecount-events", 10.0)

    assert get_publisher(project_id, "truecount-events", 10.0) is first
    assert get_publisher(project_id, "other-topic", 10.0) is not first
    assert first.topic_path == f"projects/{project_id}/topics/truecount-events"


def test_publish_to_stopped_emulator_raises_within_timeout(project_id, monkeypatch):
    """With the emulator gone, publish raises PublishError within the timeout."""
    timeout = 3.0
    throwaway = emu.EmulatorProcess("pubsub", project=project_id).start()
    try:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", throwaway.host)
        emu.ensure_topic(project_id, "doomed-events")
        publisher = PubSubPublisher(project_id, "doomed-events", timeout=timeout)
        assert len(publisher.publish([_event(0)])) == 1
    finally:
        throwaway.stop()

    started = time.monotonic()
    with pytest.raises(PublishError):
        publisher.publish([_event(1), _event(2)])
    elapsed = time.monotonic() - started

    assert elapsed < timeout + 5.0
