"""Pub/Sub publisher adapter: implements ``EventPublisher`` and ``RawPublisher``.

One :class:`PubSubPublisher` per process and topic (:func:`get_publisher`). The
google ``PublisherClient`` is created on the first publish, honours
``PUBSUB_EMULATOR_HOST``, and is tuned for a request/response function: a
5 ms batch latency, and retries bounded by the publish timeout so that an
unreachable broker gives a :class:`~truecount.errors.PublishError` in about
``timeout`` seconds rather than after a minute of default gRPC retries.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from truecount.errors import PublishError

if TYPE_CHECKING:
    from truecount.models.event import Event

#: Seconds a batch waits for more messages: requests publish a handful at once.
BATCH_MAX_LATENCY = 0.005
BATCH_MAX_MESSAGES = 100

ClientFactory = Callable[[], Any]


def _topic_path(project: str, topic: str) -> str:
    return (
        topic if topic.startswith("projects/") else f"projects/{project}/topics/{topic}"
    )


def default_client_factory(timeout: float) -> ClientFactory:
    """Build the factory of a ``PublisherClient`` whose retries end by ``timeout``.

    Args:
        timeout: seconds one publish may take, retries included.

    Returns:
        A no-argument callable returning a configured ``PublisherClient``.
    """

    def factory() -> Any:
        from google.api_core import exceptions, retry
        from google.cloud import pubsub_v1

        bounded_retry = retry.Retry(
            predicate=retry.if_exception_type(
                exceptions.Aborted,
                exceptions.DeadlineExceeded,
                exceptions.InternalServerError,
                exceptions.ResourceExhausted,
                exceptions.ServiceUnavailable,
                exceptions.Unknown,
                exceptions.Cancelled,
            ),
            initial=0.1,
            maximum=1.0,
            multiplier=2.0,
            timeout=timeout,
        )
        return pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(
                max_latency=BATCH_MAX_LATENCY, max_messages=BATCH_MAX_MESSAGES
            ),
            publisher_options=pubsub_v1.types.PublisherOptions(
                retry=bounded_retry, timeout=timeout
            ),
        )

    return factory


class PubSubPublisher:
    """Publishes to Pub/Sub and waits for every ack within one deadline.

    Args:
        project: the Google Cloud project id.
        topic: the events topic, short name or ``projects/.../topics/...``.
        timeout: seconds a whole ``publish`` call may take.
        client_factory: returns the publisher client; tests pass a fake. The
            default builds a ``PublisherClient`` with bounded retries.
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

    def _publish_all(
        self, topic_path: str, messages: Sequence[tuple[bytes, Mapping[str, str]]]
    ) -> list[str]:
        if not messages:
            return []
        deadline = time.monotonic() + self.timeout
        count = len(messages)
        try:
            client = self._get_client()
            futures = [
                client.publish(topic_path, data, **attributes)
                for data, attributes in messages
            ]
            ids: list[str] = []
            for future in futures:
                remaining = max(0.0, deadline - time.monotonic())
                ids.append(str(future.result(timeout=remaining)))
        except TimeoutError as exc:
            raise PublishError(
                f"Pub/Sub did not ack {count} message(s) on {topic_path} "
                f"within {self.timeout:g}s"
            ) from exc
        except Exception as exc:
            raise PublishError(
                f"publishing {count} message(s) to {topic_path} failed: "
                f"{type(exc).__name__}"
            ) from exc
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
