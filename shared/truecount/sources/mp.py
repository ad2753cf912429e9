"""GA4 Measurement Protocol JSON in: ``POST /mp/collect`` (SPECS §2).

Pure: an :class:`~truecount.sources.browser.HttpInput`, the accepted API secrets
and ``now`` in, canonical events out.

* Auth: the ``api_secret`` query parameter must equal one of the configured
  secrets (constant-time compare). Missing or wrong → 401; with no secret
  configured every request is refused: server-to-server input is never accepted
  unauthenticated.
* Body: ``client_id`` (or ``app_instance_id``) is required; ``user_id``,
  ``timestamp_micros``, ``consent`` (``ad_user_data``/``ad_personalization``,
  ``GRANTED``/``DENIED``; ``non_personalized_ads: true`` denies
  ad_personalization when not given), ``user_data``, ``user_properties``
  (``{"name": {"value": ...}}``), ``ip_override`` and ``user_agent`` (the
  request's own IP and user agent are the sending server's, so they are not
  used), ``device.language``/``device.screen_resolution``, and ``events``
  (1..25, each ``name``, ``params``, ``timestamp_micros``).
* ``user_data``: the ``sha256_*`` fields (64 hex, else 400) go into
  ``identity`` as they are. Because the sender is an authenticated server and
  hashing here is safer than refusing, raw ``email_address``, ``phone_number``,
  ``first_name`` and ``last_name`` are also accepted and hashed at the edge;
  ``city``, ``region``, ``postal_code``, ``country`` are plain in MP and are
  hashed too. ``sha256_street`` is dropped (the canonical identity has no
  street).
* Event params: ``event_id`` → ``event_id`` (else ``mp-`` + 32 hex of SHA-256 of
  ``client_id|user_id|timestamp|name|index|params``); ``session_id`` /
  ``session_number`` → ``client``; ``page_location``, ``page_referrer``,
  ``page_title`` → ``page``; ``items`` → ``commerce.items``; click ids
  (``gclid``, ``fbc``, ...) → ``click_ids``; the rest → ``params``.
* ``occurred_at``: the event's ``timestamp_micros``, else the request's, else
  the time of receipt. Timestamps outside 2000..2100 are a 400.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from truecount.errors import InvalidPayload, PayloadTooLarge
from truecount.models.event import Event
from truecount.sources.browser import HttpInput, click_ids, client_ip, parse_query
from truecount.sources.common import (
    CLICK_ID_PARAMS,
    Draft,
    Problems,
    Scalar,
    canonical_json,
    derive_event_id,
    finish,
    is_event_name,
    items_from_list,
    join_path,
    load_json,
    scalars,
    text_field,
    to_int,
)
from truecount.sources.consent_mode import from_flags

MAX_EVENTS = 25
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_MICROS = 946_684_800_000_000  # 2000-01-01
_MAX_MICROS = 4_102_444_800_000_000  # 2100-01-01
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_IP_OK = re.compile(r"^[0-9A-Fa-f:.]{2,45}$")
_EVENT_PARAMS_HANDLED = frozenset(
    {
        "event_id",
        "session_id",
        "session_number",
        "page_location",
        "page_referrer",
        "page_title",
        "items",
        *CLICK_ID_PARAMS,
    }
)


def unauthorized() -> InvalidPayload:
    """The 401 answer for a missing or wrong ``api_secret``."""
    message = "missing or invalid api_secret"
    return InvalidPayload(
        message, [{"path": "api_secret", "message": message}], "unauthorized", 401
    )


def check_api_secret(query: bytes, secrets: Sequence[str]) -> None:
    """Authenticate a request by its ``api_secret`` query parameter.

    Every configured secret is compared in constant time.

    Args:
        query: the raw query string.
        secrets: the accepted secrets; empty refuses everything.

    Raises:
        InvalidPayload: 401 when the secret is missing, wrong, or none is
            configured; 400 for a malformed query string.
    """
    given = dict(parse_query(query)).get("api_secret", "")
    if not given or not secrets:
        raise unauthorized()
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(given.encode(), secret.encode())
    if not matched:
        raise unauthorized()


def _timestamp(value: Any, path: str, problems: Problems) -> datetime | None:
    if value is None:
        return None
    micros = to_int(value)
    if micros is None or not _MIN_MICROS <= micros < _MAX_MICROS:
        problems.add(path, "not unix microseconds between 2000 and 2100")
        return None
    return _EPOCH + timedelta(microseconds=micros)


def _hashed_list(
    data: Mapping[str, Any], key: str, path: str, problems: Problems
) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    for index, entry in enumerate(values):
        where = join_path(path, f"{key}[{index}]" if isinstance(value, list) else key)
        if not isinstance(entry, str) or not _HEX64.match(entry.strip()):
            problems.add(where, "must be a SHA-256 hex digest")
            return None
    return values[0].strip().lower() if values else None


def _identity(user_data: Any, problems: Problems) -> dict[str, str]:
    if user_data is None:
        return {}
    if not isinstance(user_data, dict):
        problems.add("user_data", "must be an object")
        return {}
    raw: dict[str, str] = {}
    for target, hashed_key, plain_key in (
        ("email", "sha256_email_address", "email_address"),
        ("phone", "sha256_phone_number", "phone_number"),
    ):
        hashed = _hashed_list(user_data, hashed_key, "user_data", problems)
        plain = user_data.get(plain_key)
        if isinstance(plain, list):
            plain = plain[0] if plain else None
        if hashed:
            raw[target] = hashed
        elif isinstance(plain, str) and plain.strip():
            raw[target] = plain
    address = user_data.get("address")
    if address is None:
        return raw
    listed = isinstance(address, list)
    first = address[0] if listed and address else address
    if not isinstance(first, dict):
        problems.add("user_data.address", "must be an object or a list of objects")
        return raw
    path = "user_data.address[0]" if listed else "user_data.address"
    for key in ("first_name", "last_name"):
        hashed = _hashed_list(first, f"sha256_{key}", path, problems)
        plain = first.get(key)
        if hashed:
            raw[key] = hashed
        elif isinstance(plain, str) and plain.strip():
            raw[key] = plain
    for key in ("city", "region", "postal_code", "country"):
        value = first.get(key)
        if isinstance(value, str) and value.strip():
            raw[key] = value
    return raw


def _user_properties(value: Any, problems: Problems) -> dict[str, Scalar]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add("user_properties", "must be an object")
        return {}
    out: dict[str, Scalar] = {}
    for key, entry in value.items():
        inner = entry.get("value") if isinstance(entry, dict) else entry
        if isinstance(inner, (str, int, float, bool, Decimal)):
            out[key] = inner
    return out


def _client_ip(value: Any) -> str | None:
    if not isinstance(value, str) or not _IP_OK.match(value.strip()):
        return None
    return client_ip(value.strip(), None, 0)


def _event_draft(
    event: Any,
    index: int,
    *,
    body: Mapping[str, Any],
    shared: dict[str, Any],
    now: datetime,
    problems: Problems,
) -> Draft | None:
    prefix = f"events[{index}]"
    if not isinstance(event, dict):
        problems.add(prefix, "must be an object")
        return None
    name = text_field(event, "name", prefix, problems) or ""
    if not name:
        problems.add(join_path(prefix, "name"), "required")
    elif not is_event_name(name):
        problems.add(join_path(prefix, "name"), "not a valid event name")
    params = event.get("params") or {}
    if not isinstance(params, dict):
        problems.add(join_path(prefix, "params"), "must be an object")
        params = {}
    ppath = join_path(prefix, "params")
    occurred = _timestamp(
        event.get("timestamp_micros"), join_path(prefix, "timestamp_micros"), problems
    )
    items = items_from_list(params.get("items"), join_path(ppath, "items"), problems)
    texts = {
        key: text_field(params, key, ppath, problems)
        for key in ("event_id", "session_id", "page_location", "page_referrer")
    }
    title = text_field(params, "page_title", ppath, problems)
    explicit_clicks = {
        key: value
        for key in CLICK_ID_PARAMS
        if (value := text_field(params, key, ppath, problems)) is not None
    }
    if not is_event_name(name):
        return None
    event_id = texts["event_id"] or derive_event_id(
        "mp",
        shared["client"].get("client_id") or "",
        shared["client"].get("user_id") or "",
        str(event.get("timestamp_micros", body.get("timestamp_micros", ""))),
        name,
        str(index),
        canonical_json(params),
    )
    number = to_int(params.get("session_number"))
    location = texts["page_location"]
    return Draft(
        source="mp",
        name=name,
        event_id=event_id,
        occurred_at=occurred or shared["occurred_at"] or now,
        received_at=now,
        params=scalars(params, _EVENT_PARAMS_HANDLED),
        param_path=lambda key: join_path(ppath, key),
        client={
            **shared["client"],
            "session_id": texts["session_id"],
            "session_number": number,
        },
        page={"location": location, "referrer": texts["page_referrer"], "title": title},
        identity=dict(shared["identity"]),
        click_ids=click_ids(location, {}, now, explicit_clicks),
        consent=shared["consent"],
        items=items,
        user_properties=dict(shared["user_properties"]),
        prefix=prefix,
    )


def parse_body(body: bytes, now: datetime, *, max_events: int = 50) -> list[Event]:
    """Parse an authenticated ``/mp/collect`` body into canonical events.

    Args:
        body: the raw JSON body.
        now: the time of receipt (UTC).
        max_events: the most events one request may carry (413 above it).

    Returns:
        The events, in order (no dedup key yet).

    Raises:
        InvalidPayload: 400 naming every bad field, or 413 for too many events.
    """
    data = load_json(body)
    problems = Problems()
    if not isinstance(data, dict):
        raise InvalidPayload(
            "body must be a JSON object",
            [{"path": "$", "message": "must be an object"}],
        )
    events = data.get("events")
    if isinstance(events, list) and len(events) > max_events:
        raise PayloadTooLarge(f"more than {max_events} events", "events")
    if not isinstance(events, list) or not events:
        problems.add("events", "required: 1 to 25 events")
        events = []
    elif len(events) > MAX_EVENTS:
        problems.add("events", f"at most {MAX_EVENTS} events")
    client_id = text_field(data, "client_id", "", problems) or text_field(
        data, "app_instance_id", "", problems
    )
    if client_id is None:
        problems.add("client_id", "required")
    consent_raw = data.get("consent")
    if consent_raw is not None and not isinstance(consent_raw, dict):
        problems.add("consent", "must be an object")
        consent_raw = None
    consent = from_flags(consent_raw)
    if data.get("non_personalized_ads") is True and consent.ad_personalization == (
        "unknown"
    ):
        consent = consent.model_copy(update={"ad_personalization": "denied"})
    device_raw = data.get("device")
    device: dict[str, Any] = device_raw if isinstance(device_raw, dict) else {}
    shared: dict[str, Any] = {
        "occurred_at": _timestamp(
            data.get("timestamp_micros"), "timestamp_micros", problems
        ),
        "client": {
            "client_id": client_id,
            "user_id": text_field(data, "user_id", "", problems),
            "ip": _client_ip(data.get("ip_override")),
            "user_agent": text_field(data, "user_agent", "", problems),
            "language": text_field(device, "language", "device", problems),
            "screen_resolution": text_field(
                device, "screen_resolution", "device", problems
            ),
        },
        "identity": _identity(data.get("user_data"), problems),
        "user_properties": _user_properties(data.get("user_properties"), problems),
        "consent": consent,
    }
    out: list[Event] = []
    for index, event in enumerate(events[:MAX_EVENTS]):
        draft = _event_draft(
            event, index, body=data, shared=shared, now=now, problems=problems
        )
        built = finish(draft, problems) if draft is not None else None
        if built is not None:
            out.append(built)
    problems.raise_if_any("invalid Measurement Protocol request")
    return out


def parse_request(
    req: HttpInput,
    now: datetime,
    *,
    secrets: Sequence[str],
    max_events: int = 50,
) -> list[Event]:
    """Authenticate and parse a ``/mp/collect`` request.

    Args:
        req: the request.
        now: the time of receipt (UTC).
        secrets: the accepted ``api_secret`` values.
        max_events: the most events one request may carry.

    Returns:
        The events, in order (no dedup key yet).

    Raises:
        InvalidPayload: 401 (auth), 400 (bad body) or 413 (too many events).
    """
    check_api_secret(req.query, secrets)
    return parse_body(req.body, now, max_events=max_events)
