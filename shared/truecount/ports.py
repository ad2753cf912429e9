"""Ports: the interfaces the pure core needs from the outside world.

Adapters in ``truecount.adapters`` implement them with Pub/Sub, Firestore and
httpx; ``truecount.testing`` has in-memory fakes for unit tests of pure logic.
Nothing here imports an SDK.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from truecount.models.event import Event


class EventPublisher(Protocol):
    """Publishes canonical events and waits for the broker's ack."""

    def publish(self, events: Sequence[Event]) -> list[str]:
        """Publish every event; return the message ids in order.

        Raises:
            truecount.errors.PublishError: any event was not acked in time.
        """
        ...


class RawPublisher(Protocol):
    """Publishes raw bytes with attributes to a named topic (dead letters)."""

    def publish_raw(
        self, topic: str, data: bytes, attributes: Mapping[str, str]
    ) -> str:
        """Publish one message and wait for the ack; return its message id."""
        ...


# --- destinations -----------------------------------------------------------

ConsentType = Literal[
    "ad_storage", "analytics_storage", "ad_user_data", "ad_personalization"
]


@dataclass(frozen=True)
class OutboundRequest:
    """A fully built HTTP request, described as data.

    ``url``, ``headers`` and ``json`` carry no secret and no raw PII, so they are
    recorded in the ledger as they are. Credentials go in ``secret_headers`` and
    ``secret_query``: the sender adds them and nothing records them.
    """

    method: str
    url: str
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    secret_headers: Mapping[str, str] = field(default_factory=dict)
    secret_query: Mapping[str, str] = field(default_factory=dict)
    #: exact body bytes to send instead of serialising ``json`` (signed bodies,
    #: form-encoded token requests). Never recorded: it may carry credentials.
    content: bytes | None = None
    #: what ``build`` changed to fit the platform's limits (e.g. a truncated
    #: param), for the ledger; never sent.
    notes: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """What the ledger keeps of this request: no secrets."""
        return {
            "method": self.method,
            "url": self.url,
            "headers": dict(self.headers),
            "json": self.json,
        }


@dataclass(frozen=True)
class Skip:
    """The destination will not get this event, and why (e.g. ``unmapped_event``)."""

    reason: str


@dataclass(frozen=True)
class HttpResponse:
    """What the sender got back, as plain data for pure classification."""

    status: int
    headers: Mapping[str, str]
    body: bytes


DeliveryStatus = Literal["delivered", "failed", "retry"]


@dataclass(frozen=True)
class SendResult:
    """The classified outcome of one attempt at one destination.

    ``status``: ``delivered``; ``failed`` (permanent, never retried); ``retry``
    (transient: raise so that Pub/Sub redelivers).
    """

    status: DeliveryStatus
    http_status: int | None = None
    error: str | None = None
    request_id: str | None = None
    retry_after: float | None = None
    detail: Mapping[str, Any] | None = None


class HttpSender(Protocol):
    """Sends an OutboundRequest (adding its secrets) and returns the response.

    Raises:
        truecount.errors.DeliveryError: transport failure or timeout (retryable).
    """

    def send(self, request: OutboundRequest) -> HttpResponse: ...


class Destination(Protocol):
    """One platform. One file in ``truecount/destinations/`` implements it.

    ``build`` and ``classify`` are pure. ``authorize`` is the only step that may
    do I/O (an OAuth token exchange through ``sender``); most destinations return
    the request unchanged.
    """

    id: str
    type: str
    #: consent types the destination needs granted
    required_consent: tuple[ConsentType, ...]
    #: what an ``unknown`` consent counts as
    unknown_consent: Literal["deny", "allow"]
    #: oldest event the platform accepts, or None for no limit
    max_age: timedelta | None

    def accepts(self, event_name: str) -> bool:
        """Whether the config routes this canonical event name here."""
        ...

    def build(self, event: Event, now: datetime) -> OutboundRequest | Skip:
        """Build the platform request for one event, or say why not."""
        ...

    def classify(self, response: HttpResponse) -> SendResult:
        """Classify the platform's answer."""
        ...

    def authorize(
        self, request: OutboundRequest, sender: HttpSender, now: datetime
    ) -> OutboundRequest:
        """Add credentials that must be fetched (OAuth); default: unchanged."""
        ...
