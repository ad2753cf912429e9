"""Replay dead letters: pull, filter, republish to the events topic, then ack.

Messages reach ``truecount-events-dead-letter`` in two ways, and keep their
original bytes and attributes both times:

* fanout parks a message it can never process, with
  ``truecount_dead_letter_reason`` (``invalid_event: ...``);
* Pub/Sub moves a message after ``max_delivery_attempts`` pushes, with
  ``CloudPubSubDeadLetterSourceDeliveryCount`` (reason ``max_delivery_attempts``).

:func:`replay` pulls from the pull subscription, keeps the messages that match
the filter, republishes each to the events topic and acks it only once the
publish is acknowledged. Messages it does not replay (not matching, dry run,
over ``--max``, publish failed) are held for the run and released at the end
with ``modify_ack_deadline(0)``, so a run never sees one twice and leaves them
for the next. Replaying is idempotent: the ledger prevents double delivery.

The loop is pure over two ports (:class:`DeadLetterSource`, :class:`Republisher`);
:class:`PubSubDeadLetters` and :class:`TopicRepublisher` are the Pub/Sub edges.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from truecount.core.fanout import DEAD_LETTER_REASON
from truecount.ops.queries import DELIVERED, SKIPPED

DELIVERY_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"
SOURCE_SUBSCRIPTION = "CloudPubSubDeadLetterSourceSubscription"
#: attributes that describe the dead-lettering, dropped on replay
DEAD_LETTER_ATTRIBUTES: frozenset[str] = frozenset(
    {
        DEAD_LETTER_REASON,
        DELIVERY_COUNT,
        SOURCE_SUBSCRIPTION,
        "CloudPubSubDeadLetterSourceTopicPublishTime",
    }
)
REPLAYED_FROM = "truecount_replayed_from"
REPLAY_COUNT = "truecount_replay_count"
MAX_DELIVERY_REASON = "max_delivery_attempts"
DEFAULT_SUBSCRIPTION = "truecount-events-dead-letter-sub"


@dataclass(frozen=True)
class DeadLetter:
    """One pulled dead letter."""

    ack_id: str
    message_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: datetime | None = None


class DeadLetterSource(Protocol):
    """The dead-letter pull subscription."""

    def pull(self, max_messages: int, timeout: float) -> list[DeadLetter]:
        """Pull up to ``max_messages``; empty after ``timeout`` seconds."""
        ...

    def ack(self, ack_ids: Sequence[str]) -> None:
        """Acknowledge (remove) messages."""
        ...

    def hold(self, ack_ids: Sequence[str], seconds: int) -> None:
        """Extend the lease of messages (``modify_ack_deadline``)."""
        ...

    def release(self, ack_ids: Sequence[str]) -> None:
        """Give messages back now (``modify_ack_deadline`` 0)."""
        ...


class Republisher(Protocol):
    """The events topic."""

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        """Publish one message and wait for the ack; raise on failure."""
        ...


def reason_of(attributes: Mapping[str, str]) -> str:
    """The full dead-letter reason of a message.

    Returns:
        fanout's ``truecount_dead_letter_reason``, ``max_delivery_attempts`` for
        Pub/Sub's dead-lettering, else ``unknown``.
    """
    if attributes.get(DEAD_LETTER_REASON):
        return attributes[DEAD_LETTER_REASON]
    if DELIVERY_COUNT in attributes:
        return MAX_DELIVERY_REASON
    return "unknown"


def reason_code(attributes: Mapping[str, str]) -> str:
    """The reason's code, before any ``:`` (``invalid_event``, ...)."""
    return reason_of(attributes).split(":", 1)[0].strip() or "unknown"


def replay_attributes(attributes: Mapping[str, str], message_id: str) -> dict[str, str]:
    """The attributes to republish: the originals, without the dead-letter ones,
    plus where the copy came from and how many times it was replayed."""
    out = {k: v for k, v in attributes.items() if k not in DEAD_LETTER_ATTRIBUTES}
    try:
        count = int(attributes.get(REPLAY_COUNT, "0")) + 1
    except ValueError:
        count = 1
    out[REPLAYED_FROM] = message_id
    out[REPLAY_COUNT] = str(count)
    return out


@dataclass(frozen=True)
class ReplayFilter:
    """Which dead letters to replay; None matches everything.

    Attributes:
        reason: the reason code, or a prefix of the full reason.
        since: dead-lettered at or after this time.
        destination: only messages whose ledger entry has this destination not
            delivered nor skipped (or that have no ledger entry yet).
    """

    reason: str | None = None
    since: datetime | None = None
    destination: str | None = None


