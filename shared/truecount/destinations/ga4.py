"""GA4 Measurement Protocol (reference/SPECS.md §2).

``POST {base}/mp/collect?measurement_id=G-...&api_secret=...``; debug events go to
the validation server ``/debug/mp/collect``, whose ``validationMessages`` decide
the result. The production endpoint answers 2xx even for payloads it drops, so
``build`` fits every event to the limits of §2.3/§2.4 and :func:`validate_payload`
checks the result before anything is sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from truecount.config import ENV_NAME, DestinationConfig
from truecount.destinations.base import (
    INTERNAL_PARAM_PREFIX,
    BaseDestination,
    classify_http,
    drop_empty,
    epoch_micros,
    event_time,
    json_body,
    load_settings,
    money,
    require_secret,
    resolve_endpoint,
)
from truecount.models.event import Event, Item
from truecount.ports import HttpResponse, OutboundRequest, SendResult, Skip

BASE_URLS = {
    "global": "https://www.google-analytics.com",
    "eu": "https://region1.google-analytics.com",
}

MAX_EVENTS = 25
MAX_PARAMS = 25
MAX_NAME = 40
MAX_USER_PROPERTIES = 25
MAX_USER_PROPERTY_NAME = 24
MAX_USER_PROPERTY_VALUE = 36
MAX_ITEMS = 200
MAX_ITEM_CUSTOM_PARAMS = 10
MAX_USER_ID = 256
MAX_BODY_BYTES = 130_000
# GA4's documented longer limits for its page params; every other string param
# gets ``max_value_length`` (100; 500 on GA4 360).
PAGE_PARAM_LIMITS = {"page_location": 1000, "page_referrer": 420, "page_title": 300}

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

RESERVED_EVENT_NAMES = frozenset(
    {
        "ad_activeview",
        "ad_click",
        "ad_exposure",
        "ad_query",
        "ad_reward",
        "adunit_exposure",
        "app_clear_data",
        "app_exception",
        "app_install",
        "app_remove",
        "app_store_refund",
        "app_update",
        "app_upgrade",
        "dynamic_link_app_open",
        "dynamic_link_app_update",
        "dynamic_link_first_open",
        "error",
        "firebase_campaign",
        "firebase_in_app_message_action",
        "firebase_in_app_message_dismiss",
        "firebase_in_app_message_impression",
        "first_open",
        "first_visit",
        "notification_dismiss",
        "notification_foreground",
        "notification_open",
        "notification_receive",
        "notification_send",
        "os_update",
        "session_start",
        "user_engagement",
        "ad_impression",
        "in_app_purchase",
        "screen_view",
    }
)
RESERVED_PARAM_NAMES = frozenset({"firebase_conversion"})
RESERVED_PARAM_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
RESERVED_USER_PROPERTY_NAMES = frozenset(
    {
        "first_open_time",
        "first_visit_time",
        "last_deep_link_referrer",
        "user_id",
        "first_open_after_install",
    }
)
RESERVED_USER_PROPERTY_PREFIXES = ("_", "firebase_", "ga_", "google_")

#: always send a transaction_id for these (GA4 dedups purchases by it)
TRANSACTION_EVENTS = frozenset({"purchase", "refund"})

_ITEM_FIELDS = (
    "item_id",
    "item_name",
    "affiliation",
    "coupon",
    "discount",
    "index",
    "item_brand",
    "item_category",
    "item_category2",
    "item_category3",
    "item_category4",
    "item_category5",
    "item_list_id",
    "item_list_name",
    "item_variant",
    "location_id",
    "price",
    "quantity",
    "promotion_id",
    "promotion_name",
    "creative_name",
    "creative_slot",
)


class Settings(BaseModel):
    """Type-specific keys of a ``ga4`` destination."""

    model_config = ConfigDict(extra="forbid")

    measurement_id: str = Field(pattern=r"^G-[A-Z0-9]{4,20}$")
    api_secret_env: str = Field("TRUECOUNT_GA4_API_SECRET", pattern=ENV_NAME)
    region: Literal["global", "eu"] = Field(
        "global", description="eu: region1.google-analytics.com (EU collection)"
    )
    max_value_length: int = Field(100, ge=1, le=500, description="500 on GA4 360")
    send_user_data: bool = Field(
        True, description="send hashed email/phone/name as user_data"
    )
    send_client_context: bool = Field(
        True, description="send ip_override and user_agent for geo and device"
    )
    validation_behavior: Literal["RELAXED", "ENFORCE_RECOMMENDATIONS"] | None = None


def _reserved_param(name: str) -> bool:
    return name in RESERVED_PARAM_NAMES or name.startswith(RESERVED_PARAM_PREFIXES)


def _reserved_user_property(name: str) -> bool:
    return name in RESERVED_USER_PROPERTY_NAMES or name.startswith(
        RESERVED_USER_PROPERTY_PREFIXES
    )


class _Fitter:
    """Fits params to GA4's limits, noting each change."""

    def __init__(self, max_value_length: int) -> None:
        self.max_value_length = max_value_length
        self.notes: list[str] = []

    def value(self, where: str, name: str, value: Any, limit: int | None = None) -> Any:
        if isinstance(value, Decimal):
            return money(value)
        if isinstance(value, str):
            cap = limit or PAGE_PARAM_LIMITS.get(name, self.max_value_length)
            if len(value) > cap:
                self.notes.append(f"{where}.{name}: truncated to {cap} characters")
                return value[:cap]
        return value

    def name_ok(self, where: str, name: str, limit: int, reserved: bool) -> bool:
        if len(name) > limit or not NAME_RE.match(name):
            self.notes.append(f"{where}.{name[:60]}: dropped, invalid name")
            return False
        if reserved:
            self.notes.append(f"{where}.{name}: dropped, reserved name")
            return False
        return True


