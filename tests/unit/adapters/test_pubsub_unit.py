"""PubSubPublisher logic with a fake client: ordering, deadline, error wrapping."""

from __future__ import annotations

import concurrent.futures
import time
from datetime import UTC, datetime

import pytest

from truecount.adapters.pubsub import PubSubPublisher
from truecount.errors import PublishError
from truecount.models.event import Event


class FakeClient:
    """Records publishes; each future resolves as ``outcome`` says."""

    def __init__(self, outcome: str = "ok") -> None:
        self.outcome = outcome
        self.published: list[tuple[str, bytes, dict[str, str]]] = []
        self.stopped = False

    def publish(
        self, topic: str, data: bytes, **attrs: str
    ) -> concurrent.futures.Future:
        if self.outcome == "raise-now":
            raise ValueError("client refused")
        self.published.append((topic, data, attrs))
        future: concurrent.futures.Future = concurrent.futures.Future()
        if self.outcome == "ok":
            future.set_result(f"id-{len(self.published)}")
        elif self.outcome == "error":
            future.set_exception(RuntimeError("broker said no"))
        return future  # "hang": never resolved

    def stop(self) -> None:
        self.stopped = True


def _event(index: int) -> Event:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    return Event(
        event_id=f"e-{index}",
        name="purchase",
        source="crm",
        occurred_at=now,
        received_at=now,
        params={"secret_payload": "do-not-leak"},
    )


def test_publish_returns_ids_in_order_with_bodies_and_attributes():
    """Each event is published as JSON bytes with its attributes; ids keep order."""
    client = FakeClient()
    publisher = PubSubPublisher("proj", "events", client_factory=lambda: client)
    events = [_event(1), _event(2), _event(3)]

    ids = publisher.publish(events)

    assert ids == ["id-1", "id-2", "id-3"]
    assert client.published == [
        ("projects/proj/topics/events", e.to_json_bytes(), e.pubsub_attributes())
        for e in events
    ]


def test_client_is_created_lazily_once():
    """The client factory runs on the first publish only, then the client is reused."""
    calls: list[int] = []
    client = FakeClient()

    def factory() -> FakeClient:
        calls.append(1)
        return client

    publisher = PubSubPublisher("proj", "events", client_factory=factory)
    assert calls == []

    publisher.publish([_event(1)])
    publisher.publish_raw("dead-letters", b"raw", {"reason": "bad"})

    assert calls == [1]
    assert client.published[1] == (
        "projects/proj/topics/dead-letters",
        b"raw",
        {"reason": "bad"},
    )


def test_empty_publish_does_not_create_a_client():
    """Publishing no events returns no ids and builds no client."""
    publisher = PubSubPublisher("proj", "events", client_factory=pytest.fail)

    assert publisher.publish([]) == []


@pytest.mark.parametrize("outcome", ["error", "raise-now"])
def test_failures_become_publish_error_without_payload(outcome):
    """A failed future or a raising client gives PublishError that leaks no payload."""
    publisher = PubSubPublisher(
        "proj", "events", client_factory=lambda: FakeClient(outcome)
    )

    with pytest.raises(PublishError) as caught:
        publisher.publish([_event(1)])

    assert "projects/proj/topics/events" in str(caught.value)
    assert "do-not-leak" not in str(caught.value)
    assert "e-1" not in str(caught.value)


def test_unacked_messages_raise_publish_error_after_one_overall_deadline():
    """Several unacked messages share one deadline rather than one each."""
    publisher = PubSubPublisher(
        "proj", "events", timeout=0.3, client_factory=lambda: FakeClient("hang")
    )

    started = time.monotonic()
    with pytest.raises(PublishError, match="did not ack 5 message"):
        publisher.publish([_event(i) for i in range(5)])

    assert time.monotonic() - started < 1.0


def test_close_stops_the_client_once():
    """close() stops the client and a second close() is harmless."""
    client = FakeClient()
    publisher = PubSubPublisher("proj", "events", client_factory=lambda: client)
    publisher.publish([_event(1)])

    publisher.close()
    publisher.close()

    assert client.stopped
