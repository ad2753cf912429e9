"""Ledger decisions: pure.

One document per business event, ``ledger/{sha256(dedup_key)}``. This module
builds the first-sight document and, when the document already exists, decides
what an incoming event does and which mutation records it. The store applies the
mutation (``LedgerStore``); nothing here does I/O or reads the clock.

Actions:

* ``deliver``: first sight; this event owns delivery (``create()`` won).
* ``hold``: first sight of a browser event under ``truth = "backend"``: kept as
  context, not delivered.
* ``merge``: a backend event takes over a held browser event's key: delivered
  with the browser context filled in. Applied in a transaction.
* ``resume``: the delivering event redelivered: try only the destinations not
  yet done. Takes a lease in a transaction so two copies never send at once.
* ``duplicate``: another event for a key already owned: recorded, not delivered.
* ``done``: nothing left to do (already delivered or already recorded): ack.
* ``busy``: another invocation holds the lease and is delivering: retry later.

Deferred destinations: a destination whose platform asked to wait longer than
Pub/Sub's backoff (Google Ads ``TOO_RECENT_EVENT``) stays ``pending`` with
``not_before``; the entry keeps the delivery event (``event``) and
``deferred_until`` (the earliest ``not_before``), so that a redrive can find it
(``LedgerStore.due``) and republish the event once it is due. Until then a
redelivery leaves it alone. A copy with nothing left to do corrects a stale
``deferred_until`` (see ``decide``); an entry given up by the redrive has its
deferred destinations failed (:func:`give_up`).

Re-delivery of failures (``truecount retry-failed``): :func:`reopen_failed`
puts a ``failed`` destination back to ``pending`` with ``not_before = now`` and
sets ``deferred_until = now``, so that the redrive republishes the kept event
and the resume path delivers that destination only.

Document shape (see ``docs/fanout.md``)::

    dedup_key, name, truth, event_id (first), delivery_event_id (None = held),
    browser_event_id, transaction_id, lead_id, debug, occurred_at,
    sources {source: [{event_id, at}]}, event_ids [every event_id seen],
    context {flat field: value},
    duplicates [{event_id, source, at, added {field: value}}],
    destinations {id: {status, attempts, updated_at, reason?, error?,
                       http_status?, request?, response?, ...}},
    stitched {field: key kind}, attempts, lease_until,
    event (canonical JSON of the delivery event: written by the create and
    replaced by a merge; absent on held entries and on entries written before
    it was kept at first sight), deferred_until?,
    created_at, updated_at, expire_at
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar

from truecount.core.stitch import extract_context, missing_from
from truecount.models.event import Event

COLLECTION = "ledger"

PENDING = "pending"
DELIVERED = "delivered"
SKIPPED = "skipped"
FAILED = "failed"
FINAL_STATUSES: frozenset[str] = frozenset({DELIVERED, SKIPPED, FAILED})
#: ``reason`` prefix of a deferred destination (``deferred:TOO_RECENT_EVENT``)
DEFERRED_PREFIX = "deferred:"

#: duplicates recorded per key at most; later ones are only logged, so that a
#: storm of copies cannot push the document towards Firestore's 1 MiB limit
MAX_DUPLICATES = 100

Action = Literal["deliver", "hold", "merge", "resume", "duplicate", "done", "busy"]
Truth = Literal["first", "backend"]
T = TypeVar("T")


@dataclass(frozen=True)
class LedgerWrite:
    """A mutation of one ledger document, as data.

    Attributes:
        set: dotted field path -> value. Path parts are fixed names, sources and
            destination ids (snake_case), never free text.
        append: dotted field path -> values added to an array if absent
            (Firestore ``ArrayUnion``).
    """

    set: Mapping[str, Any] = field(default_factory=dict)
    append: Mapping[str, Sequence[Any]] = field(default_factory=dict)


class InvalidWriteError(Exception):
    """The store refused a write as invalid (e.g. a document over 1 MiB).

    Adapters raise it for the backend's ``InvalidArgument``; retrying the same
    write cannot succeed, a smaller one may.
    """


class LedgerStore(Protocol):
    """Where ledger documents live (Firestore in production).

    Every method raises ``truecount.errors.RetryableError`` on contention or a
    transient backend error, so that Pub/Sub redelivers.
    """

    def create(self, doc_id: str, doc: Mapping[str, Any]) -> bool:
        """Create the document if absent; False when it already exists."""
        ...

    def get(self, doc_id: str) -> dict[str, Any] | None:
        """Read the document, or None."""
        ...

    def update(self, doc_id: str, write: LedgerWrite) -> None:
        """Apply a mutation to an existing document (one write, no read)."""
        ...

    def transact(
        self,
        doc_id: str,
        fn: Callable[[dict[str, Any] | None], tuple[LedgerWrite | None, T]],
    ) -> T:
        """Read the document, let ``fn`` decide, apply its write atomically."""
        ...

    def due(self, now: datetime, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """Entries whose ``deferred_until <= now`` (at most ``limit``), with ids."""
        ...


@dataclass(frozen=True)
class Decision:
    """What an event does with an existing (or just created) ledger entry.

    Attributes:
        action: see the module docstring.
        write: the mutation to apply, if any.
        transactional: the write must be applied in a transaction on a fresh
            read (``merge``, ``resume``).
        context: flat context to fill the event's missing fields from.
        browser_event_id: the browser copy's event_id, when known.
        statuses: the destinations' records so far (attempt counts, done ones).
        attempts: fanout attempts recorded so far for this key.
        reason: a short explanation for logs.
        stored_context: the entry's ``context`` as stored, when known (the
            status write leaves it alone when the delivered context equals it).
        event_stored: the entry already keeps the delivery event (``event``).
    """

    action: Action
    write: LedgerWrite | None = None
    transactional: bool = False
    context: Mapping[str, Any] = field(default_factory=dict)
    browser_event_id: str | None = None
    statuses: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    attempts: int = 0
    reason: str = ""
    stored_context: Mapping[str, Any] | None = None
    event_stored: bool = False

    @property
    def delivers(self) -> bool:
        """Whether this event goes on to the destinations."""
        return self.action in ("deliver", "merge", "resume")


def event_json(event: Event) -> str:
    """The canonical JSON a ledger entry keeps of its delivery event (``event``).

    The event is already PII-hashed at the edge; this is the Pub/Sub message
    body, so the redrive can republish it as is.
    """
    return event.to_json_bytes().decode()


def pending_record(now: datetime) -> dict[str, Any]:
    """A destination's record before its first attempt."""
    return {"status": PENDING, "attempts": 0, "updated_at": now}


