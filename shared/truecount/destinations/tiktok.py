"""TikTok Events API 2.0 (reference/SPECS.md §5b).

``POST {base}/open_api/v1.3/event/track/`` with ``Access-Token``. TikTok answers
HTTP 200 for logical errors too: the envelope's ``code`` decides. ``event_id`` is
the browser's when fanout knows it, so TikTok dedups against the pixel.
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

BASE_URL = "https://business-api.tiktok.com"

DEFAULT_NAMES: dict[str, str] = {
    "view_item": "ViewContent",
    "add_to_cart": "AddToCart",
    "add_to_wishlist": "AddToWishlist",
    "begin_checkout": "InitiateCheckout",
    "add_payment_info": "AddPaymentInfo",
    "purchase": "CompletePayment",
    "generate_lead": "Lead",
    "sign_up": "CompleteRegistration",
    "subscription_started": "Subscribe",
    "search": "Search",
    # page_view (the pixel's own), qualify_lead, close_convert_lead and refund
    # are not sent unless ``names`` maps them.
}

#: envelope codes worth retrying: QPS limit; 5xxxx are system errors
RETRY_CODES = frozenset({40100})


class Settings(BaseModel):
    """Type-specific keys of a ``tiktok`` destination."""

    model_config = ConfigDict(extra="forbid")

    pixel_code: str = Field(pattern=r"^[A-Z0-9]{8,40}$")
    access_token_env: str = Field("TRUECOUNT_TIKTOK_ACCESS_TOKEN", pattern=ENV_NAME)
    event_source: Literal["web", "app", "offline", "crm"] = "web"
    test_event_code: str | None = Field(
        None, min_length=1, description="debug events go to Test Events with it"
    )
    limited_data_use: bool = Field(False, description="US state privacy laws")


def user(event: Event) -> dict[str, Any]:
    """TikTok ``user``: hashed email/phone/external id plus raw browser ids."""
    ident = event.identity
    return drop_empty(
        {
            "email": ident.email_sha256,
            "phone": ident.phone_sha256_e164,
            "external_id": ident.external_id,
            "ttclid": event.click_ids.ttclid,
            "ttp": event.click_ids.ttp,
            "ip": event.client.ip,
            "user_agent": event.client.user_agent,
        }
    )


def properties(event: Event) -> dict[str, Any]:
    """TikTok ``properties`` from commerce (or the lead's value)."""
    props: dict[str, Any] = {}
    commerce = event.commerce
    if commerce is not None:
        if commerce.value is not None:
            props["value"] = money(commerce.value)
            props["currency"] = commerce.currency
        props["order_id"] = commerce.transaction_id
        contents = [
            drop_empty(
                {
                    "content_id": item.item_id,
                    "content_name": item.item_name,
                    "content_category": item.item_category,
                    "brand": item.item_brand,
                    "quantity": item.quantity,
                    "price": money(item.price) if item.price is not None else None,
                }
            )
            for item in commerce.items
            if item.item_id
        ]
        if contents:
            props["contents"] = contents
            props["content_type"] = "product"
    lead = event.lead
    if lead is not None and lead.value is not None and "value" not in props:
        props["value"] = money(lead.value)
        props["currency"] = lead.currency
    return drop_empty(props)


class TikTokDestination(BaseDestination):
    """TikTok Events API."""

    TYPE = "tiktok"
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
            cfg.endpoint, BASE_URL, "/open_api/v1.3/event/track/"
        )

    @property
    def test_mode(self) -> bool:
        """Debug events can go to Test Events when ``test_event_code`` is set."""
        return self._settings.test_event_code is not None

    def build(self, event: Event, now: datetime) -> OutboundRequest | Skip:
        """One event, or Skip (unmapped name, no user data at all)."""
        name = self.platform_name(event.name)
        if isinstance(name, Skip):
            return name
        users = user(event)
        if not users:
            return Skip("missing_identifier")
        page = (
            drop_empty({"url": event.page.location, "referrer": event.page.referrer})
            if event.page
            else {}
        )
        data: dict[str, Any] = {
            "event": name,
            "event_time": epoch_seconds(event_time(event.occurred_at, now)),
            "event_id": browser_event_id(event.params, event.event_id),
            "user": users,
            "properties": properties(event),
            "page": page,
        }
        if self._settings.limited_data_use:
            data["limited_data_use"] = True
        body: dict[str, Any] = {
            "event_source": self._settings.event_source,
            "event_source_id": self._settings.pixel_code,
        }
        if event.debug and self._settings.test_event_code:
            body["test_event_code"] = self._settings.test_event_code
        body["data"] = [drop_empty(data)]
        return OutboundRequest(
            method="POST",
            url=self._url,
            json=body,
            headers={"Content-Type": "application/json"},
            secret_headers={"Access-Token": self._token},
        )

    def classify(self, response: HttpResponse) -> SendResult:
        """HTTP first; then the envelope ``code`` (§5b.3)."""
        data = json_body(response)
        data = data if isinstance(data, dict) else {}
        request_id = str(data["request_id"]) if data.get("request_id") else None
        if not 200 <= response.status < 300:
            return classify_http(response, request_id=request_id)
        code = data.get("code")
        if code == 0:
            return SendResult(
                "delivered", http_status=response.status, request_id=request_id
            )
        text = clip(f"tiktok code {code}: {data.get('message', '')}")
        detail = {"code": code}
        if not isinstance(code, int):
            return SendResult(
                "failed",
                http_status=response.status,
                error="tiktok: unreadable response",
                request_id=request_id,
            )
        retryable = code in RETRY_CODES or 50000 <= code < 60000
        return error_result(retryable, response, text, request_id, detail)


def create(
    dest_id: str, cfg: DestinationConfig, env: Mapping[str, str]
) -> TikTokDestination:
    """Build a ``tiktok`` destination from its config and the environment.

    Args:
        dest_id: the destination id.
        cfg: its config (``pixel_code`` required).
        env: the environment holding the access token.

    Returns:
        The destination.

    Raises:
        ConfigError: a bad key, or the token's variable is unset.
    """
    settings = load_settings(Settings, dest_id, cfg)
    token = require_secret(env, settings.access_token_env, dest_id)
    return TikTokDestination(dest_id, cfg, settings, token)
