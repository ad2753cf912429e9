"""In-memory fakes of the fanout ports, for fast unit tests of pure logic only.

Firestore behaviour (preconditions, transactions, contention) is proven against
the real emulator in ``tests/integration``; these fakes only mirror the
semantics the core relies on: ``create`` is first-writer-wins, ``update`` sets
dotted paths and unions arrays, ``transact`` is atomic. Each fake counts its
operations so that tests can assert the cost of a path.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from truecount.core.ledger import LedgerWrite
from truecount.core.stitch import identity_doc_id
from truecount.errors import DeliveryError
from truecount.models.event import Event
from truecount.ports import (
    ConsentType,
    HttpResponse,
    HttpSender,
    OutboundRequest,
    SendResult,
    Skip,
)

T = TypeVar("T")


def apply_write(doc: dict[str, Any], write: LedgerWrite) -> None:
    """Apply a ``LedgerWrite`` to a plain dict, as Firestore would."""
    for path, value in write.set.items():
        parent, leaf = _walk(doc, path)
        parent[leaf] = copy.deepcopy(value)
    for path, values in write.append.items():
        parent, leaf = _walk(doc, path)
        current = parent.get(leaf)
        items = list(current) if isinstance(current, list) else []
        for value in values:
            if value not in items:
                items.append(copy.deepcopy(value))
        parent[leaf] = items


def _walk(doc: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    parts = path.split(".")
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    return node, parts[-1]


@dataclass
class OpCounts:
    """Operations a fake store served."""

    reads: int = 0
    writes: int = 0
    transactions: int = 0


class InMemoryLedger:
    """A ``LedgerStore`` in a dict."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.ops = OpCounts()
        self._lock = threading.RLock()

    def create(self, doc_id: str, doc: Mapping[str, Any]) -> bool:
        """Create if absent (one write attempt)."""
        with self._lock:
            self.ops.writes += 1
            if doc_id in self.docs:
                return False
            self.docs[doc_id] = copy.deepcopy(dict(doc))
            return True

    def get(self, doc_id: str) -> dict[str, Any] | None:
        """Read a copy."""
        with self._lock:
            self.ops.reads += 1
            doc = self.docs.get(doc_id)
            return copy.deepcopy(doc) if doc is not None else None

    def update(self, doc_id: str, write: LedgerWrite) -> None:
        """Apply a mutation; the document must exist."""
        with self._lock:
            self.ops.writes += 1
            if doc_id not in self.docs:
                raise KeyError(doc_id)
            apply_write(self.docs[doc_id], write)

    def transact(
        self,
        doc_id: str,
        fn: Callable[[dict[str, Any] | None], tuple[LedgerWrite | None, T]],
    ) -> T:
        """Read, decide and write under one lock."""
        with self._lock:
            self.ops.transactions += 1
            self.ops.reads += 1
            doc = self.docs.get(doc_id)
            write, result = fn(copy.deepcopy(doc) if doc is not None else None)
            if write is not None:
                self.ops.writes += 1
                if doc is None:
                    raise KeyError(doc_id)
                apply_write(doc, write)
            return result

    def due(self, now: datetime, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """Entries whose ``deferred_until <= now``, earliest first."""
        with self._lock:
            found = [
                (doc_id, doc)
                for doc_id, doc in self.docs.items()
                if doc.get("deferred_until") is not None
                and doc["deferred_until"] <= now
            ]
            found.sort(key=lambda item: item[1]["deferred_until"])
            self.ops.reads += min(len(found), limit)
            return [(i, copy.deepcopy(d)) for i, d in found[:limit]]


class InMemoryIdentities:
    """An ``IdentityStore`` in a dict keyed like Firestore's document ids."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.ops = OpCounts()
        self._lock = threading.Lock()

    def lookup(
        self, keys: Sequence[tuple[str, str]], now: datetime
    ) -> list[tuple[str, dict[str, Any]]]:
        """Records of the keys found and not expired, in key order."""
        with self._lock:
            self.ops.reads += len(keys)
            out = []
            for kind, value in keys:
                doc = self.docs.get(identity_doc_id(kind, value))
                if doc is not None and doc["expire_at"] > now:
                    out.append((kind, dict(doc["fields"])))
            return out

    def upsert(
        self,
        keys: Sequence[tuple[str, str]],
        fields: Mapping[str, Any],
        now: datetime,
        expire_at: datetime,
    ) -> None:
        """Merge the fields into each key's record."""
        with self._lock:
            self.ops.writes += len(keys)
            for kind, value in keys:
                doc = self.docs.setdefault(
                    identity_doc_id(kind, value), {"kind": kind, "fields": {}}
                )
                doc["fields"].update(fields)
                doc["updated_at"] = now
                doc["expire_at"] = expire_at


Reply = int | HttpResponse | DeliveryError


class ScriptedSender:
    """An ``HttpSender`` answering from a per-URL script (default 200 ``{}``).

    ``script(url_prefix, [500, 500, 200])`` answers those statuses in turn for
    URLs starting with the prefix, then 200. A ``DeliveryError`` in the script
    is raised instead.
    """

    def __init__(self) -> None:
        self.sent: list[OutboundRequest] = []
        self._scripts: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()

    def script(self, url_prefix: str, replies: Iterable[Reply]) -> None:
        """Queue replies for URLs starting with ``url_prefix``."""
        with self._lock:
            self._scripts[url_prefix] = list(replies)

    def sent_to(self, url_prefix: str) -> list[OutboundRequest]:
        """The requests sent to URLs starting with ``url_prefix``."""
        with self._lock:
            return [r for r in self.sent if r.url.startswith(url_prefix)]

    def send(self, request: OutboundRequest) -> HttpResponse:
        """Record the request and answer from the script."""
        with self._lock:
            self.sent.append(request)
            reply: Reply = 200
            for prefix, queue in self._scripts.items():
                if request.url.startswith(prefix) and queue:
                    reply = queue.pop(0)
                    break
        if isinstance(reply, DeliveryError):
            raise reply
        if isinstance(reply, HttpResponse):
            return reply
        return HttpResponse(reply, {"Content-Type": "application/json"}, b"{}")


class RecordingPublisher:
    """A ``RawPublisher`` that keeps what it was given."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, dict[str, str]]] = []

    def publish_raw(
        self, topic: str, data: bytes, attributes: Mapping[str, str]
    ) -> str:
        """Record the message; return a fake id."""
        self.messages.append((topic, data, dict(attributes)))
        return str(len(self.messages))


@dataclass
class FakeDestination:
    """A minimal ``Destination``: POSTs ``{event_id, name, params}`` to ``url``."""

    id: str
    url: str
    type: str = "fake"
    required_consent: tuple[ConsentType, ...] = ()
    unknown_consent: Literal["deny", "allow"] = "allow"
    max_age: timedelta | None = None
    max_attempts: int | None = None
    test_mode: bool = False
    events: list[str] = field(default_factory=lambda: ["*"])

    def accepts(self, event_name: str) -> bool:
        """Routed when listed, or for ``"*"``."""
        return "*" in self.events or event_name in self.events

    def build(self, event: Event, now: datetime) -> OutboundRequest | Skip:
        """The event's ids and params as JSON."""
        body = event.model_dump(mode="json", exclude_none=True)
        return OutboundRequest(
            "POST",
            self.url,
            json=body,
            headers={"Content-Type": "application/json"},
            secret_headers={"Authorization": "Bearer test-secret"},
        )

    def classify(self, response: HttpResponse) -> SendResult:
        """2xx delivered, 408/429/5xx retry, else failed."""
        status = response.status
        if 200 <= status < 300:
            return SendResult("delivered", http_status=status)
        if status in (408, 429) or status >= 500:
            return SendResult("retry", http_status=status, error=f"http {status}")
        return SendResult("failed", http_status=status, error=f"http {status}")

    def authorize(
        self, request: OutboundRequest, sender: HttpSender, now: datetime
    ) -> OutboundRequest:
        """Unchanged."""
        return request
