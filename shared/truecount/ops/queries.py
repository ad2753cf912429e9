"""Pure aggregation over ledger documents: status, trace, reconcile, and the
selection of ``retry-failed``.

Everything here takes plain dicts, as ``ledger/{sha256(dedup_key)}`` documents
come out of Firestore (see ``truecount.core.ledger`` for the shape), and
returns plain dataclasses. No SDK, no clock: callers pass ``since``/``now``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from truecount.core.dedup import doc_id
from truecount.models.event import BACKEND_SOURCES, BROWSER_SOURCES, Event

DELIVERED = "delivered"
SKIPPED = "skipped"
FAILED = "failed"
PENDING = "pending"

#: conversion names reconciled when the caller names none
DEFAULT_CONVERSIONS: tuple[str, ...] = (
    "purchase",
    "refund",
    "generate_lead",
    "qualify_lead",
    "close_convert_lead",
)

#: identifiers whose coverage ``reconcile`` reports, in display order
IDENTIFIERS: tuple[str, ...] = (
    "email_sha256",
    "phone_sha256",
    "fbc",
    "fbp",
    "gclid",
    "client_id+session_id",
)

#: dedup-key prefixes tried for a bare transaction or lead id, in order
ID_PREFIXES: tuple[str, ...] = (
    "purchase",
    "refund",
    "lead",
    "qualify_lead",
    "close_convert_lead",
    "event",
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Side = Literal["both", "backend_only", "browser_only", "none"]


def parse_duration(text: str) -> timedelta:
    """Parse ``30m``, ``24h``, ``7d``, ``2w`` (or ``90s``) into a timedelta.

    Args:
        text: a number and one unit letter.

    Returns:
        The duration.

    Raises:
        ValueError: not a positive duration in that form.
    """
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 30m, 24h or 7d")
    unit = _UNITS[match.group(2).lower()]
    return timedelta(**{unit: float(match.group(1))})


# --- status ------------------------------------------------------------------


def error_class(record: Mapping[str, Any]) -> str:
    """A short class for a failed destination record.

    ``http_<status>`` when the platform answered, else the error's first word
    (``expired``, ``build``, ``timeout``, ``send``); errors after the attempt
    limit are prefixed ``max_attempts/``.

    Args:
        record: ``destinations.<id>`` of a ledger document.

    Returns:
        e.g. ``http_400``, ``max_attempts/http_503``, ``expired``, ``unknown``.
    """
    error = str(record.get("error") or "").strip()
    prefix = ""
    if error.startswith("max_attempts"):
        prefix = "max_attempts/"
        error = error.partition(":")[2].strip()
    status = record.get("http_status")
    if isinstance(status, int) and status > 0:
        return f"{prefix}http_{status}"
    token = _TOKEN.match(error)
    return prefix + (token.group(0).lower() if token else "unknown")


def skip_reason(record: Mapping[str, Any]) -> str:
    """The reason of a skipped record, without detail after a colon."""
    reason = str(record.get("reason") or "unknown")
    return reason.split(":", 1)[0].strip() or "unknown"


def event_sources(doc: Mapping[str, Any]) -> list[str]:
    """Every source that sent this business event, once per event_id, sorted."""
    out: list[str] = []
    for source, entries in (doc.get("sources") or {}).items():
        ids = {
            str(e.get("event_id"))
            for e in entries or ()
            if isinstance(e, Mapping) and e.get("event_id")
        }
        out.extend([str(source)] * max(len(ids), 1 if entries else 0))
    return sorted(out)


def source_pair(doc: Mapping[str, Any]) -> str | None:
    """The dedup-hit label of a document, e.g. ``ga4+stripe``.

    Returns:
        The distinct sources joined by ``+`` (a source repeated when it sent
        the event twice with different event_ids, e.g. ``stripe+stripe``), or
        None when only one event was seen.
    """
    sources = event_sources(doc)
    if len(sources) < 2:
        return None
    distinct = sorted(set(sources))
    if len(distinct) == 1:
        distinct = distinct * 2
    return "+".join(distinct)


@dataclass
class DestinationStatus:
    """Counts of one destination over the documents in the window."""

    destination: str
    delivered: int = 0
    pending: int = 0
    retrying: int = 0
    #: pending until a later time (Google Ads TOO_RECENT_EVENT), redriven then
    deferred: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """Every record counted."""
        return (
            self.delivered
            + self.pending
            + sum(self.skipped.values())
            + sum(self.failed.values())
        )


@dataclass
class StatusReport:
    """What ``truecount status`` shows."""

    since: datetime
    documents: int = 0
    held: int = 0
    debug: int = 0
    destinations: dict[str, DestinationStatus] = field(default_factory=dict)
    dedup_hits: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "since": self.since.isoformat(),
            "documents": self.documents,
            "held": self.held,
            "debug": self.debug,
            "destinations": {
                d: {
                    "delivered": s.delivered,
                    "pending": s.pending,
                    "retrying": s.retrying,
                    "deferred": s.deferred,
                    "skipped": dict(s.skipped),
                    "failed": dict(s.failed),
                }
                for d, s in sorted(self.destinations.items())
            },
            "dedup_hits": dict(sorted(self.dedup_hits.items())),
        }


def status_report(
    docs: Iterable[Mapping[str, Any]], since: datetime, include_debug: bool = False
) -> StatusReport:
    """Aggregate ledger documents into per-destination counts and dedup hits.

    Args:
        docs: ledger documents updated since ``since``.
        since: the window start (reported back).
        include_debug: count debug events too (they are left out by default).

    Returns:
        The report. ``held`` counts browser events waiting for their backend
        event (no destination yet).
    """
    report = StatusReport(since=since)
    for doc in docs:
        if doc.get("debug") and not include_debug:
            report.debug += 1
            continue
        report.documents += 1
        if not doc.get("delivery_event_id"):
            report.held += 1
        pair = source_pair(doc)
        if pair:
            report.dedup_hits[pair] += 1
        for dest, record in (doc.get("destinations") or {}).items():
            if not isinstance(record, Mapping):
                continue
            row = report.destinations.setdefault(dest, DestinationStatus(dest))
            status = record.get("status", PENDING)
            if status == DELIVERED:
                row.delivered += 1
            elif status == SKIPPED:
                row.skipped[skip_reason(record)] += 1
            elif status == FAILED:
                row.failed[error_class(record)] += 1
            else:
                row.pending += 1
                if record.get("retryable"):
                    row.retrying += 1
                elif record.get("not_before") is not None:
                    row.deferred += 1
    return report


# --- retry-failed --------------------------------------------------------------

#: what ``retry-failed`` does with a failed destination
RetryVerdict = Literal["reopen", "no_event", "busy"]


def error_class_matches(klass: str, wanted: str | None) -> bool:
    """Whether a failure's error class matches ``--error``.

    ``wanted`` matches the whole class or one ``/``-separated side of it:
    ``max_attempts`` and ``http_503`` both match ``max_attempts/http_503``.

    Args:
        klass: from :func:`error_class`.
        wanted: the filter, or None for every class.

    Returns:
        True when it matches (always without a filter).
    """
    if not wanted:
        return True
    wanted = wanted.strip().lower()
    return klass == wanted or wanted in klass.split("/")


@dataclass
class RetryCandidate:
    """One ledger entry whose destination failed, and what ``retry-failed``
    does with it."""

    doc_id: str
    dedup_key: str
    name: str
    event_id: str
    error_class: str
    error: str
    attempts: int
    failed_at: datetime | None
    verdict: RetryVerdict
    #: why it cannot be re-delivered (empty when it can)
    note: str = ""


def ledger_doc_id(doc: Mapping[str, Any]) -> str:
    """The document's id: ``_id`` as the store set it, else derived from its
    dedup key (``debug:`` twin for debug events)."""
    if doc.get("_id"):
        return str(doc["_id"])
    key = str(doc.get("dedup_key") or "")
    return doc_id(f"debug:{key}" if doc.get("debug") else key)


def _stored_event_id(doc: Mapping[str, Any]) -> str | None:
    raw = doc.get("event")
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return Event.from_json_bytes(raw).event_id
    except ValueError:  # pydantic's ValidationError is a ValueError
        return None


def retry_candidates(
    docs: Iterable[Mapping[str, Any]],
    destination: str,
    now: datetime,
    error: str | None = None,
    include_debug: bool = False,
) -> list[RetryCandidate]:
    """The entries whose ``destination`` is ``failed``, oldest failure first.

    Each gets a verdict: ``reopen``; ``no_event`` when the entry keeps no
    valid delivery event (written before fanout kept it at first sight), so
    nothing can be republished; ``busy`` while an invocation holds the lease
    (its status write could hide the re-opening: run again later).

    Args:
        docs: ledger documents (``_id`` set by the store, else the id is
            derived from ``dedup_key``).
        destination: the destination id.
        now: the current time (for the lease).
        error: only failures of this error class (see
            :func:`error_class_matches`).
        include_debug: also debug (test) events.

    Returns:
        The candidates.
    """
    out: list[RetryCandidate] = []
    for doc in docs:
        if doc.get("debug") and not include_debug:
            continue
        record = (doc.get("destinations") or {}).get(destination)
        if not isinstance(record, Mapping) or record.get("status") != FAILED:
            continue
        klass = error_class(record)
        if not error_class_matches(klass, error):
            continue
        key = str(doc.get("dedup_key") or "")
        delivery_id = doc.get("delivery_event_id")
        verdict: RetryVerdict = "reopen"
        note = ""
        stored = _stored_event_id(doc)
        lease_until = doc.get("lease_until")
        if stored is None or stored != delivery_id:
            verdict, note = "no_event", "cannot re-deliver (no stored event)"
        elif lease_until is not None and lease_until > now:
            verdict, note = "busy", "another attempt is in flight: run again later"
        failed_at = record.get("updated_at")
        out.append(
            RetryCandidate(
                doc_id=ledger_doc_id(doc),
                dedup_key=key,
                name=str(doc.get("name") or ""),
                event_id=str(delivery_id or doc.get("event_id") or ""),
                error_class=klass,
                error=str(record.get("error") or ""),
                attempts=int(record.get("attempts") or 0),
                failed_at=failed_at if isinstance(failed_at, datetime) else None,
                verdict=verdict,
                note=note,
            )
        )
    out.sort(key=lambda c: (c.failed_at is None, c.failed_at or now, c.dedup_key))
    return out


# --- reconcile ---------------------------------------------------------------


def sides(doc: Mapping[str, Any]) -> Side:
    """Whether a business event was seen by the backend, the browser, or both."""
    seen = set((doc.get("sources") or {}).keys())
    backend = bool(seen & BACKEND_SOURCES)
    browser = bool(seen & BROWSER_SOURCES)
    if backend and browser:
        return "both"
    if backend:
        return "backend_only"
    if browser:
        return "browser_only"
    return "none"


def has_identifier(context: Mapping[str, Any], identifier: str) -> bool:
    """Whether a merged context carries an identifier of :data:`IDENTIFIERS`.

    ``email_sha256`` also counts ``email_sha256_google``; ``phone_sha256`` also
    ``phone_sha256_e164``; ``client_id+session_id`` needs both.
    """
    if identifier == "client_id+session_id":
        return bool(context.get("client_id")) and bool(context.get("session_id"))
    if identifier == "email_sha256":
        return bool(context.get("email_sha256") or context.get("email_sha256_google"))
    if identifier == "phone_sha256":
        return bool(context.get("phone_sha256") or context.get("phone_sha256_e164"))
    return bool(context.get(identifier))


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


@dataclass
class ConversionShares:
    """Backend/browser agreement of one conversion name."""

    name: str
    total: int = 0
    both: int = 0
    backend_only: int = 0
    browser_only: int = 0

    @property
    def share_both(self) -> float:
        """Confirmed by the backend and seen in the browser."""
        return _share(self.both, self.total)

    @property
    def share_backend_only(self) -> float:
        """Confirmed by the backend, never seen in the browser."""
        return _share(self.backend_only, self.total)

    @property
    def share_browser_only(self) -> float:
        """Seen in the browser, never confirmed by the backend."""
        return _share(self.browser_only, self.total)


@dataclass
class Coverage:
    """Identifier coverage of the events one destination received."""

    destination: str
    delivered: int = 0
    counts: Counter[str] = field(default_factory=Counter)

    def share(self, identifier: str) -> float:
        """Share of delivered events carrying ``identifier``."""
        return _share(self.counts[identifier], self.delivered)


@dataclass
class ReconcileReport:
    """What ``truecount reconcile`` shows."""

    since: datetime
    conversions: list[ConversionShares] = field(default_factory=list)
    coverage: list[Coverage] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``), shares included."""
        return {
            "since": self.since.isoformat(),
            "conversions": [
                {
                    **asdict(c),
                    "share_both": c.share_both,
                    "share_backend_only": c.share_backend_only,
                    "share_browser_only": c.share_browser_only,
                }
                for c in self.conversions
            ],
            "coverage": [
                {
                    "destination": c.destination,
                    "delivered": c.delivered,
                    "counts": {i: c.counts[i] for i in IDENTIFIERS},
                    "shares": {i: c.share(i) for i in IDENTIFIERS},
                }
                for c in self.coverage
            ],
        }


