"""The fan-out I/O floor: the minimum I/O of any exactly-once fan-out, no Truecount.

``fanout_floor`` is a CloudEvent function (a Pub/Sub push consumer, like
``fanout``) that does per message only what every exactly-once fan-out to five
platforms must do, with the plain SDKs and none of Truecount's code:

1. one Firestore ``create()`` of a small ledger document (the claim; a
   redelivered message finds it and is acked);
2. one POST of the message's data to each of the five platform paths of the
   capture server, concurrently (a shared pool, a shared ``httpx.Client``);
3. one Firestore ``update()`` recording the five statuses.

No parsing beyond the JSON ``event_id`` (the document id), no mapping, no
identity lookup, no payload building, no logging. Environment:
``BENCH_CAPTURE_URL``, ``GOOGLE_CLOUD_PROJECT``, ``FIRESTORE_EMULATOR_HOST``.
"""

from __future__ import annotations

import base64
import concurrent.futures
import functools
import json
import os
from datetime import UTC, datetime
from typing import Any

import functions_framework

PLATFORMS = ("/ga4", "/meta", "/google-ads", "/linkedin", "/tiktok")
COLLECTION = "bench-fanout-floor"


@functools.cache
def _clients() -> tuple[Any, Any, concurrent.futures.ThreadPoolExecutor]:
    import httpx
    from google.cloud import firestore

    return (
        firestore.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT")),
        httpx.Client(
            timeout=10.0,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        ),
        concurrent.futures.ThreadPoolExecutor(8 * len(PLATFORMS), "floor"),
    )


def _post(http: Any, url: str, data: bytes) -> int:
    response = http.post(
        url, content=data, headers={"Content-Type": "application/json"}
    )
    return int(response.status_code)


@functions_framework.cloud_event
def fanout_floor(cloud_event: Any) -> None:
    """Claim, send to the five platforms concurrently, record the statuses."""
    from google.api_core import exceptions

    firestore, http, pool = _clients()
    data = base64.b64decode(cloud_event.data["message"]["data"])
    event_id = str(json.loads(data)["event_id"])
    ref = firestore.collection(COLLECTION).document(event_id)
    now = datetime.now(UTC)
    try:
        ref.create({"status": "pending", "created_at": now})
    except exceptions.Conflict:
        return  # claimed before: a redelivery
    base = os.environ["BENCH_CAPTURE_URL"]
    futures = [pool.submit(_post, http, base + path, data) for path in PLATFORMS]
    statuses = [f.result() for f in futures]
    ref.update(
        {
            "destinations": {
                p.strip("/"): s for p, s in zip(PLATFORMS, statuses, strict=True)
            },
            "updated_at": datetime.now(UTC),
        }
    )
