"""Meta Conversions API (reference/SPECS.md §3).

``POST {base}/{api_version}/{pixel_id}/events?access_token=...`` with one server
event per request. ``event_id`` is the browser's when fanout knows it
(``params.truecount_browser_event_id``), so Meta dedups against the Pixel.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from truecount.config import ENV_NAME, DestinationConfig
from truecount.destinations.base import (
    BaseDestination,
    browser_event_id,
    classify_http,
    clip,
    drop_empty,
    epoch_millis,
    epoch_seconds,
    error_result,
    event_time,
    json_body,
    load_settings,
    money,
    require_secret,
    resolve_endpoint,
)
from truecount.models.event import Event
from truecount.ports import HttpResponse, OutboundRequest, SendResult, Skip

BASE_URL = "https://graph.facebook.com"

DEFAULT_NAMES: dict[str, str] = {
    "page_view": "PageView",
    "view_item": "ViewContent",
    "add_to_cart": "AddToCart",
    "begin_checkout": "InitiateCheckout",
    "add_payment_info": "AddPaymentInfo",
    "purchase": "Purchase",
    "generate_lead": "Lead",
    "sign_up": "CompleteRegistration",
    "subscription_started": "Subscribe",
    "search": "Search",
    # qualify_lead, close_convert_lead and refund have no Meta standard event:
    # they are not sent unless ``names`` maps them (e.g. to a custom event).
}

#: Graph error codes worth retrying after a backoff (§3.6)
RETRY_CODES = frozenset({1, 2, 4, 17, 32, 341, 613, 80004})

ActionSource = Literal[
    "website",
    "app",
    "email",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
]


class Settings(BaseModel):
    """Type-specific keys of a ``meta`` destination."""

    model_config = ConfigDict(extra="forbid")

    pixel_id: str = Field(pattern=r"^[0-9]{5,20}$")
    access_token_env: str = Field("TRUECOUNT_META_ACCESS_TOKEN", pattern=ENV_NAME)
    api_version: str = Field("v26.0", pattern=r"^v[0-9]{1,3}\.[0-9]$")
    test_event_code: str | None = Field(
        None, min_length=1, description="debug events go to Test Events with it"
    )
    default_action_source: ActionSource = Field(
        "system_generated",
        description="action_source when the event has no browser page and UA",
    )
    limited_data_use: bool = Field(
        False, description='send data_processing_options ["LDU"] (geolocated)'
    )


def _hashed_list(value: str | None) -> list[str] | None:
    return [value] if value else None


def user_data(event: Event) -> dict[str, Any]:
    """Meta ``user_data``: hashed identity plus unhashed browser ids."""
    ident = event.identity
    clicks = event.click_ids
    fbc = clicks.fbc
    if not fbc and clicks.fbclid:
        fbc = f"fb.1.{epoch_millis(event.occurred_at)}.{clicks.fbclid}"
    return drop_empty(
        {
            "em": _hashed_list(ident.email_sha256),
            "ph": _hashed_list(ident.phone_sha256),
            "fn": _hashed_list(ident.first_name_sha256),
            "ln": _hashed_list(ident.last_name_sha256),
            "ct": _hashed_list(ident.city_sha256),
            "st": _hashed_list(ident.region_sha256),
            "zp": _hashed_list(ident.postal_code_sha256),
            "country": _hashed_list(ident.country_sha256),
            "external_id": _hashed_list(ident.external_id),
            "client_ip_address": event.client.ip,
            "client_user_agent": event.client.user_agent,
            "fbc": fbc,
            "fbp": clicks.fbp,
        }
    )


def custom_data(event: Event) -> dict[str, Any]:
    """Meta ``custom_data`` from commerce (or the lead's value)."""
    data: dict[str, Any] = {}
    commerce = event.commerce
    if commerce is not None:
        if commerce.value is not None:
            data["value"] = money(commerce.value)
            data["currency"] = commerce.currency
        data["order_id"] = commerce.transaction_id
        contents = [
            drop_empty(
                {
                    "id": item.item_id,
                    "quantity": item.quantity,
                    "item_price": money(item.price) if item.price is not None else None,
                    "title": item.item_name,
                    "brand": item.item_brand,
                    "category": item.item_category,
                }
            )
            for item in commerce.items
            if item.item_id
        ]
        if contents:
            data["contents"] = contents
            data["content_ids"] = [c["id"] for c in contents]
            data["content_type"] = "product"
            data["num_items"] = sum(
                item.quantity if item.quantity is not None else 1
                for item in commerce.items
            )
    lead = event.lead
    if lead is not None and lead.value is not None and "value" not in data:
        data["value"] = money(lead.value)
        data["currency"] = lead.currency
    return drop_empty(data)


class MetaDestination(BaseDestination):
    """Meta (Facebook) Conversions API."""

    TYPE = "meta"
    DEFAULT_NAMES = DEFAULT_NAMES
    DEFAULT_CONSENT = ("ad_storage", "ad_user_data")
    DEFAULT_UNKNOWN_CONSENT = "deny"
    DEFAULT_MAX_AGE = timedelta(days=7)

    def __init__(
        self, dest_id: str, cfg: DestinationConfig, settings: Settings, token: str
    ) -> None:
        """See :func:`create`."""
        super().__init__(dest_id, cfg)
        self._settings = settings
        self._token = token
        self._url = resolve_endpoint(
            cfg.endpoint,
            BASE_URL,
            f"/{settings.api_version}/{settings.pixel_id}/events",
        )

    @property
    def test_mode(self) -> bool:
        """Debug events can go to Test Events when ``test_event_code`` is set."""
        return self._settings.test_event_code is not None

    def build(self, event: Event, now: datetime) -> OutboundRequest | Skip:
        """One server event, or Skip.

        Skips: ``unmapped_event``; ``missing_identifier`` (no user data at
        all); ``missing_value`` (a Purchase without value and currency).
        """
        name = self.platform_name(event.name)
        if isinstance(name, Skip):
            return name
        users = user_data(event)
        if not users:
            return Skip("missing_identifier")
        custom = custom_data(event)
        if name == "Purchase" and "value" not in custom:
            # Meta rejects a Purchase without value and currency (code 100)
            return Skip("missing_value")
        location = event.page.location if event.page else None
        website = bool(location and event.client.user_agent)
        server_event: dict[str, Any] = {
            "event_name": name,
            "event_time": epoch_seconds(event_time(event.occurred_at, now)),
            "event_id": browser_event_id(event.params, event.event_id),
            "action_source": "website"
            if website
            else self._settings.default_action_source,
            "event_source_url": location,
            "user_data": users,
            "custom_data": custom,
        }
        if event.consent.ad_personalization == "denied":
            server_event["opt_out"] = True
        if self._settings.limited_data_use:
            server_event["data_processing_options"] = ["LDU"]
            server_event["data_processing_options_country"] = 0
            server_event["data_processing_options_state"] = 0
        body: dict[str, Any] = {"data": [drop_empty(server_event)]}
        if event.debug and self._settings.test_event_code:
            body["test_event_code"] = self._settings.test_event_code
        return OutboundRequest(
            method="POST",
            url=self._url,
            json=body,
            headers={"Content-Type": "application/json"},
            secret_query={"access_token": self._token},
        )

    def classify(self, response: HttpResponse) -> SendResult:
        """Read ``error.code``/``is_transient`` (§3.6); keep ``fbtrace_id``."""
        data = json_body(response)
        data = data if isinstance(data, dict) else {}
        error = data.get("error")
        trace = data.get("fbtrace_id")
        if isinstance(error, dict):
            trace = error.get("fbtrace_id") or trace
        trace = str(trace) if trace else None
        if 200 <= response.status < 300 and not isinstance(error, dict):
            detail = {"events_received": data.get("events_received")}
            if data.get("messages"):
                detail["messages"] = data["messages"]
            return SendResult(
                "delivered",
                http_status=response.status,
                request_id=trace,
                detail=detail,
            )
        if not isinstance(error, dict):
            return classify_http(response, request_id=trace)
        code = error.get("code")
        subcode = error.get("error_subcode")
        text = f"meta error {code}" + (f"/{subcode}" if subcode else "")
        text = clip(f"{text}: {error.get('message', '')}")
        detail = drop_empty(
            {
                "code": code,
                "error_subcode": subcode,
                "type": error.get("type"),
                "is_transient": error.get("is_transient"),
                "error_user_title": error.get("error_user_title"),
            }
        )
        retry = error.get("is_transient") is True or code in RETRY_CODES
        retryable = retry or (code is None and response.status >= 500)
        return error_result(retryable, response, text, trace, detail)


def create(
    dest_id: str, cfg: DestinationConfig, env: Mapping[str, str]
) -> MetaDestination:
    """Build a ``meta`` destination from its config and the environment.

    Args:
        dest_id: the destination id.
        cfg: its config (``pixel_id`` required).
        env: the environment holding the access token.

    Returns:
        The destination.

    Raises:
        ConfigError: a bad key, or the token's variable is unset.
    """
    settings = load_settings(Settings, dest_id, cfg)
    token = require_secret(env, settings.access_token_env, dest_id)
    return MetaDestination(dest_id, cfg, settings, token)
