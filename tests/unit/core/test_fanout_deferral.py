"""Fanout deferrals, redrive and the write/timeout safeguards, over fakes.

A destination whose platform asks to wait hours (Google Ads TOO_RECENT_EVENT) is
deferred: pending with ``not_before``, acked, redriven once due. The status write
is retried in-process, and a timed-out send keeps the lease, so that neither
failure makes a redelivery send twice.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from truecount.config import Config, FanoutConfig, RuleConfig, parse_config
from truecount.core.dedup import doc_id
from truecount.core.fanout import (
    COMMAND_ATTRIBUTE,
    DEAD_LETTER_REASON,
    MAX_REDRIVES,
    REDRIVEN_ATTRIBUTE,
    FanoutService,
    dead_letter_attributes,
)
from truecount.core.ledger import InvalidWriteError, LedgerWrite, reopen_failed
from truecount.destinations.registry import build_destinations
from truecount.errors import RetryableError
from truecount.models.event import ClickIds, Client, Event, Identity
from truecount.ports import HttpResponse, OutboundRequest, SendResult
from truecount.testing import (
    FakeDestination,
    InMemoryIdentities,
    InMemoryLedger,
    RecordingPublisher,
    ScriptedSender,
)

from .test_fanout import NOW, A, B, World, _envelope, _purchase

TOO_RECENT = 6 * 3600 + 900
KEY = "purchase:T-1"


class TooRecentOnce(FakeDestination):
    """Answers like Google Ads: a 299 reply means TOO_RECENT_EVENT."""

    def classify(self, response: HttpResponse) -> SendResult:
        if response.status == 299:
            return SendResult(
                "retry",
                http_status=200,
                error="partial failure: TOO_RECENT_EVENT",
                retry_after=TOO_RECENT,
                detail={"codes": ["TOO_RECENT_EVENT"]},
            )
        return super().classify(response)


def _deferring_world(**config: Any) -> World:
    world = World(Config(fanout=FanoutConfig(**config)))
    ads = TooRecentOnce("a", A)
    world.a = ads
    world.service.destinations = [ads, world.b]
    world.sender.script(A, [299])
    return world


def _republished(world: World) -> list[tuple[str, bytes, dict[str, str]]]:
    return [m for m in world.publisher.messages if m[0] == "truecount-events"]


def _redelivery(message: tuple[str, bytes, dict[str, str]]) -> dict[str, Any]:
    _, data, attributes = message
    return _envelope(data, attributes)


# --- deferral ------------------------------------------------------------------


def test_too_recent_is_deferred_pending_and_acked_without_counting_an_attempt() -> None:
    """TOO_RECENT_EVENT: pending with not_before = now + 6h15, reason deferred,
    attempts unchanged; the message is acked and the other destination delivered."""
    world = _deferring_world()

    result = world.service.process(_purchase(), NOW)

    assert result.outcomes["a"].status == "deferred"
    doc = world.doc(KEY)
    rec = doc["destinations"]["a"]
    assert rec["status"] == "pending"
    assert rec["reason"] == "deferred:TOO_RECENT_EVENT"
    assert rec["not_before"] == NOW + timedelta(seconds=TOO_RECENT)
    assert rec["attempts"] == 0
    assert rec["deferrals"] == 1
    assert rec["retry_after"] == TOO_RECENT
    assert rec["detail"] == {"codes": ["TOO_RECENT_EVENT"]}
    assert "retryable" not in rec
    assert doc["destinations"]["b"]["status"] == "delivered"
    assert doc["deferred_until"] == NOW + timedelta(seconds=TOO_RECENT)
    stored = Event.from_json_bytes(doc["event"])
    assert (stored.event_id, stored.dedup_key) == ("st-1", KEY)


def test_deferral_does_not_ack_when_another_destination_needs_a_retry() -> None:
    """A deferred destination plus a 500 elsewhere: the message is nacked."""
    world = _deferring_world()
    world.sender.script(B, [500])

    with pytest.raises(RetryableError, match="b"):
        world.service.process(_purchase(), NOW)

    assert world.doc(KEY)["destinations"]["a"]["reason"].startswith("deferred:")


def test_redelivery_tries_only_due_destinations() -> None:
    """After a deferral and a 500 elsewhere, the redelivery a minute later sends
    to the retrying destination only; the deferred one is not sent, nor counted."""
    world = _deferring_world()
    world.sender.script(B, [500])
    with pytest.raises(RetryableError):
        world.service.process(_purchase(), NOW)

    world.service.process(_purchase(), NOW + timedelta(minutes=1))

    assert (len(world.sender.sent_to(A)), len(world.sender.sent_to(B))) == (1, 2)
    doc = world.doc(KEY)
    assert doc["destinations"]["b"]["status"] == "delivered"
    assert doc["destinations"]["a"]["status"] == "pending"
    assert doc["destinations"]["a"]["attempts"] == 0
    assert doc["deferred_until"] == NOW + timedelta(seconds=TOO_RECENT)


def test_redelivery_with_only_not_due_destinations_left_is_done_without_a_write() -> (
    None
):
    """Only a deferred destination left and not due: ack, no send, no write."""
    world = _deferring_world()
    world.service.process(_purchase(), NOW)
    writes = world.ledger.ops.writes

    result = world.service.process(_purchase(), NOW + timedelta(hours=1))

    assert result.action == "done"
    assert len(world.sender.sent_to(A)) == 1
    assert world.ledger.ops.writes == writes + 1  # the rejected create only


def test_redrive_before_due_does_nothing_and_after_due_republishes() -> None:
    """redrive(now + 5 h) publishes nothing; redrive(now + 7 h) republishes the
    stored event (same event_id) to the events topic, marked as redriven."""
    world = _deferring_world()
    world.service.process(_purchase(), NOW)

    early = world.service.redrive(NOW + timedelta(hours=5))
    assert (early.action, _republished(world)) == ("redrive", [])

    world.service.redrive(NOW + timedelta(hours=7))

    [(_, data, attributes)] = _republished(world)
    assert Event.from_json_bytes(data).event_id == "st-1"
    assert attributes["event_id"] == "st-1"
    assert attributes["dedup_key"] == KEY
    assert attributes[REDRIVEN_ATTRIBUTE] == "1"


def test_redriven_event_delivers_the_due_destination_once_and_nothing_else() -> None:
    """The republished copy resumes: A gets its second (successful) upload, B is
    not sent again, deferred_until is cleared; later copies are done."""
    world = _deferring_world()
    world.service.process(_purchase(), NOW)
    later = NOW + timedelta(hours=7)
    world.service.redrive(later)
    [message] = _republished(world)

    world.service.handle(_redelivery(message), later)
    world.service.handle(_redelivery(message), later)
    world.service.redrive(later + timedelta(hours=2))

    assert (len(world.sender.sent_to(A)), len(world.sender.sent_to(B))) == (2, 1)
    doc = world.doc(KEY)
    assert doc["destinations"]["a"]["status"] == "delivered"
    assert "not_before" not in doc["destinations"]["a"]
    assert doc["deferred_until"] is None
    assert len(_republished(world)) == 1


def test_redrive_command_message_runs_the_redrive() -> None:
    """A message with truecount_command=redrive (no event) redrives and acks."""
    world = _deferring_world()
    world.service.process(_purchase(), NOW)

    result = world.service.handle(
        _envelope(b"{}", {COMMAND_ATTRIBUTE: "redrive"}), NOW + timedelta(hours=7)
    )

    assert result.action == "redrive"
    assert len(_republished(world)) == 1


def test_unknown_command_is_dead_lettered() -> None:
    """An unknown truecount_command is parked with its reason, not retried."""
    world = World()

    result = world.service.handle(_envelope(b"{}", {COMMAND_ATTRIBUTE: "nope"}), NOW)

    assert result.action == "dead_letter"
    [(_, _, attributes)] = world.publisher.messages
    assert attributes[DEAD_LETTER_REASON] == "unknown_command: nope"


def test_redrive_moves_an_entry_ahead_so_a_lost_copy_is_retried_later() -> None:
    """A redriven entry is not due again for an hour, then is republished again."""
    world = _deferring_world()
    world.service.process(_purchase(), NOW)
    later = NOW + timedelta(hours=7)

    world.service.redrive(later)
    world.service.redrive(later + timedelta(minutes=15))
    world.service.redrive(later + timedelta(minutes=61))

    assert len(_republished(world)) == 2
    assert world.doc(KEY)["redrives"] == 2


def test_repeated_too_recent_fails_after_max_attempts_deferrals() -> None:
    """A destination deferred max_attempts times fails as max_deferrals."""
    world = _deferring_world(max_attempts=2)
    world.sender.script(A, [299, 299, 299])
    world.service.process(_purchase(), NOW)
    at = NOW
    for _ in range(2):
        at += timedelta(hours=7)
        world.service.redrive(at)
        world.service.handle(_redelivery(_republished(world)[-1]), at)

    rec = world.doc(KEY)["destinations"]["a"]
    assert rec["status"] == "failed"
    assert rec["error"].startswith("max_deferrals:")
    assert world.doc(KEY)["deferred_until"] is None


def test_short_retry_after_is_a_plain_retry() -> None:
    """A Retry-After within Pub/Sub's backoff (<= 600 s) is not deferred."""
    world = World()

    class Short(FakeDestination):
        def classify(self, response: HttpResponse) -> SendResult:
            return SendResult(
                "retry", http_status=429, error="http 429", retry_after=60
            )

    world.service.destinations = [Short("a", A), world.b]
    with pytest.raises(RetryableError):
        world.service.process(_purchase(), NOW)

    rec = world.doc(KEY)["destinations"]["a"]
    assert (rec["retryable"], rec["attempts"], rec["retry_after"]) == (True, 1, 60)
    assert "deferred_until" not in world.doc(KEY)


