"""What the three browser sources share: typing values, money, PII, assembly.

Each source (``ga4``, ``data_client``, ``mp``) turns its wire format into
:class:`Draft` objects with wire-level checks done; :func:`finish` then applies
the common rules and builds the canonical :class:`Event`:

* e-commerce events (GA4's list, or any event with items or a
  ``transaction_id``) move ``transaction_id``, ``value``, ``currency``, ``tax``,
  ``shipping``, ``coupon`` and the items into ``commerce``. Money is an exact
  ``Decimal``. A ``value`` without a currency is an error on ``purchase`` and
  ``refund``; on other events it stays a plain number in ``params``;
* lead events move ``lead_id``, ``value`` and ``currency`` into ``lead``;
* PII never leaves: parameters named like PII (``email``, ``phone``, ...), any
  parameter or user property whose value holds an email address, an email in
  the page URL's query or title, and a ``user_id`` that is an email, are taken
  out; the first email found (and the named values) are hashed into
  ``identity`` with :func:`truecount.core.pii.hash_identity` (an event id that
  holds an email is replaced by its hash);
* problems are collected (:class:`Problems`) so a 400 names every bad field.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ValidationError

from truecount.core.currency import is_currency
from truecount.core.pii import RawIdentity, find_email, hash_identity, scrub_params
from truecount.errors import InvalidPayload
from truecount.models.event import (
    NAME_PATTERN,
    ClickIds,
    Client,
    Commerce,
    Consent,
    Event,
    Item,
    Lead,
    Page,
    Source,
    error_fields,
)

Scalar = str | int | float | Decimal | bool
ParamValue = str | int | float

#: GA4's recommended e-commerce events: their money goes into ``commerce``.
ECOMMERCE_EVENTS: frozenset[str] = frozenset(
    {
        "add_payment_info",
        "add_shipping_info",
        "add_to_cart",
        "add_to_wishlist",
        "begin_checkout",
        "purchase",
        "refund",
        "remove_from_cart",
        "select_item",
        "select_promotion",
        "view_cart",
        "view_item",
        "view_item_list",
        "view_promotion",
    }
)
#: Events whose value must carry a currency.
MONEY_REQUIRED: frozenset[str] = frozenset({"purchase", "refund"})
#: Lead funnel events: ``lead_id``/``value``/``currency`` go into ``lead``.
LEAD_EVENTS: frozenset[str] = frozenset(
    {
        "generate_lead",
        "qualify_lead",
        "working_lead",
        "close_convert_lead",
        "close_unconvert_lead",
        "disqualify_lead",
    }
)
#: Parameters that are PII by name: hashed into identity, never forwarded.
PII_PARAMS: Mapping[str, str | None] = {
    "email": "email",
    "email_address": "email",
    "user_email": "email",
    "phone": "phone",
    "phone_number": "phone",
    "first_name": "first_name",
    "last_name": "last_name",
    "street": None,
    "sha256_email_address": "email",
    "sha256_phone_number": "phone",
}
#: Click ids that may come as plain parameters (data tag, MP).
CLICK_ID_PARAMS: tuple[str, ...] = tuple(ClickIds.model_fields)

_NAME = re.compile(NAME_PATTERN)
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,99}$")
_NUMBER = re.compile(r"^[+-]?(?:\d{1,30}(?:\.\d{0,30})?|\.\d{1,30})$")
_INT_LIMIT = 2**63
_ITEM_TEXT = (
    "item_id",
    "item_name",
    "item_brand",
    "item_category",
    "item_category2",
    "item_category3",
    "item_category4",
    "item_category5",
    "item_variant",
    "coupon",
    "affiliation",
    "item_list_id",
    "item_list_name",
    "location_id",
    "promotion_id",
    "promotion_name",
    "creative_name",
    "creative_slot",
)
_ITEM_MONEY = ("price", "discount")
_ITEM_INT = ("quantity", "index")


class Problems:
    """Collects ``{"path", "message"}`` entries for one request."""

    def __init__(self) -> None:
        self.fields: list[dict[str, str]] = []

    def add(self, path: str, message: str) -> None:
        """Record one bad field (duplicates are kept once)."""
        entry = {"path": path or "$", "message": message}
        if entry not in self.fields:
            self.fields.append(entry)

    def extend(self, entries: list[dict[str, str]]) -> None:
        """Record several entries."""
        for entry in entries:
            self.add(entry["path"], entry["message"])

    def raise_if_any(self, message: str = "invalid request") -> None:
        """Raise a 400 naming every recorded field, if there is any.

        Raises:
            InvalidPayload: when at least one field was recorded.
        """
        if self.fields:
            raise InvalidPayload(message, list(self.fields))


def join_path(prefix: str, name: str) -> str:
    """``line[2]`` + ``en`` → ``line[2].en``; an empty prefix gives ``en``."""
    if not prefix:
        return name
    return f"{prefix}{name}" if name.startswith("[") else f"{prefix}.{name}"


def is_event_name(name: str) -> bool:
    """True for a valid canonical event name (GA4 rules)."""
    return bool(_NAME.match(name))


def parse_number(text: str) -> Decimal | None:
    """A plain decimal number (``21``, ``-0.5``, ``10.50``), else None.

    Exponents, ``inf``, ``nan`` and more than 30 digits each side are not numbers.
    """
    stripped = text.strip()
    if not _NUMBER.match(stripped):
        return None
    try:
        return Decimal(stripped)
    except InvalidOperation:  # pragma: no cover - the pattern rules it out
        return None


def param_value(value: Scalar) -> ParamValue | None:
    """Type a parameter value for ``Event.params``.

    Integral decimals become ``int``, other finite decimals ``float``; booleans
    become ``"true"``/``"false"``; non-finite numbers become strings.

    Args:
        value: a string, number or boolean.

    Returns:
        The typed value, or None for something that is not a scalar.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if abs(value) < _INT_LIMIT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        if not value.is_finite() or abs(value.adjusted()) > 30:
            return str(value)
        if value == value.to_integral_value() and abs(value) < _INT_LIMIT:
            return int(value)
        return float(value)
    return None