def _item(item: Item, fit: _Fitter, index: int) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for field in _ITEM_FIELDS:
        value = getattr(item, field)
        if value is not None:
            out[field] = fit.value(f"items[{index}]", field, value)
    if "item_id" not in out and "item_name" not in out:
        fit.notes.append(f"items[{index}]: dropped, needs item_id or item_name")
        return None
    custom = 0
    for name, value in item.params.items():
        if name in out or not fit.name_ok(
            f"items[{index}]", name, MAX_NAME, _reserved_param(name)
        ):
            continue
        if custom == MAX_ITEM_CUSTOM_PARAMS:
            fit.notes.append(f"items[{index}].{name}: dropped, over 10 custom params")
            continue
        out[name] = fit.value(f"items[{index}]", name, value)
        custom += 1
    return out


def _commerce_params(event: Event, fit: _Fitter) -> dict[str, Any]:
    params: dict[str, Any] = {}
    commerce = event.commerce
    if commerce is not None:
        params["transaction_id"] = commerce.transaction_id
        if commerce.value is not None:
            params["value"] = money(commerce.value)
            params["currency"] = commerce.currency
        for key in ("tax", "shipping"):
            amount = getattr(commerce, key)
            if amount is not None:
                params[key] = money(amount)
        params["coupon"] = commerce.coupon
        items = [
            built
            for i, item in enumerate(commerce.items[:MAX_ITEMS])
            if (built := _item(item, fit, i)) is not None
        ]
        params["items"] = items
    lead = event.lead
    if lead is not None and lead.value is not None and "value" not in params:
        params["value"] = money(lead.value)
        params["currency"] = lead.currency
    if event.name in TRANSACTION_EVENTS and not params.get("transaction_id"):
        params["transaction_id"] = event.dedup_key
    return drop_empty(params)


def build_params(
    event: Event, max_value_length: int = 100
) -> tuple[dict[str, Any], list[str]]:
    """The event's GA4 params, fitted to the limits.

    Built params (session, engagement, commerce, page) come first and win over
    event params of the same name. Event params then fill the remaining slots
    up to 25, in their order; reserved, invalid or surplus ones are dropped and
    long string values truncated, each with a note.

    Args:
        event: the canonical event.
        max_value_length: the string value limit (100; 500 on GA4 360).

    Returns:
        ``(params, notes)``.
    """
    fit = _Fitter(max_value_length)
    engagement = event.params.get("engagement_time_msec")
    built: dict[str, Any] = {
        "session_id": event.client.session_id,
        "engagement_time_msec": (
            engagement if isinstance(engagement, int) and engagement >= 1 else 1
        ),
    }
    built.update(_commerce_params(event, fit))
    if event.page is not None:
        built["page_location"] = event.page.location
        built["page_referrer"] = event.page.referrer
        built["page_title"] = event.page.title
    params = {k: fit.value("params", k, v) for k, v in drop_empty(built).items()}
    for name, value in event.params.items():
        if name in params or name.startswith(INTERNAL_PARAM_PREFIX):
            continue
        if not fit.name_ok("params", name, MAX_NAME, _reserved_param(name)):
            continue
        if len(params) == MAX_PARAMS:
            fit.notes.append(f"params.{name}: dropped, over {MAX_PARAMS} params")
            continue
        params[name] = fit.value("params", name, value)
    return params, fit.notes


