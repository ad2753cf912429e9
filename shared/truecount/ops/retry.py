"""Re-deliver what failed: ``truecount retry-failed``.

When a destination is down longer than fanout's retry budget, its record ends
``failed`` (``max_attempts: http 503``, ``expired``, ``http 401``) and the
message is acked: nothing is dead-lettered, so ``replay`` cannot help. Once the
cause is fixed, :func:`retry_failed`:

1. reads the ledger entries updated within ``--since`` (the ``status`` query)
   and keeps those whose destination is ``failed`` (and, with ``--error``, of
   that error class: :func:`truecount.ops.queries.retry_candidates`);
2. re-opens each with one update (:func:`truecount.core.ledger.reopen_failed`):
   the destination back to ``pending`` with ``not_before = now`` and its
   attempts reset, the old failure kept in ``previous_failures``, and
   ``deferred_until = now``. The update has an ``update_time`` precondition, so
   an entry that changed since it was read is left alone (``changed``);
3. sends the redrive command once. fanout then republishes each entry's stored
   event, and the resume path delivers that destination only: the ledger keeps
   every delivered or skipped destination from being sent twice.

The loop is pure over two ports (:class:`LedgerEdits` and a ``redrive``
callable); :func:`publish_redrive` is the Pub/Sub edge, shared with
``truecount redrive``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from truecount.core.ledger import LedgerWrite, reopen_failed
from truecount.ops.queries import RetryCandidate, ledger_doc_id, retry_candidates
from truecount.ops.store import UPDATE_TIME_FIELD

#: what happened to one failed entry
Outcome = Literal["reopened", "would_reopen", "no_event", "busy", "changed", "over_max"]
NO_EVENT_NOTE = "cannot re-deliver (no stored event)"


class LedgerEdits(Protocol):
    """Where the re-opening write goes (Firestore: ``ops.store.LedgerEditor``)."""

    def update_if_unchanged(
        self, doc_id: str, write: LedgerWrite, update_time: Any
    ) -> bool:
        """Apply ``write`` unless the document changed since ``update_time``."""
        ...


@dataclass
class RetryEntry:
    """One failed entry and what the run did with it."""

    doc_id: str
    dedup_key: str
    name: str
    event_id: str
    error_class: str
    error: str
    attempts: int
    failed_at: datetime | None
    outcome: Outcome
    note: str = ""


@dataclass
class RetryResult:
    """What one ``retry-failed`` run did."""

    destination: str
    since: datetime
    dry_run: bool
    entries: list[RetryEntry] = field(default_factory=list)
    #: the redrive command's Pub/Sub message id (None: not sent)
    redrive_message_id: str | None = None
    #: why the redrive command was not sent, when it should have been
    redrive_error: str | None = None

    @property
    def counts(self) -> Counter[str]:
        """Entries per outcome."""
        return Counter(e.outcome for e in self.entries)

    @property
    def by_error(self) -> Counter[str]:
        """Re-opened (or, dry run, to be re-opened) entries per error class."""
        return Counter(
            e.error_class
            for e in self.entries
            if e.outcome in ("reopened", "would_reopen")
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "destination": self.destination,
            "since": self.since.isoformat(),
            "dry_run": self.dry_run,
            "counts": dict(sorted(self.counts.items())),
            "by_error": dict(sorted(self.by_error.items())),
            "redrive_message_id": self.redrive_message_id,
            "redrive_error": self.redrive_error,
            "entries": [
                {
                    **asdict(e),
                    "failed_at": e.failed_at.isoformat() if e.failed_at else None,
                }
                for e in self.entries
            ],
        }


def _entry(c: RetryCandidate, outcome: Outcome, note: str = "") -> RetryEntry:
    return RetryEntry(
        doc_id=c.doc_id,
        dedup_key=c.dedup_key,
        name=c.name,
        event_id=c.event_id,
        error_class=c.error_class,
        error=c.error,
        attempts=c.attempts,
        failed_at=c.failed_at,
        outcome=outcome,
        note=note or c.note,
    )


def retry_failed(
    docs: Iterable[Mapping[str, Any]],
    edits: LedgerEdits,
    redrive: Callable[[], str],
    *,
    destination: str,
    since: datetime,
    now: datetime,
    error: str | None = None,
    dry_run: bool = False,
    max_entries: int | None = None,
    include_debug: bool = False,
) -> RetryResult:
    """Re-open the failed deliveries of one destination, then redrive once.

    Args:
        docs: ledger documents updated since ``since`` (with ``_id`` and,
            for the precondition, ``_update_time``).
        edits: applies the re-opening writes.
        redrive: sends the redrive command; returns its message id. Called
            once, only when at least one entry was re-opened.
        destination: the destination id.
        since: the window start (reported back).
        now: the current time (``not_before`` and ``deferred_until``).
        error: only this error class (``http_503``, ``max_attempts``, ...).
        dry_run: report what would be re-opened; write and send nothing.
        max_entries: re-open at most this many (oldest failures first).
        include_debug: also debug (test) events.

    Returns:
        Every failed entry found, with its outcome. A redrive publish that
        failed is in ``redrive_error``: the entries stay re-opened, and the
        next scheduled redrive (every 15 minutes) republishes them.
    """
    result = RetryResult(destination, since, dry_run)
    by_id = {ledger_doc_id(doc): doc for doc in docs}
    candidates = retry_candidates(
        by_id.values(), destination, now, error=error, include_debug=include_debug
    )
    taken = 0
    for c in candidates:
        if c.verdict != "reopen":
            result.entries.append(_entry(c, c.verdict))
            continue
        if max_entries is not None and taken >= max_entries:
            result.entries.append(_entry(c, "over_max", f"over --max {max_entries}"))
            continue
        taken += 1
        if dry_run:
            result.entries.append(_entry(c, "would_reopen"))
            continue
        doc = by_id.get(c.doc_id) or {}
        write = reopen_failed(doc, destination, now)
        if write is None:  # pragma: no cover - retry_candidates checked it
            result.entries.append(_entry(c, "no_event", NO_EVENT_NOTE))
            continue
        if edits.update_if_unchanged(c.doc_id, write, doc.get(UPDATE_TIME_FIELD)):
            result.entries.append(_entry(c, "reopened"))
        else:
            result.entries.append(
                _entry(c, "changed", "the entry changed since it was read: run again")
            )
    if result.counts["reopened"]:
        try:
            result.redrive_message_id = redrive()
        except Exception as exc:
            result.redrive_error = f"{type(exc).__name__}: {exc}"
    return result


def publish_redrive(project: str, topic: str) -> str:
    """Publish the redrive command (``{}`` with ``truecount_command=redrive``).

    Args:
        project: the Google Cloud project.
        topic: the events topic fanout listens to.

    Returns:
        The Pub/Sub message id.

    Raises:
        truecount.errors.PublishError: the publish failed.
    """
    from truecount.adapters.pubsub import PubSubPublisher
    from truecount.core.fanout import COMMAND_ATTRIBUTE, REDRIVE_COMMAND

    publisher = PubSubPublisher(project, topic)
    try:
        return publisher.publish_raw(topic, b"{}", {COMMAND_ATTRIBUTE: REDRIVE_COMMAND})
    finally:
        publisher.close()
