"""Ledger decisions: first sight, resume, merge, duplicates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from truecount.core.ledger import (
    MAX_DUPLICATES,
    decide,
    give_up,
    held_context,
    new_entry,
    status_write,
)
from truecount.models.event import ClickIds, Client, Commerce, Event
from truecount.testing import apply_write

NOW = datetime(2026, 4, 5, 12, 0, tzinfo=UTC)
TTL = timedelta(days=35)
LEASE = timedelta(seconds=60)
DESTS = ["ga4", "meta"]


def _purchase(event_id: str, source: str, **kw: object) -> Event:
    base: dict[str, object] = {
        "event_id": event_id,
        "name": "purchase",
        "source": source,
        "occurred_at": NOW,
        "received_at": NOW,
        "dedup_key": "purchase:T-1",
        "commerce": Commerce(transaction_id="T-1", value=Decimal("5"), currency="EUR"),
    }
    base.update(kw)
    return Event.model_validate(base)


def _entry(event: Event, truth: str = "first") -> dict[str, object]:
    doc, _ = new_entry(event, truth, DESTS, now=NOW, ttl=TTL, lease=LEASE)  # type: ignore[arg-type]
    return doc


def test_first_sight_delivers_with_every_destination_pending() -> None:
    """The creator owns delivery; each destination starts pending."""
    event = _purchase("st-1", "stripe")

    doc, decision = new_entry(event, "first", DESTS, now=NOW, ttl=TTL, lease=LEASE)

    assert decision.action == "deliver"
    assert doc["delivery_event_id"] == "st-1"
    assert doc["destinations"] == {
        "ga4": {"status": "pending", "attempts": 0, "updated_at": NOW},
        "meta": {"status": "pending", "attempts": 0, "updated_at": NOW},
    }
    assert doc["sources"] == {"stripe": [{"event_id": "st-1", "at": NOW}]}
    assert doc["transaction_id"] == "T-1"
    assert doc["expire_at"] == NOW + TTL
    assert doc["lease_until"] == NOW + LEASE


def test_browser_first_sight_under_backend_truth_is_held() -> None:
    """A browser purchase waits for the backend: no destinations, no lease."""
    event = _purchase("br-1", "ga4", client=Client(client_id="1.2"))

    doc, decision = new_entry(event, "backend", DESTS, now=NOW, ttl=TTL, lease=LEASE)

    assert decision.action == "hold"
    assert doc["delivery_event_id"] is None
    assert doc["browser_event_id"] == "br-1"
    assert doc["destinations"] == {}
    assert doc["context"] == {"client_id": "1.2"}


def test_redelivery_with_everything_done_is_done() -> None:
    """The same event_id again, every destination final: nothing to do."""
    event = _purchase("st-1", "stripe")
    doc = _entry(event)
    doc["destinations"] = {
        "ga4": {"status": "delivered", "attempts": 1},
        "meta": {"status": "skipped", "attempts": 0},
    }
    doc["lease_until"] = None

    decision = decide(doc, event, "first", DESTS, now=NOW, lease=LEASE)

    assert decision.action == "done"
    assert decision.write is None


def test_redelivery_resumes_only_what_is_not_done_and_takes_the_lease() -> None:
    """A pending destination is retried under a new lease, in a transaction."""
    event = _purchase("st-1", "stripe")
    doc = _entry(event)
    doc["destinations"] = {
        "ga4": {"status": "delivered", "attempts": 1},
        "meta": {"status": "pending", "attempts": 1, "error": "http 500"},
    }
    doc["lease_until"] = None
    doc["attempts"] = 1

    decision = decide(doc, event, "first", DESTS, now=NOW, lease=LEASE)

    assert decision.action == "resume"
    assert decision.transactional
    assert decision.write is not None
    assert decision.write.set["lease_until"] == NOW + LEASE
    assert decision.attempts == 1
    assert decision.statuses["ga4"]["status"] == "delivered"


def test_redelivery_while_another_attempt_holds_the_lease_is_busy() -> None:
    """Two copies never send at once: the second waits for a redelivery."""
    event = _purchase("st-1", "stripe")
    doc = _entry(event)

    decision = decide(
        doc, event, "first", DESTS, now=NOW + timedelta(seconds=5), lease=LEASE
    )

    assert decision.action == "busy"


def test_expired_lease_lets_a_redelivery_resume() -> None:
    """A creator that died mid-attempt is taken over after its lease."""
    event = _purchase("st-1", "stripe")
    doc = _entry(event)

    later = NOW + LEASE + timedelta(seconds=1)
    decision = decide(doc, event, "first", DESTS, now=later, lease=LEASE)

    assert decision.action == "resume"


def test_truth_first_records_another_event_as_a_duplicate_with_what_it_added() -> None:
    """A later event is not delivered; its source, id and added context are kept."""
    first = _purchase("br-1", "ga4", client=Client(client_id="1.2"))
    doc = _entry(first)
    later = _purchase(
        "st-1", "stripe", client=Client(client_id="9.9"), click_ids=ClickIds(gclid="G")
    )

    decision = decide(doc, later, "first", DESTS, now=NOW, lease=LEASE)

    assert decision.action == "duplicate"
    assert not decision.transactional
    assert decision.write is not None
    apply_write(doc, decision.write)
    assert doc["duplicates"] == [
        {"event_id": "st-1", "source": "stripe", "at": NOW, "added": {"gclid": "G"}}
    ]
    assert doc["sources"]["stripe"] == [{"event_id": "st-1", "at": NOW}]
    assert doc["event_ids"] == ["br-1", "st-1"]
    assert doc["delivery_event_id"] == "br-1"


def test_a_recorded_duplicate_redelivered_is_done() -> None:
    """A duplicate seen twice is recorded once."""
    doc = _entry(_purchase("br-1", "ga4"))
    later = _purchase("st-1", "stripe")
    write = decide(doc, later, "first", DESTS, now=NOW, lease=LEASE).write
    assert write is not None
    apply_write(doc, write)

    again = decide(doc, later, "first", DESTS, now=NOW, lease=LEASE)

    assert again.action == "done"


def test_backend_event_merges_with_a_held_browser_event() -> None:
    """Under backend truth the backend event takes delivery with the browser context."""
    browser = _purchase("br-1", "ga4", client=Client(client_id="1.2", session_id="s"))
    doc = _entry(browser, "backend")
    backend = _purchase("st-1", "stripe")

    decision = decide(doc, backend, "backend", DESTS, now=NOW, lease=LEASE)

    assert decision.action == "merge"
    assert decision.transactional
    assert decision.context == {"client_id": "1.2", "session_id": "s"}
    assert decision.browser_event_id == "br-1"
    assert decision.write is not None
    apply_write(doc, decision.write)
    assert doc["delivery_event_id"] == "st-1"
    assert set(doc["sources"]) == {"ga4", "stripe"}
    assert doc["destinations"]["meta"]["status"] == "pending"


def test_browser_event_after_a_delivered_backend_event_is_a_duplicate() -> None:
    """Reverse order under backend truth: the browser copy is only recorded."""
    doc = _entry(_purchase("st-1", "stripe"), "backend")
    browser = _purchase("br-1", "ga4", click_ids=ClickIds(fbc="fb.1.c"))

    decision = decide(doc, browser, "backend", DESTS, now=NOW, lease=LEASE)

    assert decision.action == "duplicate"
    assert decision.write is not None
    assert decision.write.set["browser_event_id"] == "br-1"


def test_second_backend_event_after_a_merge_is_a_duplicate() -> None:
    """Once a backend event owns delivery, another backend event is recorded."""
    doc = _entry(_purchase("br-1", "ga4"), "backend")
    merge = decide(
        doc, _purchase("st-1", "stripe"), "backend", DESTS, now=NOW, lease=LEASE
    )
    assert merge.write is not None
    apply_write(doc, merge.write)

    decision = decide(
        doc, _purchase("st-2", "stripe"), "backend", DESTS, now=NOW, lease=LEASE
    )

    assert decision.action == "duplicate"


def test_held_context_is_completed_by_browser_duplicates() -> None:
    """A second browser copy's extra click id is used by the merge."""
    doc = _entry(_purchase("br-1", "ga4", client=Client(client_id="1.2")), "backend")
    dup = decide(
        doc,
        _purchase("br-2", "data", click_ids=ClickIds(gclid="G")),
        "backend",
        DESTS,
        now=NOW,
        lease=LEASE,
    )
    assert dup.write is not None
    apply_write(doc, dup.write)

    assert held_context(doc) == {"client_id": "1.2", "gclid": "G"}


