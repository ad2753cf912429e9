"""The GA4 client: ``/g/collect`` hits from gtag.js / web GTM (SPECS §1).

Pure: an :class:`~truecount.sources.browser.HttpInput` and ``now`` in, canonical
events out. The request is claimed when ``v=2`` and ``tid`` are present.

* GET, or POST with an empty body: the query string is one event.
* POST with a body: one event per non-empty line (``\\n`` or ``\\r\\n``); each
  line's parameters override the query string's.

Parameter mapping (everything not listed is ignored: ``gtm``, ``_p``, ``_s``,
``_eu``, ``tfd``, ``are``, ``frm``, ``tag_exp``, ``_gaz``, ``gcu``, ``gcut``,
``dma_cps``, ``pscdl``, ``richsstsse``, ``dh``, ``ua*`` client hints):

=================  ============================================================
``en``             ``name`` (required, GA4 name rules)
``ep.<x>``         ``params.<x>``, string
``epn.<x>``        ``params.<x>``, number (a value that fails to parse stays a
                   string)
``up.<x>/upn.<x>`` ``user_properties.<x>``
``cid``            ``client.client_id`` (else the ``_ga`` cookie)
``uid``            ``client.user_id``
``sid``, ``sct``   ``client.session_id``, ``client.session_number`` (else the
                   ``_ga_<stream>`` cookie, GS1 or GS2)
``ul``, ``sr``     ``client.language``, ``client.screen_resolution``
``dl, dr, dt``     ``page.location``, ``page.referrer``, ``page.title``
``cu``             ``commerce.currency`` (else ``ep.currency``), upper-cased
``prN``            ``commerce.items[N-1]`` (``kN``/``vN`` → ``Item.params``)
``gcs, gcd, npa``  ``consent`` (see ``consent_mode``)
``seg``            ``params.session_engaged``
``_et``            ``params.engagement_time_msec``
``_ss _fv _nsi``   ``params.session_start``, ``first_visit``, ``new_session``
``_c _dbg _ee``    ``params.conversion``, ``debug_mode``, ``enhanced_measurement``
                   (each ``1`` when present)
``npa``, ``dma``   also ``params.npa``, ``params.dma``
``tt``, ``ir``     ``params.traffic_type``, ``params.ignore_referrer``
``cm cs cn cc``    ``params.campaign_medium``, ``campaign_source``,
``ck ci ccf cmt``  ``campaign_name``, ``campaign_content``, ``campaign_term``,
                   ``campaign_id``, ``campaign_creative_format``,
                   ``campaign_marketing_tactic``; on ``view_promotion`` /
                   ``select_promotion``: ``pi pn cn cs lo`` →
                   ``promotion_id``, ``promotion_name``, ``creative_name``,
                   ``creative_slot``, ``location_id``
=================  ============================================================

``event_id`` is ``ep.event_id`` when sent, else ``ga4-`` + 32 hex of
SHA-256(``tid|cid|_p|_s|en|line index``): a beacon sent twice is one event.
``occurred_at`` and ``received_at`` are both the time of receipt.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from truecount.errors import PayloadTooLarge
from truecount.models.event import ClickIds, Consent, Event, Item
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
    Draft,
    ParamValue,
    Problems,
    Scalar,
    build_item,
    derive_event_id,
    finish,
    is_event_name,
    param_value,
    parse_number,
    to_int,
)
from truecount.sources.consent_mode import from_consent_mode

CAMPAIGN_PARAMS: dict[str, str] = {
    "cm": "campaign_medium",
    "cs": "campaign_source",
    "cn": "campaign_name",
    "cc": "campaign_content",
    "ck": "campaign_term",
    "ci": "campaign_id",
    "ccf": "campaign_creative_format",
    "cmt": "campaign_marketing_tactic",
}
PROMOTION_PARAMS: dict[str, str] = {
    "pi": "promotion_id",
    "pn": "promotion_name",
    "cn": "creative_name",
    "cs": "creative_slot",
    "lo": "location_id",
}
PROMOTION_EVENTS = frozenset({"view_promotion", "select_promotion"})
FLAG_PARAMS: dict[str, str] = {
    "_ss": "session_start",
    "_fv": "first_visit",
    "_nsi": "new_session",
    "_c": "conversion",
    "_dbg": "debug_mode",
    "_ee": "enhanced_measurement",
}
NUMBER_PARAMS: dict[str, str] = {
    "seg": "session_engaged",
    "_et": "engagement_time_msec",
    "npa": "npa",
    "dma": "dma",
    "ir": "ignore_referrer",
}
TEXT_PARAMS: dict[str, str] = {"tt": "traffic_type"}
ITEM_KEYS: dict[str, str] = {
    "id": "item_id",
    "nm": "item_name",
    "br": "item_brand",
    "ca": "item_category",
    "c2": "item_category2",
    "c3": "item_category3",
    "c4": "item_category4",
    "c5": "item_category5",
    "va": "item_variant",
    "pr": "price",
    "qt": "quantity",
    "cp": "coupon",
    "ds": "discount",
    "af": "affiliation",
    "lp": "index",
    "ln": "item_list_name",
    "li": "item_list_id",
    "lo": "location_id",
    "pi": "promotion_id",
    "pn": "promotion_name",
    "cn": "creative_name",
    "cs": "creative_slot",
}
_DEFAULT_WIRE = {
    "currency": "cu",
    "value": "epn.value",
    "tax": "epn.tax",
    "shipping": "epn.shipping",
}
_ITEM_PARAM = re.compile(r"^pr(\d{1,3})$")
_CUSTOM_ITEM = re.compile(r"^([kv])(\d)(.*)$", re.DOTALL)


def parse_item(raw: str, path: str, problems: Problems) -> Item | None:
    """Decode one ``prN`` value (already URL-decoded once).

    Args:
        raw: e.g. ``idSKU123~nmBlue Shirt~pr10.5~qt2~k0color~v0red``.
        path: the error path, e.g. ``pr3`` or ``line[1].pr3``.
        problems: where bad fields are recorded.

    Returns:
        The item, or None when a field is invalid.
    """
    before = len(problems.fields)
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    custom_values: dict[str, str] = {}
    for token in raw.split("~"):
        pair = _CUSTOM_ITEM.match(token)
        if pair:
            target = names if pair.group(1) == "k" else custom_values
            target[pair.group(2)] = pair.group(3)
            continue
        key, value = token[:2], token[2:]
        field = ITEM_KEYS.get(key)
        if field is None or value == "":
            continue
        if field in ("price", "discount"):
            values[field] = parse_number(value)
            if values[field] is None:
                problems.add(path, f"{key} ({field}) is not a decimal number")
        elif field in ("quantity", "index"):
            values[field] = to_int(value)
            if values[field] is None:
                problems.add(path, f"{key} ({field}) is not a non-negative integer")
        else:
            values[field] = value
    custom: dict[str, ParamValue] = {
        name: custom_values.get(index, "") for index, name in names.items() if name
    }
    return build_item(values, custom, path, problems, before)


def _split_lines(body: bytes) -> list[bytes | None]:
    """Body lines (``None`` for blank ones, kept so indexes match the body)."""
    lines: list[bytes | None] = []
    for line in body.split(b"\n"):
        stripped = line.rstrip(b"\r")
        lines.append(stripped if stripped.strip() else None)
    return lines


class _Hit:
    """One event's effective parameters and where each came from."""

    def __init__(
        self, url: dict[str, str], line: dict[str, str] | None, index: int
    ) -> None:
        self.params = {**url, **line} if line else dict(url)
        self._url = url
        self._line = line or {}
        self.prefix = f"line[{index}]" if line is not None else ""
        self.index = index

    def path(self, key: str) -> str:
        """The wire path of a parameter: its line, unless it came from the URL."""
        if not self.prefix or (key in self._url and key not in self._line):
            return key
        return f"{self.prefix}.{key}"

    def get(self, key: str) -> str | None:
        value = self.params.get(key)
        return value if value not in (None, "") else None