LedgerLookup = Callable[[str], "Mapping[str, Any] | None"]


def matches(
    message: DeadLetter, filt: ReplayFilter, ledger: LedgerLookup | None = None
) -> bool:
    """Whether a dead letter passes the filter.

    Args:
        message: the dead letter.
        filt: the filter.
        ledger: dedup key -> ledger document (needed for ``destination``).

    Returns:
        True to replay it.
    """
    attributes = message.attributes
    if filt.reason is not None:
        full = reason_of(attributes)
        if filt.reason != reason_code(attributes) and not full.startswith(filt.reason):
            return False
    if (
        filt.since is not None
        and message.publish_time is not None
        and message.publish_time < filt.since
    ):
        return False
    if filt.destination is not None and ledger is not None:
        key = attributes.get("dedup_key", "")
        doc = ledger(key) if key else None
        if doc is not None:
            record = (doc.get("destinations") or {}).get(filt.destination)
            if not isinstance(record, Mapping):
                return False
            return record.get("status") not in (DELIVERED, SKIPPED)
    return True


@dataclass(frozen=True)
class Seen:
    """One dead letter the run looked at (for the report)."""

    message_id: str
    reason: str
    name: str
    event_id: str
    dedup_key: str
    dead_lettered_at: datetime | None
    outcome: str  # replayed | would_replay | not_matching | over_max | failed


@dataclass
class ReplayResult:
    """What a replay run did."""

    dry_run: bool
    pulled: int = 0
    matched: int = 0
    replayed: int = 0
    failed: int = 0
    not_matching: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    messages: list[Seen] = field(default_factory=list)


def _seen(message: DeadLetter, outcome: str) -> Seen:
    a = message.attributes
    return Seen(
        message.message_id,
        reason_of(a),
        a.get("name", ""),
        a.get("event_id", ""),
        a.get("dedup_key", ""),
        message.publish_time,
        outcome,
    )


def replay(
    source: DeadLetterSource,
    publisher: Republisher,
    filt: ReplayFilter,
    *,
    dry_run: bool = False,
    max_messages: int | None = None,
    ledger: LedgerLookup | None = None,
    on_message: Callable[[ReplayResult], None] | None = None,
    batch_size: int = 100,
    pull_timeout: float = 2.0,
    idle_pulls: int = 2,
    hold_seconds: int = 600,
) -> ReplayResult:
    """Move matching dead letters back to the events topic.

    Args:
        source: the dead-letter subscription.
        publisher: the events topic.
        filt: which messages to replay.
        dry_run: pull and report, replay nothing, ack nothing.
        max_messages: replay (or, dry, report) at most this many matches.
        ledger: dedup key -> ledger document, for ``filt.destination``.
        on_message: called after each message (progress bars).
        batch_size: messages per pull at most.
        pull_timeout: seconds one pull waits.
        idle_pulls: consecutive empty pulls that end the run.
        hold_seconds: lease kept on messages not replayed until the end.

    Returns:
        Counts and one line per message.
    """
    result = ReplayResult(dry_run=dry_run)
    held: list[str] = []
    seen_ids: set[str] = set()
    empty = 0
    try:
        while max_messages is None or result.matched < max_messages:
            want = batch_size
            if max_messages is not None and filt == ReplayFilter():
                want = min(batch_size, max_messages - result.matched)
            batch = source.pull(want, pull_timeout)
            if not batch:
                empty += 1
                if empty >= idle_pulls:
                    break
                continue
            empty = 0
            source.hold([m.ack_id for m in batch], hold_seconds)
            for message in batch:
                _one(
                    message,
                    source=source,
                    publisher=publisher,
                    filt=filt,
                    result=result,
                    held=held,
                    seen_ids=seen_ids,
                    dry_run=dry_run,
                    max_messages=max_messages,
                    ledger=ledger,
                )
                if on_message is not None:
                    on_message(result)
    finally:
        if held:
            with contextlib.suppress(Exception):
                source.release(held)
    return result


