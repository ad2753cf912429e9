"""Pub/Sub publisher adapter: implements ``EventPublisher`` and ``RawPublisher``.

One :class:`PubSubPublisher` per process and topic (:func:`get_publisher`). The
Pub/Sub client is created on the first publish and honours
``PUBSUB_EMULATOR_HOST``.

A request/response function publishes the few events of one request and must
answer only once all of them are acked, so the default client
(:class:`DirectPublishClient`) sends them as one ``Publish`` RPC from the
calling thread: no batch timer to wait for (the SDK's batching added its
``max_latency`` to every request), no per-message future, no commit thread.
Concurrent requests share RPCs through a timer-less group commit
(:class:`GroupCommit`).
Transient gRPC errors are retried with backoff until the publish deadline, so
an unreachable broker gives a :class:`~truecount.errors.PublishError` in about
``timeout`` seconds rather than after a minute of default retries.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from truecount.errors import PublishError

if TYPE_CHECKING:
    from truecount.models.event import Event

#: Pub/Sub's limits for one ``Publish`` request: 1000 messages, 10 MB.
RPC_MAX_MESSAGES = 1000
RPC_MAX_BYTES = 9_000_000
#: Backoff between retries of a transient failure, seconds.
RETRY_INITIAL = 0.1
RETRY_MAXIMUM = 1.0
RETRY_MULTIPLIER = 2.0
#: gRPC status names retried until the deadline.
RETRYABLE_CODES = frozenset(
    {
        "ABORTED",
        "CANCELLED",
        "DEADLINE_EXCEEDED",
        "INTERNAL",
        "RESOURCE_EXHAUSTED",
        "UNAVAILABLE",
        "UNKNOWN",
    }
)

Message = tuple[bytes, Mapping[str, str]]
ClientFactory = Callable[[], Any]


def _topic_path(project: str, topic: str) -> str:
    return (
        topic if topic.startswith("projects/") else f"projects/{project}/topics/{topic}"
    )


def _weight(message: Message) -> int:
    data, attributes = message
    return len(data) + sum(len(k) + len(v) for k, v in attributes.items())


def _chunks(messages: Sequence[Message]) -> list[Sequence[Message]]:
    """Split messages into groups that fit in one ``Publish`` request."""
    out: list[Sequence[Message]] = []
    start, size = 0, 0
    for index, message in enumerate(messages):
        weight = _weight(message)
        if index > start and (
            index - start >= RPC_MAX_MESSAGES or size + weight > RPC_MAX_BYTES
        ):
            out.append(messages[start:index])
            start, size = index, 0
        size += weight
    out.append(messages[start:])
    return out


Sender = Callable[[str, Sequence[Message], float], list[str]]

#: A queued caller with less than this many seconds left is failed, not sent.
MIN_SEND_SECONDS = 0.02


class _Slot:
    """One caller's messages waiting in a :class:`GroupCommit`."""

    __slots__ = (
        "count",
        "deadline",
        "done",
        "error",
        "ids",
        "lead",
        "messages",
        "size",
        "topic",
    )

    def __init__(self, topic: str, messages: Sequence[Message], deadline: float):
        self.topic = topic
        self.messages = messages
        self.deadline = deadline
        self.count = len(messages)
        self.size = sum(_weight(m) for m in messages)
        self.done = threading.Event()
        self.ids: list[str] | None = None
        self.error: BaseException | None = None
        self.lead = False


def _caller_error(error: BaseException) -> Exception:
    """A fresh exception for one caller, chained to the group's ``error``.

    Every caller of a failed group gets its own object, so re-raising in one
    thread never grows the traceback another thread sees. A timeout stays a
    ``TimeoutError``; anything else becomes a :class:`PublishError` naming
    only the type of the failure (never its text, which may quote payloads).
    """
    if isinstance(error, TimeoutError):
        fresh: Exception = TimeoutError("publish deadline exceeded")
    else:
        fresh = PublishError(f"Publish RPC failed: {type(error).__name__}")
    fresh.__cause__ = error
    return fresh


def _expired() -> TimeoutError:
    return TimeoutError("publish deadline exceeded before the message was sent")


