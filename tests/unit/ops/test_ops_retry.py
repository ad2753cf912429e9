"""``retry-failed`` over fakes: selection, the re-opening write, and the
re-delivery through a real ``FanoutService`` (redrive, then resume)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from truecount.config import Config, FanoutConfig
from truecount.core.dedup import doc_id
from truecount.core.fanout import FanoutService
from truecount.core.ledger import (
    MAX_PREVIOUS_FAILURES,
    LedgerWrite,
    new_entry,
    reopen_failed,
)
from truecount.errors import RetryableError
from truecount.models.event import Commerce, Event
from truecount.ops import queries
from truecount.ops.retry import RetryResult, retry_failed
from truecount.testing import (
    FakeDestination,
    InMemoryIdentities,
    InMemoryLedger,
    RecordingPublisher,
    ScriptedSender,
)

NOW = datetime(2026, 4, 5, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=3)
SINCE = NOW - timedelta(hours=24)
DOWN = "http://sink.test/down"
UP = "http://sink.test/up"


class FakeEdits:
    """``LedgerEdits`` on an ``InMemoryLedger``; ``changed`` ids refuse."""

    def __init__(self, ledger: InMemoryLedger) -> None:
        self.ledger = ledger
        self.changed: set[str] = set()
        self.writes: list[tuple[str, LedgerWrite]] = []

    def update_if_unchanged(
        self, doc_id: str, write: LedgerWrite, update_time: Any
    ) -> bool:
        if doc_id in self.changed:
            return False
        self.writes.append((doc_id, write))
        self.ledger.update(doc_id, write)
        return True


class Outage:
    """Fanout with ``down`` (503 until max_attempts = 2) and ``up`` (200)."""

    def __init__(self) -> None:
        self.ledger = InMemoryLedger()
        self.sender = ScriptedSender()
        self.publisher = RecordingPublisher()
        self.service = FanoutService(
            Config(fanout=FanoutConfig(max_attempts=2)),
            [FakeDestination("down", DOWN), FakeDestination("up", UP)],
            ledger=self.ledger,
            identities=InMemoryIdentities(),
            sender=self.sender,
            publisher=self.publisher,
            events_topic="truecount-events",
            sleep=lambda _: None,
        )
        self.edits = FakeEdits(self.ledger)
        self.redrives: list[datetime] = []

    def fail(self, *txs: str) -> None:
        """Each order: first attempt 503 (retry), redelivery 503 (failed)."""
        for tx in txs:
            self.sender.script(DOWN, [503, 503])
            event = _order(tx)
            with pytest.raises(RetryableError):
                self.service.process(event, NOW)
            self.service.process(event, NOW + timedelta(minutes=1))

    def doc(self, tx: str) -> dict[str, Any]:
        return self.ledger.docs[doc_id(f"purchase:{tx}")]

    def docs(self) -> list[dict[str, Any]]:
        return [{**d, "_id": i} for i, d in self.ledger.docs.items()]

    def redrive(self) -> Callable[[], str]:
        def send() -> str:
            self.redrives.append(LATER)
            return "m-redrive"

        return send

    def run(self, **kw: Any) -> RetryResult:
        return retry_failed(
            self.docs(),
            self.edits,
            self.redrive(),
            destination=kw.pop("destination", "down"),
            since=SINCE,
            now=LATER,
            **kw,
        )

    def deliver_redriven(self) -> list[str]:
        """What fanout does on the redrive command: republish, then resume."""
        self.publisher.messages.clear()
        self.service.redrive(LATER + timedelta(seconds=1))
        actions = []
        for _, data, attributes in self.publisher.messages:
            envelope = {
                "message": {
                    "data": base64.b64encode(data).decode(),
                    "attributes": attributes,
                    "messageId": "m",
                }
            }
            actions.append(
                self.service.handle(envelope, LATER + timedelta(seconds=2)).action
            )
        return actions


def _order(tx: str) -> Event:
    return Event(
        event_id=f"evt_{tx}",
        name="purchase",
        source="stripe",
        occurred_at=NOW - timedelta(minutes=5),
        received_at=NOW - timedelta(minutes=5),
        dedup_key=f"purchase:{tx}",
        commerce=Commerce(transaction_id=tx, value=Decimal("9"), currency="EUR"),
    )


# --- the first-sight event -----------------------------------------------------


def test_create_keeps_the_delivery_event_and_a_held_entry_does_not() -> None:
    """``event`` is part of the create (canonical JSON), except on a held entry."""
    event = _order("T-1")

    doc, decision = new_entry(
        event, "first", ["a"], now=NOW, ttl=timedelta(days=1), lease=timedelta(1)
    )
    held, _ = new_entry(
        event.model_copy(update={"source": "ga4"}),
        "backend",
        ["a"],
        now=NOW,
        ttl=timedelta(days=1),
        lease=timedelta(1),
    )

    assert doc["event"] == event.to_json_bytes().decode()
    assert decision.event_stored is True
    assert "event" not in held
    assert len(doc["event"].encode()) < 2048


# --- the pure parts ------------------------------------------------------------


@pytest.mark.parametrize(
    ("klass", "wanted", "expected"),
    [
        ("max_attempts/http_503", None, True),
        ("max_attempts/http_503", "max_attempts/http_503", True),
        ("max_attempts/http_503", "max_attempts", True),
        ("max_attempts/http_503", "HTTP_503", True),
        ("max_attempts/http_503", "http_500", False),
        ("http_400", "max_attempts", False),
        ("expired", "expired", True),
    ],
)
def test_error_class_filter_matches_the_class_or_one_side(
    klass: str, wanted: str | None, expected: bool
) -> None:
    """``--error`` names a class as ``status`` shows it, or one side of it."""
    assert queries.error_class_matches(klass, wanted) is expected


def test_reopen_failed_resets_the_record_and_keeps_the_failure() -> None:
    """One write: pending, not_before = now, attempts 0, the old failure kept in
    previous_failures, deferred_until = now; other destinations untouched."""
    failed = {
        "status": "failed",
        "attempts": 2,
        "error": "max_attempts: http 503",
        "http_status": 503,
        "updated_at": NOW,
        "first_attempt_at": NOW - timedelta(minutes=1),
        "request": {"url": DOWN},
    }
    doc = {
        "event": "{}",
        "destinations": {"down": failed, "up": {"status": "delivered"}},
    }

    write = reopen_failed(doc, "down", LATER)

    assert write is not None
    assert set(write.set) == {
        "destinations.down",
        "deferred_until",
        "redrives",
        "updated_at",
    }
    assert write.set["deferred_until"] == LATER
    record = write.set["destinations.down"]
    assert (record["status"], record["attempts"], record["not_before"]) == (
        "pending",
        0,
        LATER,
    )
    assert record["previous_failures"] == [
        {
            "error": "max_attempts: http 503",
            "http_status": 503,
            "attempts": 2,
            "first_attempt_at": NOW - timedelta(minutes=1),
            "failed_at": NOW,
            "reopened_at": LATER,
        }
    ]
    assert reopen_failed(doc, "up", LATER) is None
    assert reopen_failed({**doc, "event": None}, "down", LATER) is None


def test_previous_failures_are_bounded() -> None:
    """Only the last MAX_PREVIOUS_FAILURES failures are kept."""
    history = [{"error": f"e{i}"} for i in range(MAX_PREVIOUS_FAILURES)]
    doc = {
        "event": "{}",
        "destinations": {
            "down": {"status": "failed", "error": "new", "previous_failures": history}
        },
    }

    write = reopen_failed(doc, "down", LATER)

    assert write is not None
    kept = write.set["destinations.down"]["previous_failures"]
    assert len(kept) == MAX_PREVIOUS_FAILURES
    assert kept[0] == {"error": "e1"}
    assert kept[-1]["error"] == "new"


# --- the run over fanout -------------------------------------------------------


def test_failed_destination_is_redelivered_once_and_the_delivered_one_is_not() -> None:
    """Two orders fail on ``down`` (max_attempts) and reach ``up``; after the fix,
    retry-failed re-opens both, one redrive republishes them, and ``down`` gets
    each once more; ``up`` gets nothing new; a second run finds nothing."""
    world = Outage()
    world.fail("T-1", "T-2")
    assert world.doc("T-1")["destinations"]["down"]["error"] == (
        "max_attempts: http 503"
    )
    sent_down, sent_up = len(world.sender.sent_to(DOWN)), len(world.sender.sent_to(UP))

    result = world.run()
    actions = world.deliver_redriven()
    again = world.run()

    assert result.counts == {"reopened": 2}
    assert result.by_error == {"max_attempts/http_503": 2}
    assert result.redrive_message_id == "m-redrive"
    assert len(world.redrives) == 1
    assert actions == ["resume", "resume"]
    assert len(world.sender.sent_to(DOWN)) == sent_down + 2
    assert len(world.sender.sent_to(UP)) == sent_up
    for tx in ("T-1", "T-2"):
        doc = world.doc(tx)
        down = doc["destinations"]["down"]
        assert (down["status"], down["attempts"]) == ("delivered", 1)
        assert [f["error"] for f in down["previous_failures"]] == [
            "max_attempts: http 503"
        ]
        assert doc["destinations"]["up"]["status"] == "delivered"
        assert doc["deferred_until"] is None
    assert again.entries == []
    assert len(world.redrives) == 1


def test_dry_run_lists_and_changes_nothing() -> None:
    """``--dry-run``: the entries are listed as would_reopen; no write, no redrive."""
    world = Outage()
    world.fail("T-1")
    before = world.doc("T-1")

    result = world.run(dry_run=True)

    assert [(e.dedup_key, e.outcome) for e in result.entries] == [
        ("purchase:T-1", "would_reopen")
    ]
    assert world.edits.writes == []
    assert world.redrives == []
    assert world.doc("T-1") == before


def test_entry_without_a_stored_event_is_reported_and_left_alone() -> None:
    """Entries written before the event was kept at first sight cannot be
    re-delivered: reported as no_event, not written; no redrive for them alone."""
    world = Outage()
    world.fail("T-1")
    del world.ledger.docs[doc_id("purchase:T-1")]["event"]

    result = world.run()

    [entry] = result.entries
    assert (entry.outcome, entry.note) == (
        "no_event",
        "cannot re-deliver (no stored event)",
    )
    assert world.edits.writes == []
    assert world.redrives == []
    assert world.doc("T-1")["destinations"]["down"]["status"] == "failed"


def test_filters_max_lease_and_changed_entries() -> None:
    """``--error`` that matches nothing; ``--max 1`` (oldest first); an entry
    whose lease is held is busy; one changed since it was read is not written."""
    world = Outage()
    world.fail("T-1", "T-2", "T-3")
    world.ledger.docs[doc_id("purchase:T-3")]["lease_until"] = LATER + timedelta(1)

    none = world.run(error="http_400")
    other = world.run(destination="up")
    world.edits.changed.add(doc_id("purchase:T-2"))
    capped = world.run(max_entries=1)
    world.edits.changed.clear()
    rest = world.run()

    assert none.entries == []
    assert other.entries == []
    outcomes = {e.dedup_key: e.outcome for e in capped.entries}
    assert outcomes == {
        "purchase:T-1": "reopened",
        "purchase:T-2": "over_max",
        "purchase:T-3": "busy",
    }
    assert {e.dedup_key: e.outcome for e in rest.entries} == {
        "purchase:T-2": "reopened",
        "purchase:T-3": "busy",
    }
    assert len(world.redrives) == 2


def test_a_changed_entry_is_not_reopened_and_a_failed_redrive_is_reported() -> None:
    """The precondition fails: ``changed``, nothing sent; a redrive that raises
    leaves the entries re-opened and says so in ``redrive_error``."""
    world = Outage()
    world.fail("T-1", "T-2")
    world.edits.changed.add(doc_id("purchase:T-1"))

    def broken() -> str:
        raise RuntimeError("pubsub down")

    result = retry_failed(
        world.docs(),
        world.edits,
        broken,
        destination="down",
        since=SINCE,
        now=LATER,
    )

    assert {e.dedup_key: e.outcome for e in result.entries} == {
        "purchase:T-1": "changed",
        "purchase:T-2": "reopened",
    }
    assert result.redrive_error == "RuntimeError: pubsub down"
    assert result.to_dict()["counts"] == {"changed": 1, "reopened": 1}
    assert world.doc("T-2")["deferred_until"] == LATER
