"""LinkedIn Conversions API (reference/SPECS.md §5a).

``POST {base}/rest/conversionEvents`` with ``LinkedIn-Version`` (default
``202607``: the latest Marketing version published in mid-2026; LinkedIn keeps
each monthly version for at least 12 months, so bump ``version`` yearly) and
``X-Restli-Protocol-Version: 2.0.0``. The conversion rule comes from
``conversions[<event name>]``; unmapped events are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from truecount.config import ENV_NAME, DestinationConfig
from truecount.destinations.base import (
    BaseDestination,
    browser_event_id,
    classify_http,
    clip,
    epoch_millis,
    event_time,
    header,
    json_body,
    load_settings,
    money_text,
    require_secret,
    resolve_endpoint,
)
from truecount.models.event import Event
from truecount.ports import HttpResponse, OutboundRequest, SendResult, Skip

BASE_URL = "https://api.linkedin.com"
URN_PREFIX = "urn:lla:llaPartnerConversion:"


class Settings(BaseModel):
    """Type-specific keys of a ``linkedin`` destination."""

    model_config = ConfigDict(extra="forbid")

    conversions: dict[str, str] = Field(
        description="event name -> conversion rule id or "
        "urn:lla:llaPartnerConversion:<id>"
    )
    token_env: str = Field("TRUECOUNT_LINKEDIN_TOKEN", pattern=ENV_NAME)
    version: str = Field("202607", pattern=r"^20[0-9]{2}(0[1-9]|1[0-2])$")

    @field_validator("conversions")
    @classmethod
    def _check_conversions(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for name, rule in value.items():
            urn = URN_PREFIX + rule if rule.isdigit() else rule
            if not urn.startswith(URN_PREFIX) or not urn[len(URN_PREFIX) :].isdigit():
                raise ValueError(
                    f"{name}: {rule!r} is not a rule id or {URN_PREFIX}<id>"
                )
            out[name] = urn
        return out


class LinkedInDestination(BaseDestination):
    """LinkedIn Conversions API."""

    TYPE = "linkedin"
    DEFAULT_NAMES = None  # ``conversions`` is the mapping
    DEFAULT_CONSENT = ("ad_storage", "ad_user_data")
    DEFAULT_UNKNOWN_CONSENT = "deny"
    DEFAULT_MAX_AGE = timedelta(days=90)

    def __init__(
        self, dest_id: str, cfg: DestinationConfig, settings: Settings, token: str
    ) -> None:
        """See :func:`create`."""
        super().__init__(dest_id, cfg)
        self._settings = settings
        self._token = token
        self._url = resolve_endpoint(cfg.endpoint, BASE_URL, "/rest/conversionEvents")

    def build(self, event: Event, now: datetime) -> OutboundRequest | Skip:
        """One conversion event, or Skip (unmapped, no email nor li_fat_id)."""
        key = self.platform_name(event.name)
        if isinstance(key, Skip):
            return key
        urn = self._settings.conversions.get(key)
        if urn is None:
            return Skip("unmapped_event")
        user_ids = []
        if event.identity.email_sha256:
            user_ids.append(
                {"idType": "SHA256_EMAIL", "idValue": event.identity.email_sha256}
            )
        if event.click_ids.li_fat_id:
            user_ids.append(
                {
                    "idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID",
                    "idValue": event.click_ids.li_fat_id,
                }
            )
        if not user_ids:
            return Skip("missing_identifier")
        body: dict[str, Any] = {
            "conversion": urn,
            "conversionHappenedAt": epoch_millis(event_time(event.occurred_at, now)),
        }
        value, currency = None, None
        if event.commerce is not None and event.commerce.value is not None:
            value, currency = event.commerce.value, event.commerce.currency
        elif event.lead is not None and event.lead.value is not None:
            value, currency = event.lead.value, event.lead.currency
        if value is not None:
            body["conversionValue"] = {
                "currencyCode": currency,
                "amount": money_text(value),
            }
        body["eventId"] = browser_event_id(event.params, event.event_id)
        body["user"] = {"userIds": user_ids}
        return OutboundRequest(
            method="POST",
            url=self._url,
            json=body,
            headers={
                "Content-Type": "application/json",
                "LinkedIn-Version": self._settings.version,
                "X-Restli-Protocol-Version": "2.0.0",
            },
            secret_headers={"Authorization": f"Bearer {self._token}"},
        )

    def classify(self, response: HttpResponse) -> SendResult:
        """201 delivered; 429/5xx retried; other errors (401 too) are permanent.

        A 401 means the configured token is invalid or expired: retrying with
        the same token cannot help, so it fails (and should alert).
        """
        request_id = (
            header(response.headers, "x-restli-id")
            or header(response.headers, "x-li-uuid")
            or header(response.headers, "x-linkedin-id")
        )
        data = json_body(response)
        error = None
        if not 200 <= response.status < 300 and isinstance(data, dict):
            parts = [str(data[k]) for k in ("code", "message") if data.get(k)]
            error = (
                clip(f"http {response.status}: " + " ".join(parts)) if parts else None
            )
        return classify_http(response, request_id=request_id, error=error)


def create(
    dest_id: str, cfg: DestinationConfig, env: Mapping[str, str]
) -> LinkedInDestination:
    """Build a ``linkedin`` destination from its config and the environment.

    Args:
        dest_id: the destination id.
        cfg: its config (``conversions`` required).
        env: the environment holding the access token.

    Returns:
        The destination.

    Raises:
        ConfigError: a bad key, or the token's variable is unset.
    """
    settings = load_settings(Settings, dest_id, cfg)
    token = require_secret(env, settings.token_env, dest_id)
    return LinkedInDestination(dest_id, cfg, settings, token)