def build_user_properties(
    props: Mapping[str, str | int | float],
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """User properties fitted to GA4's limits (25; names 24; values 36)."""
    fit = _Fitter(MAX_USER_PROPERTY_VALUE)
    out: dict[str, dict[str, Any]] = {}
    for name, value in props.items():
        reserved = _reserved_user_property(name)
        if not fit.name_ok("user_properties", name, MAX_USER_PROPERTY_NAME, reserved):
            continue
        if len(out) == MAX_USER_PROPERTIES:
            fit.notes.append(f"user_properties.{name}: dropped, over 25")
            continue
        out[name] = {"value": fit.value("user_properties", name, value)}
    return out, fit.notes


def _user_data(event: Event) -> dict[str, Any]:
    ident = event.identity
    address = drop_empty(
        {
            "sha256_first_name": ident.first_name_sha256,
            "sha256_last_name": ident.last_name_sha256,
        }
    )
    # city/region/postal_code/country go unhashed to GA4, and we only hold
    # Meta-normalised hashes of them: they are left out.
    return drop_empty(
        {
            "sha256_email_address": [ident.email_sha256_google]
            if ident.email_sha256_google
            else None,
            "sha256_phone_number": [ident.phone_sha256_e164]
            if ident.phone_sha256_e164
            else None,
            "address": [address] if address else None,
        }
    )


def _consent(event: Event) -> dict[str, str]:
    out = {}
    for key in ("ad_user_data", "ad_personalization"):
        value = getattr(event.consent, key)
        if value != "unknown":
            out[key] = value.upper()
    return out


def _string_problems(where: str, params: Mapping[str, Any], limit: int) -> list[str]:
    problems = []
    for name, value in params.items():
        cap = PAGE_PARAM_LIMITS.get(name, limit)
        if isinstance(value, str) and len(value) > cap:
            problems.append(f"{where}.{name}: value longer than {cap}")
    return problems


def validate_payload(body: Mapping[str, Any], max_value_length: int = 100) -> list[str]:
    """Check an MP body against the limits GA4 silently enforces.

    Args:
        body: the request body.
        max_value_length: the string value limit (100; 500 on GA4 360).

    Returns:
        One line per problem; empty when the body is valid.
    """
    problems: list[str] = []
    if not body.get("client_id"):
        problems.append("client_id: required")
    if len(str(body.get("user_id", ""))) > MAX_USER_ID:
        problems.append(f"user_id: longer than {MAX_USER_ID}")
    events = body.get("events") or []
    if not 1 <= len(events) <= MAX_EVENTS:
        problems.append(f"events: {len(events)} events, need 1..{MAX_EVENTS}")
    for i, ev in enumerate(events):
        name = ev.get("name", "")
        if len(name) > MAX_NAME or not NAME_RE.match(name):
            problems.append(f"events[{i}].name: invalid")
        elif name in RESERVED_EVENT_NAMES:
            problems.append(f"events[{i}].name: reserved")
        params = ev.get("params") or {}
        if len(params) > MAX_PARAMS:
            problems.append(f"events[{i}].params: more than {MAX_PARAMS}")
        for pname in params:
            if (
                len(pname) > MAX_NAME
                or not NAME_RE.match(pname)
                or _reserved_param(pname)
            ):
                problems.append(f"events[{i}].params.{pname[:60]}: invalid name")
        problems += _string_problems(f"events[{i}].params", params, max_value_length)
        items = params.get("items") or []
        if len(items) > MAX_ITEMS:
            problems.append(f"events[{i}].params.items: more than {MAX_ITEMS}")
        for j, item in enumerate(items):
            problems += _string_problems(
                f"events[{i}].params.items[{j}]", item, max_value_length
            )
    props = body.get("user_properties") or {}
    if len(props) > MAX_USER_PROPERTIES:
        problems.append(f"user_properties: more than {MAX_USER_PROPERTIES}")
    for pname, prop in props.items():
        if (
            len(pname) > MAX_USER_PROPERTY_NAME
            or not NAME_RE.match(pname)
            or _reserved_user_property(pname)
        ):
            problems.append(f"user_properties.{pname[:60]}: invalid name")
        value = prop.get("value") if isinstance(prop, Mapping) else None
        if isinstance(value, str) and len(value) > MAX_USER_PROPERTY_VALUE:
            problems.append(f"user_properties.{pname}: value too long")
    size = len(json.dumps(body, separators=(",", ":")).encode())
    if size >= MAX_BODY_BYTES:
        problems.append(f"body: {size} bytes, limit is < {MAX_BODY_BYTES}")
    return problems


class Ga4Destination(BaseDestination):
    """GA4 Measurement Protocol."""

    TYPE = "ga4"
    DEFAULT_NAMES = None  # canonical names are GA4 names
    DEFAULT_CONSENT = ("analytics_storage",)
    DEFAULT_UNKNOWN_CONSENT = "allow"
    DEFAULT_MAX_AGE = timedelta(hours=72)

    def __init__(
        self, dest_id: str, cfg: DestinationConfig, settings: Settings, api_secret: str
    ) -> None:
        """See :func:`create`."""
        super().__init__(dest_id, cfg)
        self._settings = settings
        self._api_secret = api_secret

    @property
    def test_mode(self) -> bool:
        """Debug events go to the validation server ``/debug/mp/collect``."""
        return True

    def build(self, event: Event, now: datetime) -> OutboundRequest | Skip:
        """Build one MP request, or Skip (no client_id, reserved or bad name)."""
        name = self.platform_name(event.name)
        if isinstance(name, Skip):
            return name
        if name in RESERVED_EVENT_NAMES:
            return Skip("reserved_event_name")
        if not event.client.client_id:
            return Skip("missing_client_id")
        settings = self._settings
        params, notes = build_params(event, settings.max_value_length)
        props, prop_notes = build_user_properties(event.user_properties)
        client = event.client
        body: dict[str, Any] = {
            "client_id": client.client_id,
            "user_id": client.user_id,
            "timestamp_micros": epoch_micros(event_time(event.occurred_at, now)),
            "user_properties": props,
            "consent": _consent(event),
        }
        if settings.send_user_data and event.consent.ad_user_data != "denied":
            body["user_data"] = _user_data(event)
        if settings.send_client_context:
            body["ip_override"] = client.ip
            body["user_agent"] = client.user_agent
        body["validation_behavior"] = settings.validation_behavior
        body = drop_empty(body)
        body["events"] = [{"name": name, "params": params}]
        problems = validate_payload(body, settings.max_value_length)
        if problems:
            return Skip("invalid_payload: " + "; ".join(problems[:5]))
        path = "/debug/mp/collect" if event.debug else "/mp/collect"
        url = resolve_endpoint(self._endpoint, BASE_URLS[settings.region], path)
        return OutboundRequest(
            method="POST",
            url=f"{url}?measurement_id={settings.measurement_id}",
            json=body,
            headers={"Content-Type": "application/json"},
            secret_query={"api_secret": self._api_secret},
            notes=tuple(notes + prop_notes),
        )

    def classify(self, response: HttpResponse) -> SendResult:
        """2xx is delivered unless the validation server lists problems."""
        result = classify_http(response)
        if result.status != "delivered":
            return result
        data = json_body(response)
        if not isinstance(data, dict) or "validationMessages" not in data:
            return result
        messages = data.get("validationMessages") or []
        detail = {"validationMessages": messages}
        if messages:
            codes = sorted(
                {str(m.get("validationCode")) for m in messages if isinstance(m, dict)}
            )
            return SendResult(
                "failed",
                http_status=response.status,
                error="validation: " + ", ".join(codes),
                detail=detail,
            )
        return SendResult("delivered", http_status=response.status, detail=detail)


def create(
    dest_id: str, cfg: DestinationConfig, env: Mapping[str, str]
) -> Ga4Destination:
    """Build a ``ga4`` destination from its config and the environment.

    Args:
        dest_id: the destination id.
        cfg: its config (``measurement_id`` required).
        env: the environment holding the API secret.

    Returns:
        The destination.

    Raises:
        ConfigError: a bad key, or the API secret's variable is unset.
    """
    settings = load_settings(Settings, dest_id, cfg)
    secret = require_secret(env, settings.api_secret_env, dest_id)
    return Ga4Destination(dest_id, cfg, settings, secret)
