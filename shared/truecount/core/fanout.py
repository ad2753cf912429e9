"""Fanout: claim the dedup key, stitch identity, deliver to every destination.

The orchestration over injected ports (``LedgerStore``, ``IdentityStore``,
``HttpSender``, ``RawPublisher``) and destinations; the caller passes ``now``.
No SDK is imported here.

Per message:

1. Decode the Pub/Sub envelope and validate the event. A message that cannot be
   parsed or validated goes to the dead-letter topic with its reason and is acked.
2. Claim ``ledger/{sha256(dedup_key)}`` with ``create()`` (see ``core.ledger``).
   ``idempotence = "none"`` skips the ledger entirely (at-least-once).
3. Identity: browser events upsert their click ids under their identity keys;
   delivering backend events look theirs up and fill what they lack.
4. Destinations run concurrently: consent, age window, build, authorize, send,
   classify. Debug events are built and recorded but not sent, unless the
   destination has a test mode.
5. One ledger write records every destination. If any destination needs a retry,
   raise ``RetryableError`` after that write: Pub/Sub redelivers, and only the
   destinations not done are tried again. A destination whose platform asks to
   wait longer than Pub/Sub's backoff (``fanout.defer_threshold_seconds``, e.g.
   Google Ads ``TOO_RECENT_EVENT``) is *deferred* instead: kept pending with
   ``not_before`` and the message acked; the ledger keeps the event (written
   by the create), so :meth:`FanoutService.redrive` (a
   ``truecount_command=redrive`` message, sent by Cloud Scheduler) republishes
   it once it is due. ``truecount retry-failed``
   re-opens failed destinations the same way.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from truecount.config import Config
from truecount.core import ledger as ledger_core
from truecount.core.consent import consent_block_reason
from truecount.core.dedup import dedup_key, doc_id
from truecount.core.ledger import (
    DEFERRED_PREFIX,
    Decision,
    InvalidWriteError,
    LedgerStore,
    LedgerWrite,
    Truth,
)
from truecount.core.retry import is_expired, max_attempts_for, settle
from truecount.core.stitch import (
    IdentityStore,
    extract_context,
    fill_missing,
    identity_keys,
    identity_record,
    merge_identities,
)
from truecount.errors import DeliveryError, RetryableError
from truecount.log import get_logger, log_context
from truecount.models.event import Event, error_fields
from truecount.ports import Destination, HttpSender, RawPublisher, SendResult, Skip

DEAD_LETTER_REASON = "truecount_dead_letter_reason"
BROWSER_EVENT_ID_PARAM = "truecount_browser_event_id"
#: Pub/Sub attribute of a command message (``redrive``), which has no event
COMMAND_ATTRIBUTE = "truecount_command"
REDRIVE_COMMAND = "redrive"
#: attribute on an event the redrive republished (lets other subscribers,
#: e.g. the BigQuery subscription, filter the copies out)
REDRIVEN_ATTRIBUTE = "truecount_redrive"
RESPONSE_EXCERPT_BYTES = 512
#: JSON bytes of a ``SendResult.detail`` kept in a destination record
DETAIL_LIMIT_BYTES = 2048
#: ledger entries republished by one redrive
REDRIVE_LIMIT = 500
#: a redriven entry is due again this late if its resume never happened
REDRIVE_RETRY = timedelta(hours=1)
#: redrives of one entry before it is given up (logged as an error)
MAX_REDRIVES = 48
#: tries of the status write, and the first backoff between them (jittered)
STATUS_WRITE_TRIES = 3
STATUS_WRITE_BACKOFF_SECONDS = 0.2
#: Pub/Sub's limit is 1024 bytes per attribute value
_ATTRIBUTE_VALUE_LIMIT = 1000
_BULKY_FIELDS = ("request", "response", "detail")
_LOG_LEVEL = {
    "delivered": logging.INFO,
    "skipped": logging.INFO,
    "deferred": logging.INFO,
    "retry": logging.WARNING,
    "failed": logging.ERROR,
}

log = get_logger(__name__)


class InvalidMessageError(Exception):
    """A Pub/Sub message that can never be processed; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Message:
    """A decoded Pub/Sub message."""

    data: bytes
    attributes: dict[str, str]
    message_id: str | None