def new_entry(
    event: Event,
    truth: Truth,
    destination_ids: Iterable[str],
    *,
    now: datetime,
    ttl: timedelta,
    lease: timedelta,
) -> tuple[dict[str, Any], Decision]:
    """The document a first-sight event creates, and what it then does.

    Args:
        event: the incoming event, dedup key set.
        truth: the rule's policy.
        destination_ids: the destinations that accept this event.
        now: the current time.
        ttl: how long the entry lives (``fanout.ledger_ttl_days``).
        lease: how long the creator may deliver before a redelivered copy may
            take over (it normally releases it sooner, with its status write).

    Returns:
        The document for ``create()`` and the decision (``deliver`` or ``hold``).
    """
    hold = truth == "backend" and event.is_browser
    destinations = {} if hold else {d: pending_record(now) for d in destination_ids}
    doc: dict[str, Any] = {
        "dedup_key": event.dedup_key,
        "name": event.name,
        "truth": truth,
        "event_id": event.event_id,
        "delivery_event_id": None if hold else event.event_id,
        "browser_event_id": event.event_id if event.is_browser else None,
        "transaction_id": event.commerce.transaction_id if event.commerce else None,
        "lead_id": (event.lead.lead_id if event.lead else None)
        or event.identity.lead_id,
        "debug": event.debug,
        "occurred_at": event.occurred_at,
        "sources": {event.source: [{"event_id": event.event_id, "at": now}]},
        "event_ids": [event.event_id],
        "context": extract_context(event),
        "duplicates": [],
        "destinations": destinations,
        "stitched": {},
        "attempts": 0,
        "lease_until": None if hold else now + lease,
        "created_at": now,
        "updated_at": now,
        "expire_at": now + ttl,
    }
    if not hold:
        # kept at first sight (part of the create, no extra write) so that a
        # deferral can be redriven and a failure re-delivered later
        doc["event"] = event_json(event)
    if hold:
        decision = Decision("hold", reason="browser event held for the backend event")
    else:
        decision = Decision(
            "deliver",
            statuses=destinations,
            browser_event_id=doc["browser_event_id"],
            reason="first sight",
            stored_context=doc["context"],
            event_stored=True,
        )
    return doc, decision