def _one(
    message: DeadLetter,
    *,
    source: DeadLetterSource,
    publisher: Republisher,
    filt: ReplayFilter,
    result: ReplayResult,
    held: list[str],
    seen_ids: set[str],
    dry_run: bool,
    max_messages: int | None,
    ledger: LedgerLookup | None,
) -> None:
    if message.message_id in seen_ids:  # redelivered within this run
        held.append(message.ack_id)
        return
    seen_ids.add(message.message_id)
    result.pulled += 1
    if not matches(message, filt, ledger):
        result.not_matching += 1
        held.append(message.ack_id)
        result.messages.append(_seen(message, "not_matching"))
        return
    if max_messages is not None and result.matched >= max_messages:
        held.append(message.ack_id)
        result.messages.append(_seen(message, "over_max"))
        return
    result.matched += 1
    result.by_reason[reason_code(message.attributes)] += 1
    if dry_run:
        held.append(message.ack_id)
        result.messages.append(_seen(message, "would_replay"))
        return
    try:
        publisher.publish(
            message.data, replay_attributes(message.attributes, message.message_id)
        )
    except Exception:  # keep it in the dead-letter queue; report, go on
        result.failed += 1
        held.append(message.ack_id)
        result.messages.append(_seen(message, "failed"))
        return
    source.ack([message.ack_id])
    result.replayed += 1
    result.messages.append(_seen(message, "replayed"))


# --- Pub/Sub edges -----------------------------------------------------------


def _subscription_path(project: str, sub: str) -> str:
    if sub.startswith("projects/"):
        return sub
    return f"projects/{project}/subscriptions/{sub}"


class PubSubDeadLetters:
    """:class:`DeadLetterSource` on a Pub/Sub pull subscription (synchronous pull).

    Args:
        project: the project id.
        subscription: short name or full path.
        client_factory: returns a ``SubscriberClient`` (default: a new one;
            ``PUBSUB_EMULATOR_HOST`` points it at the emulator).
    """

    def __init__(
        self,
        project: str,
        subscription: str = DEFAULT_SUBSCRIPTION,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.path = _subscription_path(project, subscription)
        self._factory = client_factory or _subscriber_client
        self._client: Any = None

    def _sub(self) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client

    def pull(self, max_messages: int, timeout: float) -> list[DeadLetter]:
        """One synchronous pull; empty when nothing arrived within ``timeout``."""
        from google.api_core import exceptions

        try:
            response = self._sub().pull(
                request={"subscription": self.path, "max_messages": max_messages},
                timeout=timeout,
                retry=None,
            )
        except exceptions.DeadlineExceeded:
            return []
        return [
            DeadLetter(
                ack_id=item.ack_id,
                message_id=str(item.message.message_id),
                data=bytes(item.message.data),
                attributes=dict(item.message.attributes),
                publish_time=item.message.publish_time or None,
            )
            for item in response.received_messages
        ]

    def ack(self, ack_ids: Sequence[str]) -> None:
        """Acknowledge messages."""
        if ack_ids:
            self._sub().acknowledge(
                request={"subscription": self.path, "ack_ids": list(ack_ids)}
            )

    def _modify(self, ack_ids: Sequence[str], seconds: int) -> None:
        for start in range(0, len(ack_ids), 1000):
            self._sub().modify_ack_deadline(
                request={
                    "subscription": self.path,
                    "ack_ids": list(ack_ids[start : start + 1000]),
                    "ack_deadline_seconds": seconds,
                }
            )

    def hold(self, ack_ids: Sequence[str], seconds: int) -> None:
        """Extend the messages' lease."""
        if ack_ids:
            self._modify(ack_ids, seconds)

    def release(self, ack_ids: Sequence[str]) -> None:
        """Make the messages available again now."""
        if ack_ids:
            self._modify(ack_ids, 0)

    def close(self) -> None:
        """Close the subscriber's channel."""
        if self._client is not None:
            self._client.close()
            self._client = None


def _subscriber_client() -> Any:
    from google.cloud import pubsub_v1

    return pubsub_v1.SubscriberClient()


class TopicRepublisher:
    """:class:`Republisher` over ``adapters.pubsub.PubSubPublisher.publish_raw``.

    Args:
        project: the project id.
        topic: the events topic (short name or full path).
        timeout: seconds one publish may take.
    """

    def __init__(self, project: str, topic: str, timeout: float = 10.0) -> None:
        from truecount.adapters.pubsub import PubSubPublisher

        self.topic = topic
        self._publisher = PubSubPublisher(project, topic, timeout)

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        """Publish and wait for the ack (raises ``PublishError``)."""
        return self._publisher.publish_raw(self.topic, data, attributes)

    def close(self) -> None:
        """Flush and release the client."""
        self._publisher.close()