def _param_path(hit: _Hit, wire: dict[str, str]) -> Callable[[str], str]:
    def path(name: str) -> str:
        return hit.path(wire.get(name) or _DEFAULT_WIRE.get(name, f"ep.{name}"))

    return path


def _event_params(
    hit: _Hit, name: str
) -> tuple[dict[str, Scalar], dict[str, Scalar], dict[str, str]]:
    params: dict[str, Scalar] = {}
    props: dict[str, Scalar] = {}
    wire: dict[str, str] = {}

    def put(target: str, value: Scalar, key: str) -> None:
        params[target] = value
        wire[target] = key

    campaign = PROMOTION_PARAMS if name in PROMOTION_EVENTS else {}
    for key, value in hit.params.items():
        if key in campaign:
            put(campaign[key], value, key)
        elif key in CAMPAIGN_PARAMS and key not in campaign:
            put(CAMPAIGN_PARAMS[key], value, key)
        elif key in FLAG_PARAMS:
            put(FLAG_PARAMS[key], 1, key)
        elif key in NUMBER_PARAMS and value != "":
            number = parse_number(value)
            put(NUMBER_PARAMS[key], number if number is not None else value, key)
        elif key in TEXT_PARAMS and value != "":
            put(TEXT_PARAMS[key], value, key)
    for key, value in hit.params.items():
        prefix, _, rest = key.partition(".")
        if not rest:
            continue
        number = parse_number(value) if prefix in ("epn", "upn") else None
        typed: Scalar = number if number is not None else value
        if prefix in ("ep", "epn"):
            put(rest, typed, key)
        elif prefix in ("up", "upn"):
            props[rest] = typed
            wire.setdefault(rest, key)
    currency = hit.get("cu")
    if currency is not None:
        put("currency", currency, "cu")
    return params, props, wire


