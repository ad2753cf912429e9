"""The ``fanout`` entry point in-process through functions-framework.

The service is replaced by one wired to in-memory fakes, so no network is used;
the point is the framework path: a raw Pub/Sub push body becomes the CloudEvent
``fanout`` receives, returning acks (200) and raising nacks (500).
"""

from __future__ import annotations

import base64
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import functions_framework
import pytest

from truecount.config import Config
from truecount.core.fanout import DEAD_LETTER_REASON, FanoutService
from truecount.models.event import Commerce, Event
from truecount.testing import (
    FakeDestination,
    InMemoryIdentities,
    InMemoryLedger,
    RecordingPublisher,
    ScriptedSender,
)

SOURCE = Path(__file__).parents[3] / "functions" / "fanout" / "main.py"
NOW = datetime(2026, 4, 5, 12, 0, tzinfo=UTC)


class Wired:
    """The app plus the fakes behind it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sender = ScriptedSender()
        self.publisher = RecordingPublisher()
        self.service = FanoutService(
            Config(),
            [FakeDestination("sink", "http://sink.test/a")],
            ledger=InMemoryLedger(),
            identities=InMemoryIdentities(),
            sender=self.sender,
            publisher=self.publisher,
        )
        app = functions_framework.create_app(target="fanout", source=str(SOURCE))
        monkeypatch.setattr(sys.modules["main"], "_service", lambda: self.service)
        self.client = app.test_client()

    def push(self, data: bytes, attributes: dict[str, str] | None = None) -> Any:
        body = {
            "message": {
                "data": base64.b64encode(data).decode(),
                "attributes": attributes or {},
                "messageId": "1234",
                "message_id": "1234",
                "publishTime": "2026-04-05T12:00:00.000Z",
            },
            "subscription": "projects/p/subscriptions/fanout-push",
        }
        return self.client.post("/", json=body)


def _event() -> bytes:
    return Event(
        event_id="st-1",
        name="purchase",
        source="stripe",
        occurred_at=NOW,
        received_at=NOW,
        commerce=Commerce(transaction_id="T-1", value=Decimal("5"), currency="EUR"),
    ).to_json_bytes()


def test_raw_push_body_becomes_a_cloud_event_and_is_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """functions-framework converts the raw push body; the event is sent; 200."""
    wired = Wired(monkeypatch)

    response = wired.push(_event())

    assert response.status_code == 200
    assert len(wired.sender.sent) == 1
    assert wired.sender.sent[0].json["event_id"] == "st-1"


def test_binary_cloud_event_is_delivered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The production path: a binary-mode CloudEvent from Eventarc."""
    wired = Wired(monkeypatch)
    data = {"message": {"data": base64.b64encode(_event()).decode(), "messageId": "9"}}

    response = wired.client.post(
        "/",
        json=data,
        headers={
            "ce-specversion": "1.0",
            "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
            "ce-source": "//pubsub.googleapis.com/projects/p/topics/truecount-events",
            "ce-id": "9",
        },
    )

    assert response.status_code == 200
    assert len(wired.sender.sent) == 1


def test_retryable_failure_answers_500_so_pubsub_redelivers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A destination 503 raises: the framework answers 500 (nack)."""
    wired = Wired(monkeypatch)
    wired.sender.script("http://sink.test/a", [503])

    first = wired.push(_event())
    second = wired.push(_event())

    assert first.status_code == 500
    assert second.status_code == 200
    assert len(wired.sender.sent) == 2


def test_poison_message_is_dead_lettered_and_acked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unparseable data: 200 (ack) and one dead letter with the reason."""
    wired = Wired(monkeypatch)

    response = wired.push(b"\xff\xfe not json", {"source": "ga4"})

    assert response.status_code == 200
    assert wired.sender.sent == []
    topic, data, attributes = wired.publisher.messages[0]
    assert topic == "truecount-events-dead-letter"
    assert data == b"\xff\xfe not json"
    assert attributes["source"] == "ga4"
    assert attributes[DEAD_LETTER_REASON].startswith("invalid_json")