def reconcile_report(
    docs: Iterable[Mapping[str, Any]],
    since: datetime,
    names: Sequence[str] = DEFAULT_CONVERSIONS,
    include_debug: bool = False,
) -> ReconcileReport:
    """Per conversion name, who saw it; per destination, identifier coverage.

    Args:
        docs: ledger documents created since ``since``.
        since: the window start (reported back).
        names: the conversion names; other documents are ignored.
        include_debug: count debug events too.

    Returns:
        Conversions in ``names`` order (only those seen), destinations sorted.
    """
    wanted = set(names)
    rows: dict[str, ConversionShares] = {}
    cover: dict[str, Coverage] = {}
    for doc in docs:
        name = str(doc.get("name") or "")
        if name not in wanted or (doc.get("debug") and not include_debug):
            continue
        row = rows.setdefault(name, ConversionShares(name))
        row.total += 1
        side = sides(doc)
        if side == "both":
            row.both += 1
        elif side == "backend_only":
            row.backend_only += 1
        elif side == "browser_only":
            row.browser_only += 1
        context = doc.get("context") or {}
        for dest, record in (doc.get("destinations") or {}).items():
            if not isinstance(record, Mapping) or record.get("status") != DELIVERED:
                continue
            cov = cover.setdefault(dest, Coverage(dest))
            cov.delivered += 1
            for identifier in IDENTIFIERS:
                if has_identifier(context, identifier):
                    cov.counts[identifier] += 1
    return ReconcileReport(
        since=since,
        conversions=[rows[n] for n in names if n in rows],
        coverage=[cover[d] for d in sorted(cover)],
    )