def test_without_a_ledger_a_long_retry_after_is_a_plain_retry() -> None:
    """idempotence = "none" has nothing to redrive from: TOO_RECENT is nacked."""
    world = _deferring_world()
    world.service.config = Config(rules={"purchase": RuleConfig(idempotence="none")})

    with pytest.raises(RetryableError, match="a"):
        world.service.process(_purchase(), NOW)

    assert world.ledger.docs == {}


# --- status write --------------------------------------------------------------


class FlakyLedger(InMemoryLedger):
    """Fails the first ``failures`` updates, then behaves."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        super().__init__()
        self.failures = failures
        self.error = error or RetryableError("firestore update: DeadlineExceeded")
        self.refused: list[LedgerWrite] = []

    def update(self, doc_id: str, write: LedgerWrite) -> None:
        if self.failures > 0:
            self.failures -= 1
            self.refused.append(write)
            raise self.error
        super().update(doc_id, write)


def _with_ledger(ledger: InMemoryLedger) -> World:
    world = World()
    world.ledger = ledger
    world.service.ledger = ledger
    return world


def test_status_write_is_retried_in_process_so_nothing_is_sent_twice() -> None:
    """Two failed status writes, then success: acked; a redelivery sends nothing."""
    world = _with_ledger(FlakyLedger(failures=2))

    world.service.process(_purchase(), NOW)
    world.service.process(_purchase(), NOW + timedelta(seconds=5))

    assert (len(world.sender.sent_to(A)), len(world.sender.sent_to(B))) == (1, 1)
    assert world.doc(KEY)["destinations"]["a"]["status"] == "delivered"
    assert world.doc(KEY)["lease_until"] is None


def test_status_write_failing_three_times_raises_retryable() -> None:
    """Three failures: RetryableError, and the lease still blocks a redelivery."""
    world = _with_ledger(FlakyLedger(failures=3))

    with pytest.raises(RetryableError, match="status write"):
        world.service.process(_purchase(), NOW)
    with pytest.raises(RetryableError, match="in flight"):
        world.service.process(_purchase(), NOW + timedelta(seconds=5))

    assert len(world.sender.sent_to(A)) == 1


def test_too_large_status_write_is_retried_once_without_excerpts() -> None:
    """InvalidWriteError (document too large): written again without the request,
    response and detail, and the outcome is kept."""
    world = _with_ledger(FlakyLedger(1, InvalidWriteError("too large")))

    world.service.process(_purchase(), NOW)

    [refused] = world.ledger.refused  # type: ignore[attr-defined]
    assert "request" in refused.set["destinations.a"]
    rec = world.doc(KEY)["destinations"]["a"]
    assert rec["status"] == "delivered"
    assert "request" not in rec
    assert "response" not in rec


# --- timeouts ------------------------------------------------------------------


def test_timed_out_send_keeps_the_lease_so_a_redelivery_is_busy() -> None:
    """A send still running at the deadline: retry recorded, lease kept, and the
    redelivery within the lease raises busy without sending again."""
    world = World()
    release = threading.Event()
    started: list[str] = []

    class SlowSender(ScriptedSender):
        def send(self, request: OutboundRequest) -> HttpResponse:
            if request.url == A:
                started.append(request.url)
                release.wait(5)
            return super().send(request)

    world.service.sender = SlowSender()
    world.service.attempt_deadline = 0.3
    try:
        with pytest.raises(RetryableError):
            world.service.process(_purchase(), NOW)
        doc = world.doc(KEY)
        assert doc["lease_until"] == NOW + world.service.lease
        assert doc["destinations"]["a"]["attempts"] == 1
        with pytest.raises(RetryableError, match="in flight"):
            world.service.process(_purchase(), NOW + timedelta(seconds=20))
    finally:
        release.set()
    assert started == [A]


def test_queued_send_cancelled_at_the_deadline_is_not_counted() -> None:
    """With one worker, B waits behind slow A; cancelled, it keeps attempts 0 and
    no first_attempt_at, and the lease is kept for A."""
    release = threading.Event()

    class SlowSender(ScriptedSender):
        def send(self, request: OutboundRequest) -> HttpResponse:
            if request.url == A:
                release.wait(5)
            return super().send(request)

    ledger = InMemoryLedger()
    sender = SlowSender()
    service = FanoutService(
        Config(),
        [FakeDestination("a", A), FakeDestination("b", B)],
        ledger=ledger,
        identities=InMemoryIdentities(),
        sender=sender,
        publisher=RecordingPublisher(),
        max_workers=1,
    )
    service.attempt_deadline = 0.3
    try:
        with pytest.raises(RetryableError):
            service.process(_purchase(), NOW)
    finally:
        release.set()

    rec = ledger.docs[doc_id(KEY)]["destinations"]["b"]
    assert (rec["status"], rec["attempts"], rec["error"]) == (
        "pending",
        0,
        "timeout: not started",
    )
    assert "first_attempt_at" not in rec
    assert sender.sent_to(B) == []


# --- detail, debug identity, dead-letter reason ---------------------------------


def test_ga4_validation_messages_are_all_kept_in_the_record() -> None:
    """Five GA4 validationMessages: all five in the destination record's detail."""
    config = parse_config(
        """
[destinations.ga4]
type = "ga4"
measurement_id = "G-ABC1234567"
endpoint = "http://ga4.test"
consent = []
"""
    )
    sender = ScriptedSender()
    messages = [
        {"fieldPath": f"events[0].params.p{i}", "validationCode": f"CODE_{i}"}
        for i in range(5)
    ]
    body = json.dumps({"validationMessages": messages}).encode()
    sender.script("http://ga4.test", [HttpResponse(200, {}, body)])
    ledger = InMemoryLedger()
    service = FanoutService(
        config,
        build_destinations(config, {"TRUECOUNT_GA4_API_SECRET": "s"}),
        ledger=ledger,
        identities=InMemoryIdentities(),
        sender=sender,
        publisher=RecordingPublisher(),
    )

    service.process(_purchase(client=Client(client_id="1.2")), NOW)

    rec = ledger.docs[doc_id(KEY)]["destinations"]["ga4"]
    assert rec["status"] == "failed"
    assert rec["detail"]["validationMessages"] == messages