class GroupCommit:
    """Sends the messages of concurrent callers together, without a timer.

    A caller that finds no RPC in flight sends its messages at once (no added
    latency when idle). Callers arriving while an RPC is in flight queue up;
    when it completes, the first of them sends everything queued in one RPC per
    topic (more when the group exceeds one ``Publish`` request) and the others
    wait for their ids. Under load this turns one RPC per request into one per
    group, which halves the publishing CPU per request; unlike the SDK's
    batching, nobody waits for a batch window.

    Deadlines: before each RPC, queued callers with less than
    :data:`MIN_SEND_SECONDS` left are failed with ``TimeoutError`` and dropped
    (never sent, so their withdrawal is exact); a leader whose own deadline
    has passed hands the lead to the first live caller instead of sending.
    The RPC then runs until the earliest deadline of the *live* callers, so no
    caller (the leader included, whose thread makes the RPC) waits past its own
    deadline, and one slow RPC fails only its own group: the callers queued
    behind it are sent with their own time left. (Sending until the latest
    deadline would make the leader overrun its deadline by the spread of the
    callers' timeouts; it fails no fewer callers after a stall.)

    A failure fails only the callers whose messages were in the failed RPC;
    each gets its own exception object (see :func:`_caller_error`).

    Args:
        send: publishes ``(topic_path, messages, deadline)``, returns the ids.
        clock: the clock of the deadlines (``time.monotonic``; tests fake it).
    """

    def __init__(
        self, send: Sender, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._send = send
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: list[_Slot] = []
        self._busy = False

    def publish(
        self, topic_path: str, messages: Sequence[Message], deadline: float
    ) -> list[str]:
        """Publish messages (possibly with other callers') and return their ids.

        Args:
            topic_path: ``projects/<p>/topics/<t>``.
            messages: ``(data, attributes)`` pairs.
            deadline: value of the clock by which all must be acked.

        Returns:
            The message ids, in order.

        Raises:
            TimeoutError: not acked by the deadline.
            PublishError: the RPC carrying these messages failed (chained to
                the sender's exception).
        """
        slot = _Slot(topic_path, messages, deadline)
        with self._lock:
            self._pending.append(slot)
            if not self._busy:
                self._busy = slot.lead = True
        if not slot.lead:
            slot.done.wait(max(0.0, deadline - self._clock()))
            with self._lock:
                if not slot.lead:
                    if slot.ids is not None:
                        return slot.ids
                    if slot.error is not None:
                        raise _caller_error(slot.error)
                    if slot in self._pending:  # never sent: withdraw
                        self._pending.remove(slot)
                    raise TimeoutError("publish deadline exceeded")
        self._lead(slot)
        if slot.error is not None:
            raise _caller_error(slot.error)
        assert slot.ids is not None
        return slot.ids

    def _take_live(self, slots: list[_Slot], leader: _Slot | None) -> list[_Slot]:
        """Fail and drop the slots too close to their deadline; keep the rest."""
        now = self._clock()
        live: list[_Slot] = []
        for slot in slots:
            if slot.deadline - now >= MIN_SEND_SECONDS:
                live.append(slot)
            else:
                slot.error = _expired()
                if slot is not leader:
                    slot.done.set()
        return live

    def _hand_over(self) -> None:
        """Give the lead to the first queued caller, or go idle (under lock)."""
        if self._pending:
            successor = self._pending[0]
            successor.lead = True
            successor.done.set()
        else:
            self._busy = False

    def _lead(self, leader: _Slot) -> None:
        with self._lock:
            group, self._pending = self._pending, []
            live = self._take_live(group, leader)
            if leader.error is not None:  # expired: let a live caller send
                self._pending = live
                self._hand_over()
                return
        try:
            self._run(live, leader)
        finally:
            with self._lock:
                self._hand_over()

    def _run(self, group: list[_Slot], leader: _Slot) -> None:
        by_topic: dict[str, list[_Slot]] = {}
        for slot in group:
            by_topic.setdefault(slot.topic, []).append(slot)
        for topic, slots in by_topic.items():
            for batch in self._batches(slots):
                with self._lock:
                    live = self._take_live(batch, leader)
                if live:
                    self._send_batch(topic, live, leader)

    @staticmethod
    def _batches(slots: list[_Slot]) -> list[list[_Slot]]:
        """Split slots (never one slot) into groups that fit one RPC each."""
        out: list[list[_Slot]] = [[]]
        count, size = 0, 0
        for slot in slots:
            if out[-1] and (
                count + slot.count > RPC_MAX_MESSAGES
                or size + slot.size > RPC_MAX_BYTES
            ):
                out.append([])
                count, size = 0, 0
            out[-1].append(slot)
            count += slot.count
            size += slot.size
        return out

    def _send_batch(self, topic: str, slots: list[_Slot], leader: _Slot) -> None:
        messages = [m for slot in slots for m in slot.messages]
        deadline = min(slot.deadline for slot in slots)
        ids: list[str] = []
        error: BaseException | None = None
        try:
            ids = self._send(topic, messages, deadline)
            if len(ids) != len(messages):
                error = RuntimeError(f"{len(ids)} ids for {len(messages)}")
        except Exception as exc:
            error = exc
        start = 0
        for slot in slots:
            end = start + slot.count
            if error is None:
                slot.ids = ids[start:end]
            else:
                slot.error = error
            start = end
            if slot is not leader:
                slot.done.set()


class DirectPublishClient:
    """Publishes a request's messages in one ``Publish`` RPC, synchronously.

    Built on the GAPIC client of google-cloud-pubsub (its credentials, channel
    and message types); only the batching layer is left out.

    Args:
        gapic: a ``google.pubsub_v1.PublisherClient``.
    """

    def __init__(self, gapic: Any) -> None:
        from google.pubsub_v1.types import PublishRequest, PubsubMessage

        self._gapic = gapic
        self._rpc = gapic.transport.publish
        self._request_pb = PublishRequest.pb()
        self._wrap_request = PublishRequest.wrap
        self._message_pb = PubsubMessage.pb()
        self._metadata: dict[str, tuple[tuple[str, str], ...]] = {}
        self._group = GroupCommit(self.send)

    @classmethod
    def create(cls) -> DirectPublishClient:
        """A client for Pub/Sub, or for the emulator at ``PUBSUB_EMULATOR_HOST``."""
        from google.pubsub_v1 import PublisherClient

        host = os.environ.get("PUBSUB_EMULATOR_HOST")
        if host:
            from google.auth.credentials import AnonymousCredentials

            gapic = PublisherClient(
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options={"api_endpoint": host},
            )
        else:
            gapic = PublisherClient()
        return cls(gapic)

    def publish_batch(
        self, topic_path: str, messages: Sequence[Message], deadline: float
    ) -> list[str]:
        """Publish messages, grouped with concurrent callers' (:class:`GroupCommit`).

        Args:
            topic_path: ``projects/<p>/topics/<t>``.
            messages: ``(data, attributes)`` pairs.
            deadline: ``time.monotonic()`` value by which all must be acked.

        Returns:
            The message ids, in order.

        Raises:
            TimeoutError: not acked by the deadline.
            PublishError: a non-retryable failure (e.g. the topic is missing),
                chained to the ``grpc.RpcError``.
        """
        return self._group.publish(topic_path, messages, deadline)

    def send(
        self, topic_path: str, messages: Sequence[Message], deadline: float
    ) -> list[str]:
        """Publish messages now and wait for their ids, retrying transient errors.

        Args:
            topic_path: ``projects/<p>/topics/<t>``.
            messages: ``(data, attributes)`` pairs.
            deadline: ``time.monotonic()`` value by which all must be acked.

        Returns:
            The message ids, in order.

        Raises:
            TimeoutError: not acked by the deadline.
            grpc.RpcError: a non-retryable failure (e.g. the topic is missing).
        """
        metadata = self._metadata.get(topic_path)
        if metadata is None:
            param = f"topic={quote(topic_path, safe='/')}"
            metadata = (("x-goog-request-params", param),)
            self._metadata[topic_path] = metadata
        ids: list[str] = []
        for chunk in _chunks(messages):
            request = self._wrap_request(
                self._request_pb(
                    topic=topic_path,
                    messages=[
                        self._message_pb(data=data, attributes=attributes)
                        for data, attributes in chunk
                    ],
                )
            )
            ids.extend(self._call(request, metadata, deadline))
        return ids

    def _call(
        self, request: Any, metadata: tuple[tuple[str, str], ...], deadline: float
    ) -> list[str]:
        delay = RETRY_INITIAL
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("publish deadline exceeded")
            try:
                response = self._rpc(request, timeout=remaining, metadata=metadata)
                return list(response.message_ids)
            except Exception as exc:
                code = getattr(exc, "code", None)
                name = getattr(code(), "name", "") if callable(code) else ""
                if name not in RETRYABLE_CODES:
                    raise
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * RETRY_MULTIPLIER, RETRY_MAXIMUM)

    def stop(self) -> None:
        """Close the channel."""
        self._gapic.transport.close()