# --- trace -------------------------------------------------------------------


def candidate_doc_ids(arg: str) -> list[tuple[str, str]]:
    """Ledger document ids to try for a ``trace`` argument, in order.

    A dedup key (it contains ``:``) is tried as is and as its debug key; a bare
    id is tried as a transaction or lead id (``purchase:<id>``, ``refund:<id>``,
    ``lead:<id>``, ...) and as the default key of an event id (``event:<id>``).

    Args:
        arg: a dedup key, transaction id, lead id or event id.

    Returns:
        ``(dedup_key, doc_id)`` pairs.
    """
    keys = [arg] if ":" in arg else [f"{p}:{arg}" for p in ID_PREFIXES]
    keys = [k for key in keys for k in (key, f"debug:{key}")]
    return [(k, doc_id(k)) for k in keys]


@dataclass(frozen=True)
class Sighting:
    """One event of a business event, as the ledger recorded it."""

    source: str
    event_id: str
    at: datetime | None
    role: str  # delivered | held | duplicate | recorded


@dataclass(frozen=True)
class Merged:
    """One field filled from elsewhere: the identity store, or a later copy."""

    field: str
    origin: str  # identity:<kind> | duplicate:<source>
    value: Any


@dataclass(frozen=True)
class DestinationTrace:
    """One destination's record."""

    destination: str
    status: str
    attempts: int
    reason: str | None
    error: str | None
    http_status: int | None
    request: Any
    response: Any
    updated_at: datetime | None
    delivered_at: datetime | None
    first_attempt_at: datetime | None


