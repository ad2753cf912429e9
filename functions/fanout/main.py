"""fanout: Pub/Sub-triggered delivery (CloudEvent ``messagePublished``).

Wiring only; the logic is ``truecount.core.fanout.FanoutService``. Returning acks
the message; raising (``RetryableError``) makes Pub/Sub redeliver it. A
``truecount_command=redrive`` message republishes the deferred events now due.
functions-framework also turns a raw Pub/Sub push body into this CloudEvent.
"""

from __future__ import annotations

import functools
import os
from datetime import UTC, datetime
from typing import Any

import functions_framework

from truecount.core.fanout import FanoutService


@functools.cache
def _service() -> FanoutService:
    """Build the service once per instance; clients are created on first use."""
    from truecount.adapters.firestore import (
        FirestoreIdentities,
        FirestoreLedger,
        get_client,
    )
    from truecount.adapters.http import HttpxSender, get_http_client
    from truecount.adapters.pubsub import get_publisher
    from truecount.config import load_config
    from truecount.destinations.registry import build_destinations
    from truecount.log import configure
    from truecount.settings import get_settings

    settings = get_settings()
    configure(project=settings.google_cloud_project)  # trace links in logs
    config = load_config(settings.truecount_config)
    project = settings.google_cloud_project

    def client() -> Any:
        return get_client(project)

    return FanoutService(
        config,
        build_destinations(config, os.environ),
        ledger=FirestoreLedger(client),
        identities=FirestoreIdentities(client),
        sender=HttpxSender(get_http_client(config.fanout.http_timeout_seconds)),
        publisher=get_publisher(project, settings.truecount_events_topic),
        events_topic=settings.truecount_events_topic,
    )


@functions_framework.cloud_event
def fanout(cloud_event: Any) -> None:
    """Entry point: process one Pub/Sub message."""
    _service().handle(cloud_event.data, datetime.now(UTC))
