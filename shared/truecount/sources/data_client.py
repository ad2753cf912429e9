"""The Data Client: ``/data``, compatible with Stape's Data Tag.

Pure: an :class:`~truecount.sources.browser.HttpInput` and ``now`` in, canonical
events out.

Where the event objects come from:

* ``GET``: ``dtdc`` (base64 of the JSON, standard or URL-safe alphabet, padding
  optional), else ``dtcd`` (the JSON itself), else the query parameters
  themselves form one flat event object.
* ``POST``: a JSON object (one event) or array (several events); a
  form-encoded body (``Content-Type: application/x-www-form-urlencoded``, or any
  body that does not start with ``{`` or ``[``) is one flat event object. An
  empty body falls back to the query string, as for ``GET``.
* In flat (query or form) objects, ``items``, ``user_data``, ``consent_state``
  and ``common_cookie`` may hold JSON text.

Fields of an event object:

===================  ==========================================================
``event_name``       ``name`` (required)
``event_id``         ``event_id``; else ``data-`` + 32 hex of SHA-256 of the
                     canonical JSON of the object (sorted keys) and its index in
                     the request
``client_id``        ``client.client_id`` (else ``_ga`` from ``common_cookie``
                     or the request cookies)
``user_id``          ``client.user_id``
``ga_session_id``,   ``client.session_id`` / ``session_number`` (also
``ga_session_number`` ``session_id`` / ``session_number``; else ``_ga_<stream>``)
``language``,        ``client.language`` / ``client.screen_resolution``
``screen_resolution``
``page_location``,   ``page.location``, ``page.referrer``, ``page.title``
``page_referrer``,
``page_title``
``value``,           ``commerce`` for e-commerce events (see ``common``),
``currency``, ...    ``lead`` for lead events
``items[]``          ``commerce.items`` (GA4 item keys; others → ``Item.params``)
``user_data``        ``email_address`` (or ``email``), ``phone_number`` (or
                     ``phone``), ``external_id``, and ``address`` (object or
                     list, first used) with ``first_name``, ``last_name``,
                     ``city``, ``region``, ``postal_code``, ``country``; also
                     the ``sha256_*`` forms. Hashed into ``identity``.
``consent_state``    ``consent`` (granted/denied/true/false per type)
``common_cookie``    ``_fbc``, ``_fbp``, ``_gcl_aw``, ``_ga``, ``_ga_*``,
                     ``ttclid``, ``_ttp``, ``li_fat_id``, ... (over the request's
                     own cookies)
``gclid``, ``fbc``,  ``click_ids`` (over the page URL and cookies)
...
anything else        ``params``: strings and numbers (booleans become
                     ``"true"``/``"false"``; nested objects and nulls are
                     dropped)
===================  ==========================================================

IP and user agent come from the request (``X-Forwarded-For``, ``User-Agent``).
``occurred_at`` and ``received_at`` are the time of receipt.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from truecount.errors import InvalidPayload, PayloadTooLarge
from truecount.models.event import Event
from truecount.sources.browser import (
    HttpInput,
    click_ids,
    client_id_from_ga_cookie,
    client_ip,
    parse_query,
    session_cookie,
    session_from_ga_cookie,
)
from truecount.sources.common import (
    CLICK_ID_PARAMS,
    Draft,
    Problems,
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

STRUCTURED = ("items", "user_data", "consent_state", "common_cookie")
_HANDLED = frozenset(
    {
        "event_name",
        "event_id",
        "client_id",
        "user_id",
        "ga_session_id",
        "session_id",
        "ga_session_number",
        "session_number",
        "language",
        "screen_resolution",
        "page_location",
        "page_referrer",
        "page_title",
        "user_agent",
        "ip_override",
        *STRUCTURED,
        *CLICK_ID_PARAMS,
    }
)
_ADDRESS_KEYS = ("first_name", "last_name", "city", "region", "postal_code", "country")


def decode_dtdc(value: str) -> Any:
    """Decode a ``dtdc`` value: base64 (either alphabet, padding optional) JSON.

    Raises:
        InvalidPayload: 400 naming ``dtdc``.
    """
    text = "".join(value.split()).replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        message = "not valid base64"
        raise InvalidPayload(message, [{"path": "dtdc", "message": message}]) from None
    return load_json(raw, "dtdc")


def _flat_object(pairs: list[tuple[str, str]], problems: Problems) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        data.setdefault(key, value)
    for key in STRUCTURED:
        text = data.get(key)
        if isinstance(text, str) and text.strip()[:1] in ("{", "["):
            try:
                data[key] = load_json(text, key)
            except InvalidPayload as exc:
                problems.extend(exc.fields)
    return data


def _payload(req: HttpInput, problems: Problems) -> tuple[Any, bool]:
    """The parsed payload and whether it was a JSON array."""
    if req.method == "POST" and req.body.strip():
        content_type = (req.header("content-type") or "").lower()
        body = req.body.lstrip()
        if "x-www-form-urlencoded" in content_type or body[:1] not in (b"{", b"["):
            return _flat_object(parse_query(req.body, "$body"), problems), False
        data = load_json(req.body)
        return data, isinstance(data, list)
    query = parse_query(req.query)
    params = dict(query)
    if "dtdc" in params:
        data = decode_dtdc(params["dtdc"])
    elif "dtcd" in params:
        data = load_json(params["dtcd"], "dtcd")
    else:
        return _flat_object(query, problems), False
    return data, isinstance(data, list)


def _identity(user_data: Any, path: str, problems: Problems) -> dict[str, str]:
    if user_data is None:
        return {}
    if not isinstance(user_data, dict):
        problems.add(path, "must be an object")
        return {}
    raw: dict[str, str] = {}
    aliases = {
        "email": ("email_address", "email", "sha256_email_address"),
        "phone": ("phone_number", "phone", "sha256_phone_number"),
        "external_id": ("external_id",),
    }
    for target, keys in aliases.items():
        for key in keys:
            value = user_data.get(key)
            first = value[0] if isinstance(value, list) and value else value
            if isinstance(first, str) and first.strip():
                raw[target] = first
                break
    address = user_data.get("address")
    if isinstance(address, list):
        address = address[0] if address else None
    sources = [user_data, address] if isinstance(address, dict) else [user_data]
    for source in sources:
        for key in _ADDRESS_KEYS:
            value = source.get(key) or source.get(f"sha256_{key}")
            if isinstance(value, str) and value.strip():
                raw.setdefault(key, value)
    return raw


def _string_map(value: Any, path: str, problems: Problems) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(path, "must be an object")
        return {}
    return {k: v for k, v in value.items() if isinstance(v, str)}


def _draft(
    data: Mapping[str, Any],
    index: int,
    prefix: str,
    *,
    req: HttpInput,
    now: datetime,
    trusted_proxies: int,
    problems: Problems,
) -> Draft | None:
    name = text_field(data, "event_name", prefix, problems) or ""
    if not name:
        problems.add(join_path(prefix, "event_name"), "required")
    elif not is_event_name(name):
        problems.add(join_path(prefix, "event_name"), "not a valid event name")
    identity = _identity(
        data.get("user_data"), join_path(prefix, "user_data"), problems
    )
    items = items_from_list(data.get("items"), join_path(prefix, "items"), problems)
    consent_raw = data.get("consent_state")
    if consent_raw is not None and not isinstance(consent_raw, dict):
        problems.add(join_path(prefix, "consent_state"), "must be an object")
        consent_raw = None
    cookies = {
        **req.cookies,
        **_string_map(
            data.get("common_cookie"), join_path(prefix, "common_cookie"), problems
        ),
    }
    texts = {
        key: text_field(data, key, prefix, problems)
        for key in (
            "event_id",
            "client_id",
            "user_id",
            "page_location",
            "page_referrer",
            "page_title",
            "language",
            "screen_resolution",
        )
    }
    explicit_clicks = {
        key: value
        for key in CLICK_ID_PARAMS
        if (value := text_field(data, key, prefix, problems)) is not None
    }
    if not is_event_name(name):
        return None
    sid = text_field(data, "ga_session_id", prefix, problems) or text_field(
        data, "session_id", prefix, problems
    )
    sct = data.get("ga_session_number", data.get("session_number"))
    cookie_sid, cookie_sct = session_from_ga_cookie(session_cookie(cookies, None))
    number = to_int(sct) if sct is not None else None
    event_id = texts["event_id"] or derive_event_id(
        "data", canonical_json(data), str(index)
    )
    location = texts["page_location"]
    return Draft(
        source="data",
        name=name,
        event_id=event_id,
        occurred_at=now,
        received_at=now,
        params=scalars(data, _HANDLED),
        param_path=lambda key: join_path(prefix, key),
        client={
            "client_id": texts["client_id"]
            or client_id_from_ga_cookie(cookies.get("_ga")),
            "user_id": texts["user_id"],
            "session_id": sid or cookie_sid,
            "session_number": number if number is not None else cookie_sct,
            "ip": client_ip(
                req.remote_addr, req.header("x-forwarded-for"), trusted_proxies
            ),
            "user_agent": req.header("user-agent"),
            "language": texts["language"],
            "screen_resolution": texts["screen_resolution"],
        },
        page={
            "location": location,
            "referrer": texts["page_referrer"],
            "title": texts["page_title"],
        },
        identity=identity,
        click_ids=click_ids(location, cookies, now, explicit_clicks),
        consent=from_flags(consent_raw),
        items=items,
        prefix=prefix,
    )


def parse_request(
    req: HttpInput, now: datetime, *, trusted_proxies: int = 1, max_events: int = 50
) -> list[Event]:
    """Parse a ``/data`` request into canonical events (no dedup key yet).

    Args:
        req: the request.
        now: the time of receipt (UTC).
        trusted_proxies: our own proxy hops in ``X-Forwarded-For``.
        max_events: the most events one request may carry.

    Returns:
        The events, in order.

    Raises:
        InvalidPayload: 400 naming every bad field, or 413 for too many events.
    """
    problems = Problems()
    data, is_array = _payload(req, problems)
    objects = data if isinstance(data, list) else [data]
    if len(objects) > max_events:
        raise PayloadTooLarge(f"more than {max_events} events")
    if not objects:
        problems.add("$", "no events")
    events: list[Event] = []
    for index, obj in enumerate(objects):
        prefix = f"[{index}]" if is_array else ""
        if not isinstance(obj, dict):
            problems.add(prefix or "$", "must be an object")
            continue
        draft = _draft(
            obj,
            index,
            prefix,
            req=req,
            now=now,
            trusted_proxies=trusted_proxies,
            problems=problems,
        )
        event = finish(draft, problems) if draft is not None else None
        if event is not None:
            events.append(event)
    problems.raise_if_any("invalid data event")
    return events