def test_duplicates_stop_being_recorded_at_the_limit() -> None:
    """A storm of copies cannot grow the document without bound."""
    doc = _entry(_purchase("br-1", "ga4"))
    doc["duplicates"] = [{"event_id": f"x{i}"} for i in range(MAX_DUPLICATES)]

    decision = decide(
        doc, _purchase("st-1", "stripe"), "first", DESTS, now=NOW, lease=LEASE
    )

    assert decision.action == "done"
    assert decision.write is None


def test_status_write_sets_every_destination_and_releases_the_lease() -> None:
    """One write: each destination's record, context, attempts, no lease."""
    doc = _entry(_purchase("st-1", "stripe"))

    write = status_write(
        {"ga4": {"status": "delivered", "attempts": 1}},
        {"client_id": "1.2"},
        {"gclid": "email_sha256"},
        1,
        NOW,
    )
    apply_write(doc, write)

    assert doc["destinations"]["ga4"] == {"status": "delivered", "attempts": 1}
    assert doc["destinations"]["meta"]["status"] == "pending"
    assert doc["lease_until"] is None
    assert doc["attempts"] == 1
    assert doc["stitched"] == {"gclid": "email_sha256"}


def _deferred(not_before: datetime) -> dict[str, object]:
    return {
        "status": "pending",
        "attempts": 0,
        "reason": "deferred:TOO_RECENT_EVENT",
        "not_before": not_before,
    }