def decode_envelope(envelope: Any) -> Message:
    """Decode the CloudEvent data of ``messagePublished`` (or a raw push body).

    Args:
        envelope: ``{"message": {"data": <base64>, "attributes": {...},
            "messageId": ...}, "subscription": ...}``.

    Returns:
        The message bytes, attributes and id.

    Raises:
        InvalidMessageError: the envelope has no message, or ``data`` is not base64.
    """
    message = envelope.get("message") if isinstance(envelope, Mapping) else None
    if not isinstance(message, Mapping):
        raise InvalidMessageError("invalid_envelope: no message")
    raw_attributes = message.get("attributes") or {}
    attributes = (
        {str(k): str(v) for k, v in raw_attributes.items()}
        if isinstance(raw_attributes, Mapping)
        else {}
    )
    message_id = message.get("messageId") or message.get("message_id")
    encoded = message.get("data") or ""
    try:
        data = base64.b64decode(encoded, validate=True) if encoded else b""
    except (binascii.Error, ValueError, TypeError):
        raise InvalidMessageError(
            "invalid_base64: message.data is not base64"
        ) from None
    return Message(data, attributes, str(message_id) if message_id else None)


def parse_event(data: bytes) -> Event:
    """Validate a message body as a canonical event.

    Raises:
        InvalidMessageError: empty, not JSON, or not a valid event; the reason names
            the bad fields (paths and messages, never values).
    """
    if not data:
        raise InvalidMessageError("empty_message: no data")
    try:
        return Event.from_json_bytes(data)
    except ValidationError as exc:
        # parse the JSON a second time only to tell bad JSON from a bad event
        try:
            json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise InvalidMessageError(
                "invalid_json: the body is not UTF-8 JSON"
            ) from None
        fields = error_fields(exc.errors())
        detail = "; ".join(f"{f['path']}: {f['message']}" for f in fields)
        raise InvalidMessageError(f"invalid_event: {detail}") from None


def dead_letter_attributes(
    attributes: Mapping[str, str], reason: str
) -> dict[str, str]:
    """The original attributes plus ``truecount_dead_letter_reason``."""
    out = dict(attributes)
    out[DEAD_LETTER_REASON] = truncate_utf8(reason, _ATTRIBUTE_VALUE_LIMIT)
    return out


def truncate_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


def bounded_detail(
    detail: Mapping[str, Any], limit: int = DETAIL_LIMIT_BYTES
) -> dict[str, Any]:
    """A ``SendResult.detail`` as plain JSON data of at most ``limit`` bytes.

    Lists are shortened first (``truncated: true`` says so); what still does
    not fit is kept as a JSON excerpt.
    """

    def size(value: Any) -> int:
        return len(json.dumps(value, ensure_ascii=False, default=str).encode())

    def trim(value: Any, keep: int) -> Any:
        if isinstance(value, list):
            return [trim(v, keep) for v in value[:keep]]
        if isinstance(value, dict):
            return {k: trim(v, keep) for k, v in value.items()}
        return value

    data: dict[str, Any] = json.loads(
        json.dumps(dict(detail), ensure_ascii=False, default=str)
    )
    if size(data) <= limit:
        return data
    for keep in (20, 10, 5, 3, 1):
        trimmed = {**trim(data, keep), "truncated": True}
        if size(trimmed) <= limit:
            return trimmed
    text = json.dumps(data, ensure_ascii=False, default=str)
    return {"excerpt": truncate_utf8(text, limit - 64), "truncated": True}


def effective_key(event: Event, config: Config) -> str:
    """The event's dedup key: as published, or computed from its rule when the
    producer left the default ``event:<event_id>``."""
    if event.dedup_key and event.dedup_key != f"event:{event.event_id}":
        return event.dedup_key
    return dedup_key(event, config.rule(event.name))