def to_decimal(value: Any) -> Decimal | None:
    """A finite decimal from a JSON number or a numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return parse_number(value)
    if isinstance(value, int):
        return Decimal(value) if abs(value) < 10**30 else None
    if isinstance(value, float):
        finite = math.isfinite(value) and abs(value) < 1e30
        return Decimal(repr(value)) if finite else None
    if isinstance(value, Decimal):
        return value if value.is_finite() and abs(value.adjusted()) <= 30 else None
    return None


def to_int(value: Any) -> int | None:
    """A non-negative integer from a JSON number or a digit string, else None."""
    number = to_decimal(value)
    if number is None or number != number.to_integral_value() or number < 0:
        return None
    return int(number)


def money(value: Any, path: str, problems: Problems) -> Decimal | None:
    """Parse an amount exactly; record a problem when it is not a number."""
    if value is None or value == "":
        return None
    number = to_decimal(value)
    if number is None:
        problems.add(path, "not a decimal number")
    return number


def currency_code(value: Any, path: str, problems: Problems) -> str | None:
    """Upper-case and check an ISO 4217 code; record a problem when unknown."""
    if value is None or value == "":
        return None
    code = value.strip().upper() if isinstance(value, str) else ""
    if not is_currency(code):
        problems.add(path, "not an ISO 4217 currency code")
        return None
    return code


def derive_event_id(prefix: str, *parts: str) -> str:
    """A deterministic event id: ``<prefix>-`` + 32 hex of SHA-256 of the parts.

    Args:
        prefix: the source, e.g. ``ga4``.
        parts: what identifies the occurrence, joined with ``|``.

    Returns:
        e.g. ``ga4-3f2a...`` (36 characters for a 3-letter prefix).
    """
    digest = hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()
    return f"{prefix}-{digest[:32]}"


def item_from_mapping(
    data: Mapping[str, Any], path: str, problems: Problems
) -> Item | None:
    """Build an item from JSON keys (GA4 item field names).

    Unknown scalar keys become custom item parameters (``Item.params``).

    Args:
        data: one item object.
        path: its error path, e.g. ``items[2]``.
        problems: where bad fields are recorded.

    Returns:
        The item, or None when it is invalid.
    """
    before = len(problems.fields)
    values: dict[str, Any] = {}
    custom: dict[str, ParamValue] = {}
    for key, raw in data.items():
        if raw is None:
            continue
        where = join_path(path, key)
        if key in _ITEM_TEXT:
            if isinstance(raw, (dict, list, bool)):
                problems.add(where, "must be a string")
            else:
                values[key] = raw if isinstance(raw, str) else str(param_value(raw))
        elif key in _ITEM_MONEY:
            values[key] = money(raw, where, problems)
        elif key in _ITEM_INT:
            number = to_int(raw)
            if number is None:
                problems.add(where, "not a non-negative integer")
            values[key] = number
        elif not isinstance(raw, (dict, list)):
            typed = param_value(raw)
            if typed is not None:
                custom[key] = typed
    return build_item(values, custom, path, problems, before)


def items_from_list(value: Any, path: str, problems: Problems) -> list[Item]:
    """A JSON ``items`` array as items; each bad entry is a problem at its path.

    Args:
        value: the ``items`` value as sent (None when absent).
        path: its path, e.g. ``events[0].params.items``.
        problems: where bad entries are recorded.

    Returns:
        The valid items, in order.
    """
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(path, "must be an array")
        return []
    items: list[Item] = []
    for index, entry in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(entry, dict):
            problems.add(where, "must be an object")
            continue
        item = item_from_mapping(entry, where, problems)
        if item is not None:
            items.append(item)
    return items


def build_item(
    values: dict[str, Any],
    custom: dict[str, ParamValue],
    path: str,
    problems: Problems,
    before: int | None = None,
) -> Item | None:
    """Validate item fields into an :class:`Item`, recording problems.

    Args:
        values: GA4 item fields.
        custom: custom item parameters.
        path: the item's error path.
        problems: where bad fields are recorded.
        before: the problem count before this item's own checks.

    Returns:
        The item, or None when it is invalid.
    """
    clean_custom, _ = scrub_params(dict(custom))
    if before is not None and len(problems.fields) > before:
        return None
    try:
        return Item.model_validate({**values, "params": clean_custom})
    except ValidationError as exc:
        problems.extend(error_fields(exc.errors(), path))
        return None


def redact_url(url: str | None) -> tuple[str | None, str | None]:
    """Drop query parameters and a fragment that hold an email address.

    Args:
        url: a page URL.

    Returns:
        ``(url without them, first email found or None)``.
    """
    if not url or find_email(url) is None:
        return url, None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None, find_email(url)
    email: str | None = None
    kept: list[str] = []
    for segment in parts.query.split("&") if parts.query else []:
        found = find_email(segment)
        if found is None:
            kept.append(segment)
        elif email is None:
            email = found
    fragment = parts.fragment
    if find_email(fragment) is not None:
        email = email or find_email(fragment)
        fragment = ""
    rebuilt = urlunsplit(parts._replace(query="&".join(kept), fragment=fragment))
    if find_email(rebuilt) is not None:  # in the path or host: drop the URL
        return None, email or find_email(url)
    return rebuilt, email


@dataclass
class Draft:
    """One event as a source read it, before the common rules.

    Args:
        source: ``ga4``, ``data`` or ``mp``.
        name: the event name (already checked).
        event_id: the explicit or derived event id.
        occurred_at: when it happened.
        received_at: when ingest received it.
        params: event parameters, not yet typed.
        param_path: maps a parameter name to its wire path for errors.
        client: ``Client`` fields.
        page: ``Page`` fields, or None.
        identity: raw identifiers (``RawIdentity`` fields).
        click_ids: click and browser ids.
        consent: consent state.
        items: e-commerce items (already validated).
        user_properties: user properties, not yet typed.
        prefix: the event's error path prefix, e.g. ``events[1]``.
    """

    source: Source
    name: str
    event_id: str
    occurred_at: datetime
    received_at: datetime
    params: dict[str, Scalar] = field(default_factory=dict)
    param_path: Callable[[str], str] = str
    client: dict[str, Any] = field(default_factory=dict)
    page: dict[str, str | None] | None = None
    identity: dict[str, str] = field(default_factory=dict)
    click_ids: ClickIds = field(default_factory=ClickIds)
    consent: Consent = field(default_factory=Consent)
    items: list[Item] = field(default_factory=list)
    user_properties: dict[str, Scalar] = field(default_factory=dict)
    prefix: str = ""


def _typed(
    values: Mapping[str, Scalar], path: Callable[[str], str], problems: Problems
) -> dict[str, ParamValue]:
    out: dict[str, ParamValue] = {}
    for key, raw in values.items():
        if not _PARAM_NAME.match(key):
            problems.add(path(key), "not a valid parameter name")
            continue
        typed = param_value(raw)
        if typed is not None:
            out[key] = typed
    return out


def _take_pii(draft: Draft, params: dict[str, Scalar]) -> None:
    for key in [k for k in params if k.lower() in PII_PARAMS]:
        value = params.pop(key)
        target = PII_PARAMS[key.lower()]
        if target and isinstance(value, str) and value.strip():
            draft.identity.setdefault(target, value)


def _commerce(
    draft: Draft, params: dict[str, Scalar], problems: Problems
) -> Commerce | None:
    path = draft.param_path
    tid_raw = params.pop("transaction_id", None)
    tid = str(param_value(tid_raw)).strip() if tid_raw is not None else ""
    currency = currency_code(params.pop("currency", None), path("currency"), problems)
    raw_value = params.pop("value", None)
    value = money(raw_value, path("value"), problems)
    tax = money(params.pop("tax", None), path("tax"), problems)
    shipping = money(params.pop("shipping", None), path("shipping"), problems)
    coupon = params.pop("coupon", None)
    if value is not None and currency is None:
        if draft.name in MONEY_REQUIRED:
            problems.add(path("currency"), "required when value is set")
        elif raw_value is not None:
            params["value"] = value
        value = None
    if tax is not None and currency is None:
        params["tax"], tax = tax, None
    if shipping is not None and currency is None:
        params["shipping"], shipping = shipping, None
    try:
        return Commerce(
            transaction_id=tid or None,
            value=value,
            currency=currency,
            tax=tax,
            shipping=shipping,
            coupon=str(param_value(coupon)) if coupon is not None else None,
            items=draft.items,
        )
    except ValidationError as exc:
        problems.extend(error_fields(exc.errors(), join_path(draft.prefix, "commerce")))
        return None


def _lead(draft: Draft, params: dict[str, Scalar], problems: Problems) -> Lead | None:
    path = draft.param_path
    lead_raw = params.pop("lead_id", None)
    lead_id = str(param_value(lead_raw)).strip() if lead_raw is not None else ""
    currency = currency_code(params.pop("currency", None), path("currency"), problems)
    raw_value = params.pop("value", None)
    value = money(raw_value, path("value"), problems)
    if value is not None and currency is None:
        params["value"], value = value, None
    if not lead_id and value is None:
        if currency is not None:
            params["currency"] = currency
        return None
    try:
        return Lead(lead_id=lead_id or None, value=value, currency=currency)
    except ValidationError as exc:
        problems.extend(error_fields(exc.errors(), join_path(draft.prefix, "lead")))
        return None


def finish(draft: Draft, problems: Problems) -> Event | None:
    """Apply the common rules and build the canonical event.

    Args:
        draft: the event as its source read it.
        problems: where bad fields are recorded.

    Returns:
        The event (without its dedup key), or None when it has problems.
    """
    before = len(problems.fields)
    params = dict(draft.params)
    _take_pii(draft, params)
    commerce: Commerce | None = None
    lead: Lead | None = None
    if draft.name in ECOMMERCE_EVENTS or draft.items or "transaction_id" in params:
        commerce = _commerce(draft, params, problems)
    elif draft.name in LEAD_EVENTS:
        lead = _lead(draft, params, problems)
    clean, email = scrub_params(_typed(params, draft.param_path, problems))
    props, prop_email = scrub_params(
        _typed(draft.user_properties, draft.param_path, problems)
    )
    page = dict(draft.page) if draft.page is not None else None
    page_email: str | None = None
    if page is not None:
        page["location"], found_location = redact_url(page.get("location"))
        page["referrer"], found_referrer = redact_url(page.get("referrer"))
        title = page.get("title")
        found_title = find_email(title) if title else None
        if found_title:
            page["title"] = None
        page_email = found_location or found_referrer or found_title
    client = dict(draft.client)
    user_id = client.get("user_id")
    if isinstance(user_id, str) and find_email(user_id) is not None:
        draft.identity.setdefault("email", user_id)
        client["user_id"] = None
    event_id = draft.event_id
    id_email = find_email(event_id)
    if id_email is not None:  # an id must not carry PII: keep it, hashed
        event_id = derive_event_id(draft.source, event_id)
    for found in (email, prop_email, page_email, id_email):
        if found is not None:
            draft.identity.setdefault("email", found)
    if len(problems.fields) > before:
        return None
    # a real browser may send a huge user agent or title: keep the hit, clip them
    client = _clip(client, _CLIENT_LIMITS)
    if page is not None:
        page = _clip(page, _PAGE_LIMITS)
    try:
        data: dict[str, Any] = {
            "event_id": event_id,
            "name": draft.name,
            "source": draft.source,
            "occurred_at": draft.occurred_at,
            "received_at": draft.received_at,
            "client": client,
            "page": page if page and any(page.values()) else None,
            "click_ids": draft.click_ids,
            "consent": draft.consent,
            "commerce": commerce,
            "lead": lead,
            "params": clean,
            "user_properties": props,
        }
        if draft.identity:  # nothing to hash: the default, empty identity
            data["identity"] = hash_identity(RawIdentity(**draft.identity))
        return Event.model_validate(data)
    except InvalidPayload as exc:
        for entry in exc.fields:
            problems.add(join_path(draft.prefix, entry["path"]), entry["message"])
    except ValidationError as exc:
        problems.extend(error_fields(exc.errors(), draft.prefix))
    return None


def _max_lengths(model: type[BaseModel]) -> dict[str, int]:
    limits: dict[str, int] = {}
    for name, info in model.model_fields.items():
        for rule in info.metadata:
            limit = getattr(rule, "max_length", None)
            if isinstance(limit, int):
                limits[name] = limit
    return limits


_CLIENT_LIMITS = _max_lengths(Client)
_PAGE_LIMITS = _max_lengths(Page)


def _clip(values: dict[str, Any], limits: Mapping[str, int]) -> dict[str, Any]:
    """Browser context truncated to the contract's lengths (never rejected)."""
    return {
        key: value[: limits[key]]
        if isinstance(value, str) and key in limits and len(value) > limits[key]
        else value
        for key, value in values.items()
    }


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def load_json(text: str | bytes, path: str = "$") -> Any:
    """Parse JSON strictly: numbers with a fraction become exact ``Decimal``.

    ``NaN``/``Infinity``, absurd nesting and huge integers are errors, not 500s.

    Args:
        text: the JSON document.
        path: the error path for this document.

    Returns:
        The parsed value.

    Raises:
        InvalidPayload: 400 naming ``path``.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        message = "not valid UTF-8"
    except (ValueError, RecursionError):
        message = "not valid JSON"
    raise InvalidPayload(message, [{"path": path, "message": message}])


def scalars(
    data: Mapping[str, Any], skip: frozenset[str] | set[str] = frozenset()
) -> dict[str, Scalar]:
    """The scalar members of a JSON object (nested values and nulls are left out).

    Args:
        data: a JSON object.
        skip: keys handled elsewhere.

    Returns:
        ``{key: value}`` for strings, numbers and booleans.
    """
    return {
        key: value
        for key, value in data.items()
        if key not in skip and isinstance(value, (str, int, float, Decimal, bool))
    }


def text_field(
    data: Mapping[str, Any], key: str, path: str, problems: Problems
) -> str | None:
    """A string (or a number, as text) field of a JSON object, else a problem."""
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, (bool, dict, list)):
        problems.add(join_path(path, key), "must be a string")
        return None
    typed = param_value(value)
    if typed is None:
        return None
    return str(typed).strip() or None


def canonical_json(data: Any) -> str:
    """Sorted, compact JSON of a parsed document (decimals as text), for hashing."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