def default_client_factory(timeout: float) -> ClientFactory:
    """The factory of the default client (:class:`DirectPublishClient`).

    Args:
        timeout: seconds one publish may take, retries included (each call
            passes its own deadline; kept for API compatibility).

    Returns:
        A no-argument callable returning a :class:`DirectPublishClient`.
    """
    del timeout
    return DirectPublishClient.create


class PubSubPublisher:
    """Publishes to Pub/Sub and waits for every ack within one deadline.

    Args:
        project: the Google Cloud project id.
        topic: the events topic, short name or ``projects/.../topics/...``.
        timeout: seconds a whole ``publish`` call may take.
        client_factory: returns the publisher client; tests pass a fake. A
            client with ``publish_batch(topic_path, messages, deadline)`` is
            used that way; otherwise ``publish(topic_path, data, **attributes)``
            must return a future per message (the SDK's ``PublisherClient``).
            The default is :meth:`DirectPublishClient.create`.
    """

    def __init__(
        self,
        project: str,
        topic: str,
        timeout: float = 10.0,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self.project = project
        self.topic_path = _topic_path(project, topic)
        self.timeout = timeout
        self._client_factory = client_factory or default_client_factory(timeout)
        self._client: Any = None
        self._lock = threading.Lock()

    def _get_client(self) -> Any:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def publish(self, events: Sequence[Event]) -> list[str]:
        """Publish every event to the events topic and wait for all acks.

        Args:
            events: canonical events; each body is ``event.to_json_bytes()``
                with ``event.pubsub_attributes()``.

        Returns:
            The message ids, in the order of ``events``.

        Raises:
            PublishError: any message was not acked within ``timeout``.
        """
        messages = [(e.to_json_bytes(), e.pubsub_attributes()) for e in events]
        return self._publish_all(self.topic_path, messages)

    def publish_encoded(
        self, events: Sequence[Event], bodies: Sequence[bytes]
    ) -> list[str]:
        """:meth:`publish`, with each event's body already serialised.

        Args:
            events: canonical events.
            bodies: ``event.to_json_bytes()`` of each, in the same order.

        Returns:
            The message ids, in the order of ``events``.

        Raises:
            PublishError: any message was not acked within ``timeout``.
            ValueError: ``bodies`` and ``events`` differ in length.
        """
        messages = [
            (body, e.pubsub_attributes())
            for e, body in zip(events, bodies, strict=True)
        ]
        return self._publish_all(self.topic_path, messages)

    def publish_messages(self, topic: str, messages: Sequence[Message]) -> list[str]:
        """Publish raw messages to a topic and wait for all acks.

        Args:
            topic: short name (in this project) or full topic path.
            messages: ``(data, attributes)`` pairs.

        Returns:
            The message ids, in order.

        Raises:
            PublishError: any message was not acked within ``timeout``.
        """
        return self._publish_all(_topic_path(self.project, topic), messages)

    def publish_raw(
        self, topic: str, data: bytes, attributes: Mapping[str, str]
    ) -> str:
        """Publish one raw message to another topic (e.g. the dead letters).

        Args:
            topic: short name (in this project) or full topic path.
            data: the message body.
            attributes: string attributes.

        Returns:
            The message id.

        Raises:
            PublishError: the message was not acked within ``timeout``.
        """
        path = _topic_path(self.project, topic)
        return self._publish_all(path, [(data, dict(attributes))])[0]

    def close(self) -> None:
        """Send what is buffered and release the client; safe to call twice."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.stop()

    def _publish_all(self, topic_path: str, messages: Sequence[Message]) -> list[str]:
        if not messages:
            return []
        deadline = time.monotonic() + self.timeout
        count = len(messages)
        try:
            client = self._get_client()
            batch = getattr(client, "publish_batch", None)
            if batch is not None:
                ids: list[str] = batch(topic_path, messages, deadline)
            else:
                ids = _publish_futures(client, topic_path, messages, deadline)
        except TimeoutError as exc:
            raise PublishError(
                f"Pub/Sub did not ack {count} message(s) on {topic_path} "
                f"within {self.timeout:g}s"
            ) from exc
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc, PublishError) else None
            raise PublishError(
                f"publishing {count} message(s) to {topic_path} failed: "
                f"{type(cause or exc).__name__}"
            ) from exc
        if len(ids) != count:
            raise PublishError(
                f"Pub/Sub acked {len(ids)} of {count} message(s) on {topic_path}"
            )
        return ids


def _publish_futures(
    client: Any, topic_path: str, messages: Sequence[Message], deadline: float
) -> list[str]:
    futures = [client.publish(topic_path, data, **attrs) for data, attrs in messages]
    ids: list[str] = []
    for future in futures:
        remaining = max(0.0, deadline - time.monotonic())
        ids.append(str(future.result(timeout=remaining)))
    return ids


@functools.cache
def get_publisher(project: str, topic: str, timeout: float = 10.0) -> PubSubPublisher:
    """The process-wide publisher for one project and topic.

    Args:
        project: the Google Cloud project id.
        topic: the events topic.
        timeout: seconds a whole ``publish`` call may take.

    Returns:
        A cached :class:`PubSubPublisher` (its client is built on first use).
    """
    return PubSubPublisher(project, topic, timeout)
