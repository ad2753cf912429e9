"""HTTP edge glue shared by the ``ingest`` and ``webhook`` functions.

It owns what every HTTP route has in common, so that each route handler is a
small function from a parsed request to canonical events:

* routing: unknown path 404, wrong method 405 (with ``Allow``);
* body limits: 413 from ``Content-Length`` or the bytes actually read;
* errors: ``InvalidPayload`` → its 4xx with the CONTRACT JSON error,
  ``SignatureVerificationError`` → 400 without detail, ``PublishError`` and
  ``UpstreamError`` → 503 with ``Retry-After``; anything unexpected → 500, logged
  without request data;
* publishing: all events of a request are published and acked before the 2xx
  (all or nothing per request);
* debug: ``X-Truecount-Debug: 1`` marks events ``debug`` and answers 200 with
  ``{"events": [...]}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import Request, Response

from truecount.core.pii import sweep_event
from truecount.errors import (
    InvalidPayload,
    PayloadTooLarge,
    PublishError,
    SignatureVerificationError,
    UpstreamError,
)
from truecount.log import get_logger
from truecount.models.event import Event
from truecount.ports import EventPublisher

DEBUG_HEADER = "X-Truecount-Debug"
RETRY_AFTER_SECONDS = "5"

_log = get_logger("truecount.web")


@dataclass
class Reply:
    """What a route handler returns: events to publish and how to answer.

    Args:
        events: canonical events to publish before answering (may be empty).
        status: the status to answer with once they are acked.
        body: a JSON-serialisable body, or None for an empty body.
        headers: extra response headers (CORS, ...).
    """

    events: Sequence[Event] = ()
    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Reply]


@dataclass(frozen=True)
class Route:
    """A path, the methods it accepts, and its handler."""

    path: str
    methods: frozenset[str]
    handler: Handler


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response with the given status and headers."""
    resp = Response(
        json.dumps(body, separators=(",", ":"), default=str),
        status=status,
        mimetype="application/json",
    )
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def error_body(
    code: str, message: str, fields: list[dict[str, str]] | None = None
) -> Any:
    """The CONTRACT.md error body."""
    return {"error": {"code": code, "message": message, "fields": fields or []}}


def read_body(request: Request, limit: int) -> bytes:
    """Read the raw body, refusing more than ``limit`` bytes with 413.

    Args:
        request: the incoming request.
        limit: the maximum number of bytes.

    Returns:
        The raw bytes, exactly as sent.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    return data


def decode_utf8(data: bytes, path: str = "$") -> str:
    """Decode UTF-8 or raise a 400 naming ``path``."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayload(
            "body is not valid UTF-8",
            [{"path": path, "message": "not valid UTF-8"}],
            "invalid_encoding",
        ) from None


def is_debug(request: Request) -> bool:
    """True when the request asks for debug mode."""
    return request.headers.get(DEBUG_HEADER, "").strip() in {"1", "true"}


#: what :func:`truecount.core.pii.sweep_event` looks for in every text: an "@"
#: written plainly or URL-encoded once or twice ("%" and digits have no case)
_AT_MARKS = (b"@", b"%40", b"%2540")


def _swept(event: Event) -> tuple[Event, bytes | None]:
    """:func:`~truecount.core.pii.sweep_event`, skipped when it cannot find anything.

    The JSON body holds every text the sweep reads (and more: keys, identity),
    so when no address marker appears anywhere in it the sweep would return the
    event unchanged; serialising costs a fraction of the sweep's full walk.

    Returns:
        The event and its JSON body, or the swept event and None.
    """
    body = event.to_json_bytes()
    if not any(mark in body for mark in _AT_MARKS):
        return event, body
    return sweep_event(event), None


def _publish(
    publisher: EventPublisher, events: Sequence[Event], debug: bool
) -> list[Event]:
    # the last line of defence: no raw email leaves the function, whatever field
    # a site or a provider hid it in (sources already hashed the ones they know)
    swept = [_swept(e) for e in events]
    events = [event for event, _ in swept]
    if debug:
        events = [e.model_copy(update={"debug": True}) for e in events]
    if not events:
        return []
    # a publisher that takes ready bodies is spared serialising each event again
    encoded = getattr(publisher, "publish_encoded", None)
    if encoded is not None and not debug:
        encoded(events, [b if b is not None else e.to_json_bytes() for e, b in swept])
    else:
        publisher.publish(events)
    return list(events)


def dispatch(
    request: Request,
    routes: Sequence[Route],
    publisher: Callable[[], EventPublisher],
    base_headers: Callable[[Request], Mapping[str, str]] | None = None,
) -> Response:
    """Route a request, run its handler, publish, and answer.

    Args:
        request: the incoming Flask request.
        routes: the function's routes.
        publisher: returns the (cached) publisher; called only when needed.
        base_headers: headers added to every answer (e.g. CORS), from the request.

    Returns:
        The response. Bad input never yields a 5xx.
    """
    extra = dict(base_headers(request)) if base_headers else {}
    path = request.path.rstrip("/") or "/"
    route = next((r for r in routes if r.path == path), None)
    if route is None:
        return json_response(error_body("not_found", "no such route"), 404, extra)
    if request.method not in route.methods:
        allow = ", ".join(sorted(route.methods))
        body = error_body("method_not_allowed", f"use {allow}")
        return json_response(body, 405, {**extra, "Allow": allow})
    try:
        reply = route.handler(request)
        debug = is_debug(request)
        published = _publish(publisher(), reply.events, debug) if reply.events else []
    except InvalidPayload as exc:
        return json_response(exc.to_json(), exc.status, extra)
    except SignatureVerificationError:
        body = error_body("invalid_signature", "signature verification failed")
        return json_response(body, 400, extra)
    except (PublishError, UpstreamError) as exc:
        _log.warning(
            "request not accepted: %s",
            type(exc).__name__,
            extra={"outcome": "publish_failed", "route": path},
        )
        body = error_body("unavailable", "temporarily unavailable, retry later")
        return json_response(body, 503, {**extra, "Retry-After": RETRY_AFTER_SECONDS})
    except Exception as exc:  # a bug, not bad input: the sender should retry
        _log.error(  # the type only: the message may quote the request
            "unexpected error: %s", type(exc).__name__, extra={"route": path}
        )
        body = error_body("internal", "unexpected error, retry later")
        return json_response(body, 500, extra)
    headers = {**extra, **reply.headers}
    if debug:
        events = [e.model_dump(mode="json", exclude_none=True) for e in published]
        return json_response({"events": events}, 200, headers)
    if reply.body is None:
        resp = Response(status=reply.status)
        for key, value in headers.items():
            resp.headers[key] = value
        return resp
    return json_response(reply.body, reply.status, headers)