def test_large_detail_is_bounded() -> None:
    """A detail of a thousand messages is shortened to fit 2 KiB."""
    world = World()

    class Chatty(FakeDestination):
        def classify(self, response: HttpResponse) -> SendResult:
            return SendResult(
                "delivered", http_status=200, detail={"messages": ["x" * 50] * 1000}
            )

    world.service.destinations = [Chatty("a", A)]
    world.service.process(_purchase(), NOW)

    detail = world.doc(KEY)["destinations"]["a"]["detail"]
    assert detail["truncated"] is True
    assert 0 < len(detail["messages"]) < 1000
    assert len(json.dumps(detail)) <= 2048


def test_debug_browser_event_does_not_write_the_identity_store() -> None:
    """A debug hit with a gclid and email teaches the identity store nothing."""
    world = World()
    event = _purchase(
        "br-1",
        "ga4",
        debug=True,
        client=Client(client_id="1.2"),
        click_ids=ClickIds(gclid="G-debug"),
        identity=Identity(email_sha256="b" * 64),
    )

    world.service.process(event, NOW)
    world.service.process(event.model_copy(update={"debug": False}), NOW)

    assert world.identities.ops.writes > 0  # the real hit does write
    debug_only = World()
    debug_only.service.process(event, NOW)
    assert debug_only.identities.docs == {}
    assert debug_only.identities.ops.writes == 0