def _items(hit: _Hit, problems: Problems) -> list[Item]:
    numbered = sorted(
        (int(m.group(1)), key)
        for key in hit.params
        if (m := _ITEM_PARAM.match(key)) and hit.params[key]
    )
    items: list[Item] = []
    for _, key in numbered:
        item = parse_item(hit.params[key], hit.path(key), problems)
        if item is not None:
            items.append(item)
    return items


class _Shared:
    """What the hits of one request share, each computed once per request.

    Pure memoisation: every value is what the per-hit call would return for
    the same arguments (the request, its cookies and ``now`` do not change
    between the lines of a batch).
    """

    def __init__(self, req: HttpInput, now: datetime, trusted_proxies: int) -> None:
        self.req = req
        self.now = now
        self.ip = client_ip(
            req.remote_addr, req.header("x-forwarded-for"), trusted_proxies
        )
        self.user_agent = req.header("user-agent")
        self.cookie_cid = client_id_from_ga_cookie(req.cookies.get("_ga"))
        self._sessions: dict[str, tuple[str | None, int | None]] = {}
        self._click_ids: dict[str | None, ClickIds] = {}
        self._consent: dict[tuple[str | None, ...], Consent] = {}

    def session(self, tid: str) -> tuple[str | None, int | None]:
        """Session id and number from the ``_ga_<stream>`` cookie of ``tid``."""
        found = self._sessions.get(tid)
        if found is None:
            found = session_from_ga_cookie(session_cookie(self.req.cookies, tid))
            self._sessions[tid] = found
        return found

    def click_ids(self, location: str | None) -> ClickIds:
        """Click ids of a page URL and the request's cookies."""
        found = self._click_ids.get(location)
        if found is None:
            found = click_ids(location, self.req.cookies, self.now)
            self._click_ids[location] = found
        return found

    def consent(self, gcs: str | None, gcd: str | None, npa: str | None) -> Consent:
        """Consent from a hit's ``gcs``, ``gcd`` and ``npa``."""
        key = (gcs, gcd, npa)
        found = self._consent.get(key)
        if found is None:
            found = from_consent_mode(gcs, gcd, npa)
            self._consent[key] = found
        return found