def seen_event_ids(doc: Mapping[str, Any]) -> set[str]:
    """Every event_id the entry has recorded, over all sources."""
    out: set[str] = {str(e) for e in doc.get("event_ids") or ()}
    for entries in (doc.get("sources") or {}).values():
        for entry in entries or ():
            if isinstance(entry, Mapping) and entry.get("event_id"):
                out.add(str(entry["event_id"]))
    return out


def held_context(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The entry's context, completed from what recorded duplicates added."""
    context = dict(doc.get("context") or {})
    for dup in doc.get("duplicates") or ():
        if isinstance(dup, Mapping):
            context.update(missing_from(context, dup.get("added") or {}))
    return context


def _todo(
    statuses: Mapping[str, Mapping[str, Any]], destination_ids: Iterable[str]
) -> list[str]:
    return [
        d
        for d in destination_ids
        if (statuses.get(d) or {}).get("status", PENDING) not in FINAL_STATUSES
    ]


def is_due(record: Mapping[str, Any], now: datetime) -> bool:
    """Whether a destination may be tried now: not done, and not deferred past
    ``now`` (its ``not_before``)."""
    if record.get("status", PENDING) in FINAL_STATUSES:
        return False
    not_before = record.get("not_before")
    return not_before is None or not_before <= now


def deferred_until(statuses: Mapping[str, Mapping[str, Any]]) -> datetime | None:
    """The earliest ``not_before`` of the pending destinations, or None."""
    times = [
        r["not_before"]
        for r in statuses.values()
        if r.get("status", PENDING) == PENDING and r.get("not_before") is not None
    ]
    return min(times) if times else None


def _done(
    doc: Mapping[str, Any],
    statuses: Mapping[str, Mapping[str, Any]],
    destination_ids: Sequence[str],
    now: datetime,
    reason: str,
) -> Decision:
    """``done``, correcting a stale ``deferred_until`` if there is one.

    The stored value must be what the statuses of the destinations that still
    exist and accept the event imply; otherwise (a redrive's bump that lost a
    race, a deferred destination removed from the config) the redrive would
    republish the event forever. The correction is applied in a transaction,
    and only when the stored value is stale: the common path writes nothing.
    """
    live = {d: statuses[d] for d in destination_ids if d in statuses}
    implied = deferred_until(live)
    if doc.get("deferred_until") == implied:
        return Decision("done", reason=reason)
    write = LedgerWrite(set={"deferred_until": implied, "updated_at": now})
    return Decision(
        "done",
        write,
        transactional=True,
        reason=f"{reason} (stale deferred_until corrected)",
    )


def decide(
    doc: Mapping[str, Any],
    event: Event,
    truth: Truth,
    destination_ids: Sequence[str],
    *,
    now: datetime,
    lease: timedelta,
) -> Decision:
    """Decide what an event does with an existing ledger entry.

    Call it on a plain read first; when the decision is ``transactional``, call
    it again inside the transaction on the fresh document and apply that one.

    Args:
        doc: the existing document.
        event: the incoming event, dedup key set.
        truth: the rule's policy.
        destination_ids: the destinations that accept this event now.
        now: the current time.
        lease: how long a delivering invocation holds the entry.

    Returns:
        The decision, with the mutation to apply.
    """
    event_id = event.event_id
    statuses: dict[str, Mapping[str, Any]] = dict(doc.get("destinations") or {})
    attempts = int(doc.get("attempts") or 0)
    browser_id = doc.get("browser_event_id")
    if doc.get("delivery_event_id") == event_id:
        todo = _todo(statuses, destination_ids)
        if not todo:
            return _done(
                doc, statuses, destination_ids, now, "every destination is done"
            )
        if not any(is_due(statuses.get(d) or {}, now) for d in todo):
            # only deferred destinations are left: the redrive republishes
            # the event once they are due
            return _done(
                doc,
                statuses,
                destination_ids,
                now,
                "deferred destinations are not due yet",
            )
        lease_until = doc.get("lease_until")
        if lease_until is not None and lease_until > now:
            return Decision("busy", reason="another attempt is in flight")
        write = LedgerWrite(set={"lease_until": now + lease, "updated_at": now})
        return Decision(
            "resume",
            write,
            transactional=True,
            context=held_context(doc),
            browser_event_id=browser_id,
            statuses=statuses,
            attempts=attempts,
            reason="redelivered: resuming the destinations not done",
            stored_context=dict(doc.get("context") or {}),
            event_stored=bool(doc.get("event")),
        )
    if event_id in seen_event_ids(doc):
        return Decision("done", reason="already recorded")
    source_entry = {"event_id": event_id, "at": now}
    if truth == "backend" and not event.is_browser and not doc.get("delivery_event_id"):
        fresh = {d: pending_record(now) for d in destination_ids}
        write = LedgerWrite(
            set={
                "delivery_event_id": event_id,
                "destinations": fresh,
                "lease_until": now + lease,
                "merged_at": now,
                "updated_at": now,
                # the merged event replaces the held one as the delivery event
                "event": event_json(event),
            },
            append={f"sources.{event.source}": [source_entry], "event_ids": [event_id]},
        )
        return Decision(
            "merge",
            write,
            transactional=True,
            context=held_context(doc),
            browser_event_id=browser_id,
            statuses=fresh,
            attempts=attempts,
            reason="backend event merged with the held browser context",
            stored_context=dict(doc.get("context") or {}),
            event_stored=True,
        )
    if len(doc.get("duplicates") or ()) >= MAX_DUPLICATES:
        return Decision("done", reason="duplicate (not recorded: too many)")
    added = missing_from(held_context(doc), extract_context(event))
    updates: dict[str, Any] = {"updated_at": now}
    if event.is_browser and not browser_id:
        updates["browser_event_id"] = event_id
    write = LedgerWrite(
        set=updates,
        append={
            "duplicates": [
                {
                    "event_id": event_id,
                    "source": event.source,
                    "at": now,
                    "added": added,
                }
            ],
            f"sources.{event.source}": [source_entry],
            "event_ids": [event_id],
        },
    )
    return Decision("duplicate", write, reason="another event owns this key")


def status_write(
    records: Mapping[str, Mapping[str, Any]],
    context: Mapping[str, Any],
    stitched: Mapping[str, str],
    attempts: int,
    now: datetime,
    *,
    stored_context: Mapping[str, Any] | None = None,
    previous: Mapping[str, Mapping[str, Any]] | None = None,
    lease_until: datetime | None = None,
    event_json: str | None = None,
) -> LedgerWrite:
    """The one write after an attempt: every destination's record at once.

    Only what the attempt changed: the records of the destinations tried, and
    the context only when it differs from the stored one. ``deferred_until``
    is written when a destination is (or was) deferred: the earliest
    ``not_before`` left, or None once none is.

    Args:
        records: destination id -> its new record.
        context: the delivered event's context (the merged context).
        stitched: field -> identity key kind it was filled from.
        attempts: the fanout attempt count, this one included.
        now: the current time.
        stored_context: the entry's context as stored, when known; None writes
            ``context`` whatever it holds.
        previous: every destination's record before this attempt.
        lease_until: keep the lease until then (a send that timed out may
            still be running); None releases it.
        event_json: the delivery event's canonical JSON, to keep for a later
            redrive (only when a destination is deferred and it is not kept
            yet).

    Returns:
        The mutation; it releases the lease unless ``lease_until`` is given.
    """
    updates: dict[str, Any] = {f"destinations.{d}": dict(r) for d, r in records.items()}
    if stored_context is None or dict(context) != dict(stored_context):
        updates["context"] = dict(context)
    updates.update(
        {"attempts": attempts, "lease_until": lease_until, "updated_at": now}
    )
    if stitched:
        updates["stitched"] = dict(stitched)
    before = dict(previous or {})
    merged = {**before, **records}
    if any(
        r.get("not_before") is not None for r in (*before.values(), *merged.values())
    ):
        updates["deferred_until"] = deferred_until(merged)
    if event_json is not None:
        updates["event"] = event_json
    return LedgerWrite(set=updates)


#: failures kept per destination in ``previous_failures`` (newest last)
MAX_PREVIOUS_FAILURES = 10
#: fields of a failed record kept in its ``previous_failures`` entry
_FAILURE_FIELDS = (
    "error",
    "http_status",
    "attempts",
    "deferrals",
    "first_attempt_at",
    "request_id",
)


def failure_summary(record: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """What ``previous_failures`` keeps of a failed destination record.

    Args:
        record: ``destinations.<id>`` with ``status = "failed"``.
        now: when it is re-opened.

    Returns:
        Its error, HTTP status, attempts, when it failed (``failed_at``, the
        record's ``updated_at``) and ``reopened_at``; no request or response.
    """
    summary = {k: record[k] for k in _FAILURE_FIELDS if record.get(k) is not None}
    summary["failed_at"] = record.get("updated_at")
    summary["reopened_at"] = now
    return summary


def reopen_failed(
    doc: Mapping[str, Any], destination: str, now: datetime
) -> LedgerWrite | None:
    """The single write that re-opens a failed destination for re-delivery.

    The destination goes back to ``pending`` with ``not_before = now`` and no
    attempt counted; its failure moves to ``previous_failures`` (the last
    ``MAX_PREVIOUS_FAILURES``). ``deferred_until = now`` makes the next
    redrive republish the stored event, and the resume path then delivers
    this destination only: every other one keeps its record, so nothing
    delivered or skipped is sent again. ``redrives`` restarts at 0.

    Args:
        doc: the ledger document.
        destination: the destination id.
        now: the current time.

    Returns:
        The mutation, or None when the destination is not ``failed`` or the
        entry keeps no delivery event to republish.
    """
    record = (doc.get("destinations") or {}).get(destination)
    if not isinstance(record, Mapping) or record.get("status") != FAILED:
        return None
    if not doc.get("event"):
        return None
    history = [
        dict(f) for f in record.get("previous_failures") or () if isinstance(f, Mapping)
    ]
    history.append(failure_summary(record, now))
    reopened: dict[str, Any] = {
        "status": PENDING,
        "attempts": 0,
        "updated_at": now,
        "not_before": now,
        "reason": "retry_failed",
        "previous_failures": history[-MAX_PREVIOUS_FAILURES:],
    }
    return LedgerWrite(
        set={
            f"destinations.{destination}": reopened,
            "deferred_until": now,
            "redrives": 0,
            "updated_at": now,
        }
    )


#: fields of a deferred record dropped when it is given up
_DEFERRAL_FIELDS = ("not_before", "retryable", "retry_after", "reason")
#: ``error`` of a deferred destination given up after ``MAX_REDRIVES`` redrives
MAX_REDRIVES_ERROR = "max_redrives"
#: ``error`` of a deferred destination whose entry keeps no valid event
INVALID_STORED_EVENT_ERROR = "invalid_stored_event"


def give_up(doc: Mapping[str, Any], error: str, now: datetime) -> LedgerWrite:
    """The write that gives up redriving an entry.

    Every deferred destination (``pending`` with ``not_before``) becomes
    ``failed`` with ``error``, recorded like any failure (attempts, deferrals,
    first attempt and ``previous_failures`` kept), so that status and
    ``truecount retry-failed`` see it; ``deferred_until`` is cleared.

    Args:
        doc: the ledger document, read in the same transaction.
        error: ``max_redrives`` or ``invalid_stored_event``.
        now: the current time.

    Returns:
        The mutation.
    """
    updates: dict[str, Any] = {"deferred_until": None, "updated_at": now}
    for dest, record in given_up_destinations(doc).items():
        failed = {k: v for k, v in record.items() if k not in _DEFERRAL_FIELDS}
        failed.update({"status": FAILED, "error": error, "updated_at": now})
        updates[f"destinations.{dest}"] = failed
    return LedgerWrite(set=updates)


def given_up_destinations(doc: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The deferred destinations of an entry (``pending`` with ``not_before``)."""
    return {
        str(d): r
        for d, r in (doc.get("destinations") or {}).items()
        if isinstance(r, Mapping)
        and r.get("status", PENDING) == PENDING
        and r.get("not_before") is not None
    }