def test_redelivery_with_only_deferred_destinations_not_due_is_done() -> None:
    """Nothing due yet: done (ack), no lease taken, no write."""
    event = _purchase("st-1", "stripe")
    doc = _entry(event)
    doc["lease_until"] = None
    doc["destinations"] = {
        "ga4": {"status": "delivered", "attempts": 1},
        "meta": _deferred(NOW + timedelta(hours=6)),
    }
    doc["deferred_until"] = NOW + timedelta(hours=6)

    decision = decide(doc, event, "first", DESTS, now=NOW, lease=LEASE)

    assert (decision.action, decision.write) == ("done", None)
    assert "not due" in decision.reason


def test_redelivery_once_the_deferral_is_due_resumes_and_knows_the_stored_event() -> (
    None
):
    """Due: resume, and the decision says the event is already kept."""
    event = _purchase("st-1", "stripe")
    doc = _entry(event)
    doc["lease_until"] = None
    doc["event"] = event.to_json_bytes().decode()
    doc["destinations"] = {
        "ga4": {"status": "delivered", "attempts": 1},
        "meta": _deferred(NOW - timedelta(seconds=1)),
    }

    decision = decide(doc, event, "first", DESTS, now=NOW, lease=LEASE)

    assert decision.action == "resume"
    assert decision.event_stored is True


def test_status_write_sets_deferred_until_to_the_earliest_not_before() -> None:
    """deferred_until is the earliest not_before among pending records, counting
    the destinations not tried this time; the event is written when given."""
    later, sooner = NOW + timedelta(hours=7), NOW + timedelta(hours=6)
    write = status_write(
        {"ga4": _deferred(later)},
        {},
        {},
        1,
        NOW,
        previous={"meta": _deferred(sooner)},
        event_json='{"event_id":"st-1"}',
    )

    assert write.set["deferred_until"] == sooner
    assert write.set["event"] == '{"event_id":"st-1"}'
    assert write.set["lease_until"] is None


