"""SDK floor functions: no parsing, only the Google SDK work Truecount must do.

They show how much of the gap to the bare no-op is the Google SDKs themselves
(the brief requires google-cloud-pubsub and google-cloud-firestore), as
opposed to Truecount's own code:

* ``floor_publish``: an HTTP function that reads the body and publishes it to
  the events topic, waiting for the ack, before answering 204. A body sent to
  ``/g/collect`` is published one message per non-empty line (a GA4 batch is
  one event per line); any other body is one message. It publishes through
  Truecount's own adapter (``truecount.adapters.pubsub.PubSubPublisher``),
  i.e. with exactly the same SDK modules, client and publish settings, so the
  floor moves with any change to the publisher. That adapter module imports
  nothing but ``truecount.errors`` until the first publish.
* ``floor_create``: a CloudEvent function that creates one Firestore document
  (``google.cloud.firestore``, one ``create()``) per message.

Both create their client on the first call, like Truecount. Environment: the
same as Truecount's (``GOOGLE_CLOUD_PROJECT``, ``TRUECOUNT_EVENTS_TOPIC``,
``*_EMULATOR_HOST``).
"""

from __future__ import annotations

import functools
import os
import uuid
from typing import Any

import functions_framework

#: Five attributes, as many as a canonical event carries (CONTRACT.md).
ATTRIBUTES = {
    "event_id": "floor",
    "dedup_key": "event:floor",
    "name": "floor",
    "source": "data",
    "schema_version": "1",
}


@functools.cache
def _publisher() -> Any:
    from truecount.adapters.pubsub import PubSubPublisher

    return PubSubPublisher(
        os.environ.get("GOOGLE_CLOUD_PROJECT", "truecount-local"),
        os.environ.get("TRUECOUNT_EVENTS_TOPIC", "truecount-events"),
    )


@functools.cache
def _firestore() -> Any:
    from google.cloud import firestore

    return firestore.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))


@functions_framework.http
def floor_publish(request: Any) -> tuple[str, int]:
    """Publish the raw body (one message per line for a GA4 batch); 204."""
    body: bytes = request.get_data()
    if request.path.startswith("/g/collect"):
        parts = [line for line in body.split(b"\n") if line.strip()] or [body]
    else:
        parts = [body]
    publisher = _publisher()
    publisher.publish_messages(
        publisher.topic_path, [(part, ATTRIBUTES) for part in parts]
    )
    return "", 204


@functions_framework.cloud_event
def floor_create(cloud_event: Any) -> None:
    """Create one Firestore document per message."""
    doc = _firestore().collection("bench-floor").document(uuid.uuid4().hex)
    doc.create({"n": 1})