@dataclass
class Outcome:
    """The result of one destination for one attempt."""

    destination: str
    status: str  # delivered | skipped | failed | retry | deferred
    attempts: int
    reason: str | None = None
    error: str | None = None
    http_status: int | None = None
    request_id: str | None = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()
    attempted: bool = False
    #: the platform's own detail (validation messages, per-row errors)
    detail: Mapping[str, Any] | None = None
    retry_after: float | None = None
    #: deferred: not to be tried before then
    not_before: datetime | None = None
    #: times this destination was deferred; None keeps the previous count
    deferrals: int | None = None
    #: timed out while sending: the request may still be on its way
    in_flight: bool = False

    @property
    def ledger_status(self) -> str:
        """The status kept in the ledger: a retryable or deferred one stays
        pending."""
        if self.status in ("retry", "deferred"):
            return ledger_core.PENDING
        return self.status

    def record(self, previous: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """The destination's ledger record after this attempt."""
        rec: dict[str, Any] = {
            "status": self.ledger_status,
            "attempts": self.attempts,
            "updated_at": now,
        }
        deferrals = (
            self.deferrals
            if self.deferrals is not None
            else int(previous.get("deferrals") or 0)
        )
        if deferrals:
            rec["deferrals"] = deferrals
        if previous.get("previous_failures"):
            # the audit trail of ``truecount retry-failed`` survives the retry
            rec["previous_failures"] = list(previous["previous_failures"])
        if previous.get("first_attempt_at") is not None:
            rec["first_attempt_at"] = previous["first_attempt_at"]
        elif self.attempted:
            rec["first_attempt_at"] = now
        if self.status == "delivered":
            rec["delivered_at"] = now
        if self.status == "retry":
            rec["retryable"] = True
        optional = {
            "reason": self.reason,
            "error": self.error,
            "http_status": self.http_status,
            "request_id": self.request_id,
            "retry_after": self.retry_after,
            "not_before": self.not_before,
            "request": self.request,
            "response": self.response,
            "detail": bounded_detail(self.detail) if self.detail else None,
            "notes": list(self.notes) or None,
        }
        rec.update({k: v for k, v in optional.items() if v is not None})
        return rec


@dataclass
class FanoutResult:
    """What one message did (for tests and the local stack)."""

    action: str
    dedup_key: str = ""
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    stitched: dict[str, str] = field(default_factory=dict)
    event: Event | None = None
    reason: str = ""


def _excerpt(body: bytes) -> str:
    return body[:RESPONSE_EXCERPT_BYTES].decode("utf-8", errors="replace")


def _defer_code(result: SendResult) -> str:
    """What a deferral waits for: the platform's first error code, else the
    error text (``deferred:TOO_RECENT_EVENT``, ``deferred:http 429``)."""
    codes = (result.detail or {}).get("codes")
    if isinstance(codes, list | tuple) and codes and isinstance(codes[0], str):
        return codes[0]
    return result.error or "retry_after"


def _stored_event(raw: Any) -> Event | None:
    """The delivery event a ledger entry keeps for its redrive, if valid."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return Event.from_json_bytes(raw)
    except ValidationError:
        return None


@dataclass(frozen=True)
class RedriveStep:
    """What the redrive does with one entry, decided on a fresh read.

    Attributes:
        event: the stored event to republish; None when there is nothing to do.
        redrives: the entry's redrive count (this one included if republished).
        gave_up: the error the entry was given up with, if it was.
        failed: the destinations marked failed on giving up.
    """

    event: Event | None = None
    redrives: int = 0
    gave_up: str | None = None
    failed: tuple[str, ...] = ()


def _redrive_step(
    doc: Mapping[str, Any] | None, now: datetime
) -> tuple[LedgerWrite | None, RedriveStep]:
    """The redrive's write for one entry (pure; run inside a transaction).

    Nothing when the entry is gone or no longer due (a resume cleared
    ``deferred_until``, another redrive moved it ahead); a give-up when its
    event is invalid or it was redriven ``MAX_REDRIVES`` times; otherwise
    ``deferred_until`` moves ``REDRIVE_RETRY`` ahead and the event is
    republished.
    """
    if doc is None:
        return None, RedriveStep()
    due_at = doc.get("deferred_until")
    redrives = int(doc.get("redrives") or 0)
    if due_at is None or due_at > now:
        return None, RedriveStep(redrives=redrives)
    event = _stored_event(doc.get("event"))
    error = None
    if event is None:
        error = ledger_core.INVALID_STORED_EVENT_ERROR
    elif redrives >= MAX_REDRIVES:
        error = ledger_core.MAX_REDRIVES_ERROR
    if error is not None:
        failed = tuple(sorted(ledger_core.given_up_destinations(doc)))
        write = ledger_core.give_up(doc, error, now)
        return write, RedriveStep(redrives=redrives, gave_up=error, failed=failed)
    write = LedgerWrite(
        set={
            "deferred_until": now + REDRIVE_RETRY,
            "redrives": redrives + 1,
            "updated_at": now,
        }
    )
    return write, RedriveStep(event=event, redrives=redrives + 1)


class FanoutService:
    """Processes Pub/Sub messages; every collaborator is injected.

    Args:
        config: the validated config.
        destinations: the built destinations.
        ledger: the ledger store.
        identities: the identity store.
        sender: sends built requests (adds secrets).
        publisher: publishes dead letters, and redriven events.
        events_topic: the events topic the redrive republishes to (None: no
            redrive).
        max_workers: threads of the instance's send pool, shared by the
            messages handled at once; default 8 per destination (functions
            serve several requests at once). Threads start on demand.
        sleep: waits between tries of the status write (tests pass a no-op).
    """

    def __init__(
        self,
        config: Config,
        destinations: Sequence[Destination],
        *,
        ledger: LedgerStore,
        identities: IdentityStore,
        sender: HttpSender,
        publisher: RawPublisher,
        events_topic: str | None = None,
        max_workers: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.destinations = list(destinations)
        self.ledger = ledger
        self.identities = identities
        self.sender = sender
        self.publisher = publisher
        self.events_topic = events_topic
        self._sleep = sleep
        self.defer_threshold = config.fanout.defer_threshold_seconds
        self.max_workers = max_workers or 8 * max(1, len(self.destinations))
        # one pool per instance: a pool per message started up to one thread
        # per destination for every event
        self._pool = concurrent.futures.ThreadPoolExecutor(self.max_workers, "fanout")
        timeout = config.fanout.http_timeout_seconds
        # authorize may make one request and send another: two timeouts
        self.attempt_deadline = 2 * timeout + 5
        self.lease = timedelta(seconds=self.attempt_deadline + 30)
        self.ttl = timedelta(days=config.fanout.ledger_ttl_days)
        self.identity_ttl = timedelta(days=config.fanout.identity_ttl_days)

    # --- entry ---------------------------------------------------------------

    def handle(self, envelope: Any, now: datetime) -> FanoutResult:
        """Process one ``messagePublished`` payload.

        Args:
            envelope: the CloudEvent data (or raw push body).
            now: the current time.

        Returns:
            What happened. Returning means ack.

        Raises:
            RetryableError: a destination or the store needs a retry (nack).
        """
        attributes: dict[str, str] = {}
        data = b""
        message_id = None
        try:
            message = decode_envelope(envelope)
            attributes, data, message_id = (
                message.attributes,
                message.data,
                message.message_id,
            )
            command = attributes.get(COMMAND_ATTRIBUTE)
            if command == REDRIVE_COMMAND:
                return self.redrive(now)
            if command is not None:
                raise InvalidMessageError(
                    f"unknown_command: {truncate_utf8(command, 64)}"
                )
            event = parse_event(message.data)
        except InvalidMessageError as exc:
            self._dead_letter(data, attributes, exc.reason, message_id)
            return FanoutResult("dead_letter", reason=exc.reason)
        return self.process(event, now)

    def _dead_letter(
        self, data: bytes, attributes: Mapping[str, str], reason: str, mid: str | None
    ) -> None:
        topic = self.config.fanout.dead_letter_topic
        self.publisher.publish_raw(
            topic, data, dead_letter_attributes(attributes, reason)
        )
        log.error(
            "message dead-lettered: %s",
            reason.split(":", 1)[0],
            extra={"reason": reason, "message_id": mid, "outcome": "dead_letter"},
        )

    def redrive(self, now: datetime, limit: int = REDRIVE_LIMIT) -> FanoutResult:
        """Republish the events whose deferred destinations are due.

        Each ledger entry with ``deferred_until <= now`` gets its stored event
        republished to the events topic (same event_id): the resume path then
        delivers the destinations that are due, and the ledger keeps any other
        from being sent twice. Before publishing, ``deferred_until`` moves
        ``REDRIVE_RETRY`` ahead, so an entry whose resume never happens is
        tried again later, at most ``MAX_REDRIVES`` times; then (or when its
        stored event no longer validates) it is given up: its deferred
        destinations become ``failed`` (``max_redrives``,
        ``invalid_stored_event``), where ``truecount retry-failed`` sees them.

        Each entry is bumped in a transaction on a fresh read (one read and
        one write): an entry a concurrent resume or redrive has meanwhile
        cleared or moved ahead is left alone, never set due again.

        Args:
            now: the current time.
            limit: entries handled in one run (the next run takes the rest).

        Returns:
            ``action = "redrive"``; ``reason`` says how many were republished.

        Raises:
            RetryableError: the store or the publish failed (the command is
                redelivered; entries already republished are not due again
                before ``REDRIVE_RETRY``).
        """
        if self.events_topic is None:
            log.error("redrive: no events topic configured")
            return FanoutResult("redrive", reason="no events topic")
        published = 0
        for ledger_id, _ in self.ledger.due(now, limit):
            # the bump is decided on a fresh read in a transaction: a plain
            # update could resurrect a deferred_until that a concurrent resume
            # (or another redrive) has just cleared or moved ahead
            step = self.ledger.transact(
                ledger_id, lambda fresh: _redrive_step(fresh, now)
            )
            if step.gave_up is not None:
                self._log_given_up(ledger_id, step)
                continue
            if step.event is None:
                continue  # no longer due: resumed or redriven meanwhile
            event = step.event
            attributes = {**event.pubsub_attributes(), REDRIVEN_ATTRIBUTE: "1"}
            try:
                self.publisher.publish_raw(
                    self.events_topic, event.to_json_bytes(), attributes
                )
            except Exception as exc:
                raise RetryableError(f"redrive publish: {type(exc).__name__}") from exc
            published += 1
        log.info(
            "redrive: republished %d events",
            published,
            extra={"decision": "redrive", "republished": published},
        )
        return FanoutResult("redrive", reason=f"republished {published}")

    def _log_given_up(self, ledger_id: str, step: RedriveStep) -> None:
        for dest in step.failed:
            log.error(
                "destination %s: failed",
                dest,
                extra={
                    "destination": dest,
                    "outcome": "failed",
                    "error": step.gave_up,
                    "ledger_id": ledger_id,
                },
            )
        log.error(
            "redrive: ledger entry %s given up (%s)",
            ledger_id,
            step.gave_up,
            extra={
                "ledger_id": ledger_id,
                "redrives": step.redrives,
                "error": step.gave_up,
            },
        )

    def process(self, event: Event, now: datetime) -> FanoutResult:
        """Process one validated event (see the module docstring).

        Args:
            event: the canonical event.
            now: the current time.

        Returns:
            What happened.

        Raises:
            RetryableError: a destination or the store needs a retry.
        """
        rule = self.config.rule(event.name)
        key = effective_key(event, self.config)
        if key != event.dedup_key:
            event = event.model_copy(update={"dedup_key": key})
        targets = [d for d in self.destinations if d.accepts(event.name)]
        with log_context(event_id=event.event_id, dedup_key=key):
            if event.is_browser and not event.debug:
                # a test hit must not teach the identity store anything
                self._remember_identity(event, now)
            if not targets:
                # nothing to deliver or hold: a ledger entry would be pure cost
                return FanoutResult("no_destinations", key, event=event)
            if rule.idempotence == "none":
                return self._deliver_without_ledger(event, targets, now)
            truth: Truth = rule.truth or "first"
            return self._deliver_with_ledger(event, truth, targets, now)

    # --- ledger path ---------------------------------------------------------

    def _deliver_with_ledger(
        self, event: Event, truth: Truth, targets: list[Destination], now: datetime
    ) -> FanoutResult:
        # debug events never claim the real key: a test order must not block it
        key = ("debug:" if event.debug else "") + event.dedup_key
        ledger_id = doc_id(key)
        ids = [d.id for d in targets]
        doc, decision = ledger_core.new_entry(
            event, truth, ids, now=now, ttl=self.ttl, lease=self.lease
        )
        if not self.ledger.create(ledger_id, doc):
            decision = self._decide_existing(ledger_id, event, truth, ids, now)
        if not decision.delivers:
            return self._settle_without_delivery(event, decision)
        event = self._prepare(event, decision)
        event, stitched = self._stitch(event, now)
        # done ones are left alone, and so are deferred ones not due yet
        todo = [
            d
            for d in targets
            if ledger_core.is_due(decision.statuses.get(d.id) or {}, now)
        ]
        outcomes = self._run(event, todo, decision.statuses, now)
        records = {
            o.destination: o.record(decision.statuses.get(o.destination) or {}, now)
            for o in outcomes
        }
        deferring = any(o.status == "deferred" for o in outcomes)
        in_flight = any(o.in_flight for o in outcomes)

        def write_for(recs: Mapping[str, Mapping[str, Any]]) -> LedgerWrite:
            return ledger_core.status_write(
                recs,
                extract_context(event),
                stitched,
                decision.attempts + 1,
                now,
                stored_context=decision.stored_context,
                previous=decision.statuses,
                # a send still running keeps redeliveries busy until it ends
                lease_until=now + self.lease if in_flight else None,
                event_json=(
                    ledger_core.event_json(event)
                    if deferring and not decision.event_stored
                    else None
                ),
            )

        slim = {
            d: {k: v for k, v in r.items() if k not in _BULKY_FIELDS}
            for d, r in records.items()
        }
        self._write_status(ledger_id, write_for(records), lambda: write_for(slim))
        return self._finish(event, decision.action, outcomes, stitched)

    def _write_status(
        self, ledger_id: str, write: LedgerWrite, slim: Callable[[], LedgerWrite]
    ) -> None:
        """The status write, tried ``STATUS_WRITE_TRIES`` times in-process.

        A failed status write would make the redelivery send to every
        destination again, so transient failures are retried here first. A
        write the store refuses as invalid (too large) is retried once as
        ``slim()``: the records without their request, response and detail.

        Raises:
            RetryableError: every try failed.
        """
        try:
            self._update_retrying(ledger_id, write)
        except InvalidWriteError:
            log.warning("status write refused as invalid; retrying without excerpts")
            try:
                self._update_retrying(ledger_id, slim())
            except InvalidWriteError as exc:
                raise RetryableError("status write refused as invalid") from exc

    def _update_retrying(self, ledger_id: str, write: LedgerWrite) -> None:
        delay = STATUS_WRITE_BACKOFF_SECONDS
        for attempt in range(1, STATUS_WRITE_TRIES + 1):
            try:
                self.ledger.update(ledger_id, write)
                return
            except InvalidWriteError:
                raise
            except Exception as exc:
                if attempt == STATUS_WRITE_TRIES:
                    raise RetryableError(
                        f"status write failed {attempt} times: {type(exc).__name__}"
                    ) from exc
                log.warning(
                    "status write failed (%s), try %d of %d",
                    type(exc).__name__,
                    attempt,
                    STATUS_WRITE_TRIES,
                )
                self._sleep(delay * (0.5 + random.random()))  # noqa: S311
                delay *= 2

    def _decide_existing(
        self, ledger_id: str, event: Event, truth: Truth, ids: list[str], now: datetime
    ) -> Decision:
        current = self.ledger.get(ledger_id)
        if current is None:
            raise RetryableError("ledger entry vanished between create and read")
        decision = ledger_core.decide(
            current, event, truth, ids, now=now, lease=self.lease
        )
        if decision.transactional:

            def decide_fresh(
                fresh: dict[str, Any] | None,
            ) -> tuple[ledger_core.LedgerWrite | None, Decision]:
                if fresh is None:
                    raise RetryableError("ledger entry vanished in a transaction")
                again = ledger_core.decide(
                    fresh, event, truth, ids, now=now, lease=self.lease
                )
                return again.write, again

            decision = self.ledger.transact(ledger_id, decide_fresh)
        elif decision.write is not None:
            self.ledger.update(ledger_id, decision.write)
        return decision

    def _settle_without_delivery(
        self, event: Event, decision: Decision
    ) -> FanoutResult:
        if decision.action == "busy":
            raise RetryableError(decision.reason)
        log.info(
            "event %s: %s",
            decision.action,
            decision.reason,
            extra={
                "decision": decision.action,
                "event_id": event.event_id,
                "dedup_key": event.dedup_key,
                "source": event.source,
            },
        )
        return FanoutResult(
            decision.action, event.dedup_key, event=event, reason=decision.reason
        )

    def _prepare(self, event: Event, decision: Decision) -> Event:
        """Fill from the ledger context; pass on the browser copy's event_id."""
        if decision.context:
            event, _ = fill_missing(event, decision.context)
        browser_id = decision.browser_event_id
        if browser_id and browser_id != event.event_id:
            params = {**event.params, BROWSER_EVENT_ID_PARAM: browser_id}
            event = event.model_copy(update={"params": params})
        return event

    # --- no-ledger path ------------------------------------------------------

    def _deliver_without_ledger(
        self, event: Event, targets: list[Destination], now: datetime
    ) -> FanoutResult:
        event, stitched = self._stitch(event, now)
        outcomes = self._run(event, targets, {}, now, can_defer=False)
        return self._finish(event, "deliver", outcomes, stitched)

    # --- identity ------------------------------------------------------------

    def _remember_identity(self, event: Event, now: datetime) -> None:
        keys = identity_keys(event)
        record = identity_record(event)
        if keys and record:
            self.identities.upsert(keys, record, now, now + self.identity_ttl)

    def _stitch(self, event: Event, now: datetime) -> tuple[Event, dict[str, str]]:
        """Backend events: fill missing ids from the identity store."""
        if event.is_browser:
            return event, {}
        keys = identity_keys(event)
        if not keys:
            return event, {}
        values, origin = merge_identities(self.identities.lookup(keys, now))
        event, filled = fill_missing(event, values)
        return event, {name: origin[name] for name in filled}

    # --- destinations --------------------------------------------------------

    def _run(
        self,
        event: Event,
        targets: list[Destination],
        statuses: Mapping[str, Mapping[str, Any]],
        now: datetime,
        can_defer: bool = True,
    ) -> list[Outcome]:
        if not targets:
            return []
        futures = {
            self._pool.submit(
                self._attempt, dest, event, statuses.get(dest.id) or {}, now, can_defer
            ): dest
            for dest in targets
        }
        concurrent.futures.wait(futures, timeout=self.attempt_deadline)
        outcomes: list[Outcome] = []
        for future, dest in futures.items():
            before = int((statuses.get(dest.id) or {}).get("attempts") or 0)
            if future.cancel():
                # still queued: it never starts, so nothing was sent
                outcomes.append(
                    Outcome(dest.id, "retry", before, error="timeout: not started")
                )
            elif future.done():
                outcomes.append(future.result())
            else:
                # still sending: recorded as a retry, and the status write keeps
                # the lease so that no redelivery sends again meanwhile
                outcomes.append(
                    Outcome(
                        dest.id,
                        "retry",
                        before + 1,
                        error=f"timeout: over {self.attempt_deadline:g}s",
                        attempted=True,
                        in_flight=True,
                    )
                )
        return outcomes

    def _attempt(
        self,
        dest: Destination,
        event: Event,
        previous: Mapping[str, Any],
        now: datetime,
        can_defer: bool = True,
    ) -> Outcome:
        """One destination, one attempt. Never raises.

        ``can_defer`` is False without a ledger (nothing could redrive it): a
        long ``retry_after`` is then a plain retry.
        """
        before = int(previous.get("attempts") or 0)
        blocked = consent_block_reason(
            event.consent, dest.required_consent, dest.unknown_consent
        )
        if blocked:
            return Outcome(dest.id, "skipped", before, reason=blocked)
        if is_expired(event.occurred_at, dest.max_age, now):
            return Outcome(dest.id, "failed", before, error="expired")
        try:
            built = dest.build(event, now)
        except Exception as exc:  # a bug in a destination must not loop forever
            return Outcome(
                dest.id, "failed", before, error=f"build: {type(exc).__name__}"
            )
        if isinstance(built, Skip):
            return Outcome(dest.id, "skipped", before, reason=built.reason)
        described = built.describe()
        notes = tuple(getattr(built, "notes", ()) or ())
        if event.debug and not getattr(dest, "test_mode", False):
            return Outcome(
                dest.id,
                "skipped",
                before,
                reason="debug",
                request=described,
                notes=notes,
            )
        attempts = before + 1
        response_excerpt: dict[str, Any] | None = None
        try:
            request = dest.authorize(built, self.sender, now)
            response = self.sender.send(request)
        except DeliveryError as exc:
            result = SendResult(
                "retry" if exc.retryable else "failed",
                http_status=exc.status_code,
                error=str(exc),
                request_id=exc.request_id,
            )
        except Exception as exc:  # transport surprises: try again later
            result = SendResult("retry", error=f"send: {type(exc).__name__}")
        else:
            response_excerpt = {
                "status": response.status,
                "body": _excerpt(response.body),
            }
            result = dest.classify(response)
        limit = max_attempts_for(dest, self.config.fanout.max_attempts)
        common: dict[str, Any] = {
            "http_status": result.http_status,
            "request_id": result.request_id,
            "request": described,
            "response": response_excerpt,
            "notes": notes,
            "attempted": True,
            "detail": result.detail,
            "retry_after": result.retry_after,
        }
        wait = result.retry_after
        if (
            can_defer
            and result.status == "retry"
            and wait is not None
            and wait > self.defer_threshold
        ):
            # longer than Pub/Sub's backoff: park it, the redrive brings it back
            deferrals = int(previous.get("deferrals") or 0)
            if deferrals >= limit:
                error = f"max_deferrals: {result.error or 'deferred'}"
                return Outcome(dest.id, "failed", before, error=error, **common)
            return Outcome(
                dest.id,
                "deferred",
                before,  # a deferral is not a failed attempt
                reason=DEFERRED_PREFIX + _defer_code(result),
                error=result.error,
                not_before=now + timedelta(seconds=wait),
                deferrals=deferrals + 1,
                **common,
            )
        result = settle(result, attempts, limit)
        return Outcome(dest.id, result.status, attempts, error=result.error, **common)

    def _finish(
        self,
        event: Event,
        action: str,
        outcomes: list[Outcome],
        stitched: dict[str, str],
    ) -> FanoutResult:
        for o in outcomes:
            log.log(
                _LOG_LEVEL.get(o.status, logging.INFO),
                "destination %s: %s",
                o.destination,
                o.status,
                extra={
                    "destination": o.destination,
                    "outcome": o.status,
                    "event_id": event.event_id,
                    "dedup_key": event.dedup_key,
                    "reason": o.reason,
                    "error": o.error,
                    "http_status": o.http_status,
                    "attempts": o.attempts,
                },
            )
        result = FanoutResult(
            action,
            event.dedup_key,
            {o.destination: o for o in outcomes},
            stitched,
            event,
        )
        retrying = [o.destination for o in outcomes if o.status == "retry"]
        if retrying:
            raise RetryableError(f"retry pending for: {', '.join(sorted(retrying))}")
        return result