def test_dead_letter_reason_is_cut_to_1000_utf8_bytes_on_a_character_boundary() -> None:
    """A reason of 600 two-byte characters: at most 1000 bytes, valid UTF-8."""
    reason = "invalid_event: " + "é" * 600

    value = dead_letter_attributes({"a": "1"}, reason)[DEAD_LETTER_REASON]

    encoded = value.encode("utf-8")
    assert len(encoded) <= 1000
    assert len(encoded) >= 999
    assert reason.startswith(value)
    assert value.endswith("é")


def test_dead_lettered_message_with_a_non_ascii_reason_fits_pubsub() -> None:
    """The published reason attribute fits Pub/Sub's 1024-byte limit."""
    world = World()
    data = json.dumps({"event_id": "x", "name": "ä" * 2000}).encode()

    world.service.handle(
        {"message": {"data": base64.b64encode(data).decode(), "attributes": {}}}, NOW
    )

    [(_, _, attributes)] = world.publisher.messages
    assert len(attributes[DEAD_LETTER_REASON].encode("utf-8")) <= 1024


# --- redrive races and giving up -----------------------------------------------


class _Errors(logging.Handler):
    """Keeps the ERROR records of the fanout logger (it does not propagate)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def errors() -> Iterator[_Errors]:
    handler = _Errors()
    logger = logging.getLogger("truecount.core.fanout")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _run_hourly(world: World, start: datetime, runs: int) -> datetime:
    """Redrive hourly (plus a minute), delivering every republished copy."""
    at = start
    for _ in range(runs):
        at += timedelta(hours=1, minutes=1)
        before = len(_republished(world))
        world.service.redrive(at)
        for message in _republished(world)[before:]:
            world.service.handle(_redelivery(message), at)
    return at


def test_redrive_racing_a_resume_does_not_set_the_entry_due_again(
    errors: _Errors,
) -> None:
    """A Pub/Sub redelivery resumes (and clears deferred_until) between the
    redrive's query and its bump: the bump, decided on a fresh read, leaves the
    entry alone; no republish loop, no "given up" error."""
    world = _deferring_world()
    world.service.process(_purchase(), NOW)
    later = NOW + timedelta(hours=7)
    real_due = world.ledger.due

    def due_then_concurrent_resume(now: datetime, limit: int) -> Any:
        found = real_due(now, limit)
        world.service.process(_purchase(), now)
        return found

    world.ledger.due = due_then_concurrent_resume  # type: ignore[method-assign]
    world.service.redrive(later)
    world.ledger.due = real_due  # type: ignore[method-assign]
    _run_hourly(world, later, 60)

    doc = world.doc(KEY)
    assert doc["destinations"]["a"]["status"] == "delivered"
    assert doc["deferred_until"] is None
    assert len(_republished(world)) == 0
    assert len(world.sender.sent_to(A)) == 2
    assert errors.messages == []


def test_overlapping_redrives_republish_an_entry_once() -> None:
    """Two redrive commands whose queries both saw the entry due: the second
    bump sees it moved ahead and neither writes nor republishes."""
    world = _deferring_world()
    world.service.process(_purchase(), NOW)
    later = NOW + timedelta(hours=7)
    real_due = world.ledger.due

    def due_then_other_redrive(now: datetime, limit: int) -> Any:
        found = real_due(now, limit)
        world.ledger.due = real_due  # type: ignore[method-assign]
        world.service.redrive(now)
        return found

    world.ledger.due = due_then_other_redrive  # type: ignore[method-assign]
    world.service.redrive(later)

    assert len(_republished(world)) == 1
    assert world.doc(KEY)["redrives"] == 1


def test_copy_with_nothing_left_clears_a_stale_deferred_until(
    errors: _Errors,
) -> None:
    """deferred_until set again after delivery (an older redrive's bump): the
    next redrive republishes once, the copy is done and clears the field with
    one write; nothing is sent again, nothing given up."""
    world = _deferring_world()
    world.service.process(_purchase(), NOW)
    later = NOW + timedelta(hours=7)
    world.service.redrive(later)
    world.service.handle(_redelivery(_republished(world)[-1]), later)
    world.ledger.update(
        doc_id(KEY), LedgerWrite(set={"deferred_until": later + timedelta(hours=1)})
    )
    writes = world.ledger.ops.writes

    at = later + timedelta(hours=1, minutes=1)
    world.service.redrive(at)
    result = world.service.handle(_redelivery(_republished(world)[-1]), at)

    assert result.action == "done"
    # the bump, the rejected create, the correction
    assert world.ledger.ops.writes == writes + 3
    assert world.doc(KEY)["deferred_until"] is None
    _run_hourly(world, at, 60)
    assert len(_republished(world)) == 2
    assert (len(world.sender.sent_to(A)), len(world.sender.sent_to(B))) == (2, 1)
    assert errors.messages == []


def test_deferred_destination_removed_from_the_config_is_redriven_once(
    errors: _Errors,
) -> None:
    """The deferred destination leaves the config before it is due: the one
    republished copy is done and clears deferred_until; no loop, no error."""
    world = _deferring_world()
    world.service.process(_purchase(), NOW)
    world.service.destinations = [world.b]

    _run_hourly(world, NOW + timedelta(hours=6), 60)

    doc = world.doc(KEY)
    assert len(_republished(world)) == 1
    assert doc["deferred_until"] is None
    assert doc["redrives"] == 1
    assert errors.messages == []


def test_entry_given_up_after_max_redrives_fails_its_deferred_destination(
    errors: _Errors,
) -> None:
    """Copies that never resume: after MAX_REDRIVES republishes the entry is
    given up and its deferred destination is failed: max_redrives, visible to
    status and retry-failed."""
    world = _deferring_world()
    world.service.process(_purchase(), NOW)
    at = NOW + timedelta(hours=7)
    for _ in range(MAX_REDRIVES + 3):
        world.service.redrive(at)  # the copies are lost
        at += timedelta(hours=1, minutes=1)

    doc = world.doc(KEY)
    rec = doc["destinations"]["a"]
    assert len(_republished(world)) == MAX_REDRIVES
    assert (rec["status"], rec["error"], rec["deferrals"]) == (
        "failed",
        "max_redrives",
        1,
    )
    assert "not_before" not in rec
    assert doc["deferred_until"] is None
    assert doc["destinations"]["b"]["status"] == "delivered"
    assert errors.messages == [
        "destination a: failed",
        f"redrive: ledger entry {doc_id(KEY)} given up (max_redrives)",
    ]
    assert reopen_failed(doc, "a", at) is not None


def test_entry_with_an_invalid_stored_event_fails_as_invalid_stored_event() -> None:
    """A stored event that no longer validates: nothing republished, the
    deferred destination failed: invalid_stored_event."""
    world = _deferring_world()
    world.service.process(_purchase(), NOW)
    world.ledger.update(doc_id(KEY), LedgerWrite(set={"event": '{"name": 1}'}))

    world.service.redrive(NOW + timedelta(hours=7))

    doc = world.doc(KEY)
    assert _republished(world) == []
    assert doc["destinations"]["a"]["status"] == "failed"
    assert doc["destinations"]["a"]["error"] == "invalid_stored_event"
    assert doc["deferred_until"] is None