def _draft(hit: _Hit, shared: _Shared, problems: Problems) -> Draft | None:
    if hit.params.get("v") != "2":
        problems.add(hit.path("v"), "must be 2 (GA4)")
    tid = hit.get("tid")
    if tid is None:
        problems.add(hit.path("tid"), "required")
    name = hit.get("en") or ""
    if not name:
        problems.add(hit.path("en"), "required")
    elif not is_event_name(name):
        problems.add(hit.path("en"), "not a valid event name")
    items = _items(hit, problems)
    if tid is None or not is_event_name(name):
        return None
    params, props, wire = _event_params(hit, name)
    explicit_id = params.pop("event_id", None)
    cookie_sid, cookie_sct = shared.session(tid)
    cid = hit.get("cid") or shared.cookie_cid
    event_id = (
        str(param_value(explicit_id)).strip()
        if explicit_id is not None and str(explicit_id).strip()
        else None
    )
    if event_id is None:
        event_id = derive_event_id(
            "ga4",
            tid,
            cid or "",
            hit.get("_p") or "",
            hit.get("_s") or "",
            name,
            str(hit.index),
        )
    sct = to_int(hit.get("sct") or "")
    location = hit.get("dl")
    return Draft(
        source="ga4",
        name=name,
        event_id=event_id,
        occurred_at=shared.now,
        received_at=shared.now,
        params=params,
        param_path=_param_path(hit, wire),
        client={
            "client_id": cid,
            "user_id": hit.get("uid"),
            "session_id": hit.get("sid") or cookie_sid,
            "session_number": sct if sct is not None else cookie_sct,
            "ip": shared.ip,
            "user_agent": shared.user_agent,
            "language": hit.get("ul"),
            "screen_resolution": hit.get("sr"),
        },
        page={"location": location, "referrer": hit.get("dr"), "title": hit.get("dt")},
        click_ids=shared.click_ids(location),
        consent=shared.consent(hit.get("gcs"), hit.get("gcd"), hit.get("npa")),
        items=items,
        user_properties=props,
        prefix=hit.prefix,
    )


def parse_request(
    req: HttpInput, now: datetime, *, trusted_proxies: int = 1, max_events: int = 50
) -> list[Event]:
    """Parse a ``/g/collect`` request into canonical events (no dedup key yet).

    Args:
        req: the request.
        now: the time of receipt (UTC).
        trusted_proxies: our own proxy hops in ``X-Forwarded-For``.
        max_events: the most events one request may carry.

    Returns:
        One event per hit, in order.

    Raises:
        InvalidPayload: 400 naming every bad field, or 413 for too many events.
    """
    url = dict(parse_query(req.query))
    hits: list[_Hit] = []
    if req.method == "POST" and req.body.strip():
        lines = _split_lines(req.body)
        if sum(1 for line in lines if line is not None) > max_events:
            raise PayloadTooLarge(f"more than {max_events} events", "$body")
        for index, line in enumerate(lines):
            if line is not None:
                pairs = parse_query(line, f"line[{index}]")
                hits.append(_Hit(url, dict(pairs), index))
    else:
        hits.append(_Hit(url, None, 0))
    problems = Problems()
    events: list[Event] = []
    shared = _Shared(req, now, trusted_proxies)
    for hit in hits:
        draft = _draft(hit, shared, problems)
        event = finish(draft, problems) if draft is not None else None
        if event is not None:
            events.append(event)
    problems.raise_if_any("invalid GA4 hit")
    return events
