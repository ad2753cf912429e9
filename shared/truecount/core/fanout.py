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
   destinations not done are tried again.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from truecount.config import Config
from truecount.core import ledger as ledger_core
from truecount.core.consent import consent_block_reason
from truecount.core.dedup import dedup_key, doc_id
from truecount.core.ledger import Decision, LedgerStore, Truth
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
RESPONSE_EXCERPT_BYTES = 512
_ATTRIBUTE_VALUE_LIMIT = 1000
_LOG_LEVEL = {
    "delivered": logging.INFO,
    "skipped": logging.INFO,
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
    out[DEAD_LETTER_REASON] = reason[:_ATTRIBUTE_VALUE_LIMIT]
    return out


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
    status: str  # delivered | skipped | failed | retry
    attempts: int
    reason: str | None = None
    error: str | None = None
    http_status: int | None = None
    request_id: str | None = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()
    attempted: bool = False

    @property
    def ledger_status(self) -> str:
        """The status kept in the ledger: a retryable failure stays pending."""
        return ledger_core.PENDING if self.status == "retry" else self.status

    def record(self, previous: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """The destination's ledger record after this attempt."""
        rec: dict[str, Any] = {
            "status": self.ledger_status,
            "attempts": self.attempts,
            "updated_at": now,
        }
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
            "request": self.request,
            "response": self.response,
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


class FanoutService:
    """Processes Pub/Sub messages; every collaborator is injected.

    Args:
        config: the validated config.
        destinations: the built destinations.
        ledger: the ledger store.
        identities: the identity store.
        sender: sends built requests (adds secrets).
        publisher: publishes dead letters.
        max_workers: threads of the instance's send pool, shared by the
            messages handled at once; default 8 per destination (functions
            serve several requests at once). Threads start on demand.
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
        max_workers: int | None = None,
    ) -> None:
        self.config = config
        self.destinations = list(destinations)
        self.ledger = ledger
        self.identities = identities
        self.sender = sender
        self.publisher = publisher
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
            if event.is_browser:
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
        todo = [
            d
            for d in targets
            if (decision.statuses.get(d.id) or {}).get("status", ledger_core.PENDING)
            not in ledger_core.FINAL_STATUSES
        ]
        outcomes = self._run(event, todo, decision.statuses, now)
        records = {
            o.destination: o.record(decision.statuses.get(o.destination) or {}, now)
            for o in outcomes
        }
        write = ledger_core.status_write(
            records,
            extract_context(event),
            stitched,
            decision.attempts + 1,
            now,
            stored_context=decision.stored_context,
        )
        self.ledger.update(ledger_id, write)
        return self._finish(event, decision.action, outcomes, stitched)

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
        outcomes = self._run(event, targets, {}, now)
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
    ) -> list[Outcome]:
        if not targets:
            return []
        futures = {
            self._pool.submit(
                self._attempt, dest, event, statuses.get(dest.id) or {}, now
            ): dest
            for dest in targets
        }
        done, _ = concurrent.futures.wait(futures, timeout=self.attempt_deadline)
        outcomes: list[Outcome] = []
        for future, dest in futures.items():
            if future in done:
                outcomes.append(future.result())
                continue
            # not finished in time: recorded as a retry; one still queued never
            # starts (no send after the status write)
            future.cancel()
            attempts = int((statuses.get(dest.id) or {}).get("attempts") or 0) + 1
            outcomes.append(
                Outcome(
                    dest.id,
                    "retry",
                    attempts,
                    error=f"timeout: over {self.attempt_deadline:g}s",
                    attempted=True,
                )
            )
        return outcomes

    def _attempt(
        self,
        dest: Destination,
        event: Event,
        previous: Mapping[str, Any],
        now: datetime,
    ) -> Outcome:
        """One destination, one attempt. Never raises."""
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
        result = settle(
            result, attempts, max_attempts_for(dest, self.config.fanout.max_attempts)
        )
        return Outcome(
            dest.id,
            result.status,
            attempts,
            error=result.error,
            http_status=result.http_status,
            request_id=result.request_id,
            request=described,
            response=response_excerpt,
            notes=notes,
            attempted=True,
        )

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