@dataclass(frozen=True)
class Story:
    """The full story of one business event."""

    dedup_key: str
    name: str
    truth: str | None
    debug: bool
    transaction_id: str | None
    lead_id: str | None
    occurred_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    merged_at: datetime | None
    first_event_id: str | None
    delivery_event_id: str | None
    sightings: list[Sighting]
    merged: list[Merged]
    context: dict[str, Any]
    destinations: list[DestinationTrace]


def mask_ip(value: Any) -> Any:
    """Hide the host part of an IP for display (``203.0.113.x``, ``2001:db8:...``)."""
    text = str(value)
    if "." in text and ":" not in text:
        return text.rsplit(".", 1)[0] + ".x"
    if ":" in text:
        return ":".join(text.split(":")[:3]) + ":..."
    return value


def _as_int(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def story(doc: Mapping[str, Any]) -> Story:
    """Turn a ledger document into the story ``truecount trace`` prints.

    Args:
        doc: one ledger document.

    Returns:
        Sightings in time order, merged fields, context (IP masked) and each
        destination's record, sorted by id.
    """
    delivering = doc.get("delivery_event_id")
    duplicates = {
        str(d.get("event_id"))
        for d in doc.get("duplicates") or ()
        if isinstance(d, Mapping)
    }
    sightings: list[Sighting] = []
    for source, entries in (doc.get("sources") or {}).items():
        for entry in entries or ():
            if not isinstance(entry, Mapping):
                continue
            eid = str(entry.get("event_id") or "")
            if eid and eid == delivering:
                role = "delivered"
            elif eid in duplicates:
                role = "duplicate"
            elif not delivering:
                role = "held"
            else:
                role = "recorded"
            sightings.append(Sighting(str(source), eid, entry.get("at"), role))
    sightings.sort(key=lambda s: (s.at is None, s.at or datetime.min, s.source))
    context = {
        k: (mask_ip(v) if k == "ip" else v)
        for k, v in sorted((doc.get("context") or {}).items())
    }
    merged = [
        Merged(f, f"identity:{kind}", context.get(f))
        for f, kind in sorted((doc.get("stitched") or {}).items())
    ]
    for dup in doc.get("duplicates") or ():
        if isinstance(dup, Mapping):
            merged.extend(
                Merged(
                    f, f"duplicate:{dup.get('source')}", mask_ip(v) if f == "ip" else v
                )
                for f, v in sorted((dup.get("added") or {}).items())
            )
    dests = [
        DestinationTrace(
            destination=str(d),
            status=str(r.get("status", PENDING)),
            attempts=int(r.get("attempts") or 0),
            reason=r.get("reason"),
            error=r.get("error"),
            http_status=_as_int(r.get("http_status")),
            request=r.get("request"),
            response=r.get("response"),
            updated_at=r.get("updated_at"),
            delivered_at=r.get("delivered_at"),
            first_attempt_at=r.get("first_attempt_at"),
        )
        for d, r in sorted((doc.get("destinations") or {}).items())
        if isinstance(r, Mapping)
    ]
    return Story(
        dedup_key=str(doc.get("dedup_key") or ""),
        name=str(doc.get("name") or ""),
        truth=doc.get("truth"),
        debug=bool(doc.get("debug")),
        transaction_id=doc.get("transaction_id"),
        lead_id=doc.get("lead_id"),
        occurred_at=doc.get("occurred_at"),
        created_at=doc.get("created_at"),
        updated_at=doc.get("updated_at"),
        merged_at=doc.get("merged_at"),
        first_event_id=doc.get("event_id"),
        delivery_event_id=delivering,
        sightings=sightings,
        merged=merged,
        context=context,
        destinations=dests,
    )