def test_status_write_clears_deferred_until_once_nothing_is_deferred() -> None:
    """The deferred destination delivered: deferred_until is set to None; an entry
    that never deferred gets no deferred_until field at all."""
    delivered = {"status": "delivered", "attempts": 1}
    cleared = status_write(
        {"meta": delivered}, {}, {}, 2, NOW, previous={"meta": _deferred(NOW)}
    )
    plain = status_write({"meta": delivered}, {}, {}, 1, NOW, previous={})

    assert cleared.set["deferred_until"] is None
    assert "deferred_until" not in plain.set


def test_status_write_can_keep_the_lease() -> None:
    """A send still in flight: the write keeps lease_until as given."""
    write = status_write({}, {}, {}, 1, NOW, lease_until=NOW + LEASE)

    assert write.set["lease_until"] == NOW + LEASE


def test_done_copy_corrects_a_stale_deferred_until_in_a_transaction() -> None:
    """Every destination done but deferred_until still set (a redrive's bump
    that lost a race): done, with one transactional write clearing it."""
    event = _purchase("st-1", "stripe")
    doc = _entry(event)
    doc["destinations"] = {
        "ga4": {"status": "delivered", "attempts": 1},
        "meta": {"status": "delivered", "attempts": 1},
    }
    doc["deferred_until"] = NOW + timedelta(hours=1)

    decision = decide(doc, event, "first", DESTS, now=NOW, lease=LEASE)

    assert (decision.action, decision.transactional) == ("done", True)
    assert decision.write is not None
    assert dict(decision.write.set) == {"deferred_until": None, "updated_at": NOW}
    apply_write(doc, decision.write)
    again = decide(doc, event, "first", DESTS, now=NOW, lease=LEASE)
    assert (again.action, again.write) == ("done", None)


def test_done_copy_ignores_a_deferred_destination_no_longer_configured() -> None:
    """A deferred destination removed from the config no longer counts: the
    stored deferred_until is corrected to what the live destinations imply."""
    event = _purchase("st-1", "stripe")
    doc = _entry(event)
    doc["destinations"] = {
        "ga4": _deferred(NOW + timedelta(hours=3)),
        "meta": _deferred(NOW + timedelta(hours=1)),
    }
    doc["deferred_until"] = NOW + timedelta(hours=1)

    decision = decide(doc, event, "first", ["ga4"], now=NOW, lease=LEASE)

    assert decision.action == "done"
    assert decision.write is not None
    assert decision.write.set["deferred_until"] == NOW + timedelta(hours=3)


def test_give_up_fails_the_deferred_destinations_and_clears_deferred_until() -> None:
    """Giving up marks every deferred destination failed with the error, keeps
    its counters, leaves done and retrying ones alone, clears deferred_until."""
    event = _purchase("st-1", "stripe")
    doc = _entry(event)
    doc["destinations"] = {
        "ga4": {"status": "delivered", "attempts": 1},
        "meta": {
            **_deferred(NOW - timedelta(hours=1)),
            "deferrals": 2,
            "retry_after": 22500,
        },
        "tiktok": {"status": "pending", "attempts": 1, "retryable": True},
    }
    doc["deferred_until"] = NOW - timedelta(hours=1)

    apply_write(doc, give_up(doc, "max_redrives", NOW))

    assert doc["deferred_until"] is None
    assert doc["destinations"]["meta"] == {
        "status": "failed",
        "attempts": 0,
        "deferrals": 2,
        "error": "max_redrives",
        "updated_at": NOW,
    }
    assert doc["destinations"]["ga4"] == {"status": "delivered", "attempts": 1}
    assert doc["destinations"]["tiktok"]["status"] == "pending"
