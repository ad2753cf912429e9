"""Google Ads offline click conversions (reference/SPECS.md §4).

``POST {base}/{api_version}/customers/{customer_id}:uploadClickConversions`` with
one conversion per request and ``partialFailure: true``. ``authorize`` exchanges
the refresh token for an access token (through the injected sender) and caches
it until shortly before it expires. Debug events are sent with
``validateOnly: true`` (Google validates and stores nothing).

Default API version: ``v23``. Versions retire about a year after release; v23
is the version the §4 request body was checked against (unknown fields
rejected), and the click-conversion body has not changed since. Set
``api_version`` to move to a newer one.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, field_validator

from truecount.config import ENV_NAME, DestinationConfig
from truecount.destinations.base import (
    BaseDestination,
    clip,
    drop_empty,
    event_time,
    header,
    is_retryable_status,
    json_body,
    load_settings,
    money,
    parse_retry_after,
    require_secret,
    resolve_endpoint,
)
from truecount.errors import DeliveryError
from truecount.models.event import Event
from truecount.ports import HttpResponse, HttpSender, OutboundRequest, SendResult, Skip

BASE_URL = "https://googleads.googleapis.com"
TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
#: refresh this long before the access token expires
TOKEN_MARGIN = timedelta(seconds=60)
MAX_USER_IDENTIFIERS = 5

#: treat as delivered: the platform already has this conversion (dedup hit)
ALREADY_DONE = frozenset(
    {"CLICK_CONVERSION_ALREADY_EXISTS", "ORDER_ID_ALREADY_IN_USE", "DUPLICATE_ORDER_ID"}
)
#: the click is too recent: uploads are refused until ~6 h after it
TOO_RECENT = frozenset({"TOO_RECENT_EVENT", "TOO_RECENT_CONVERSION_ACTION"})
#: default wait after TOO_RECENT_*: 6 h plus a margin
TOO_RECENT_DELAY_SECONDS = 6 * 3600 + 900
#: try again later
RETRY_LATER = frozenset(
    {
        "TOO_RECENT_EVENT",
        "TOO_RECENT_CONVERSION_ACTION",
        "RESOURCE_EXHAUSTED",
        "RESOURCE_TEMPORARILY_EXHAUSTED",
        "INTERNAL_ERROR",
        "TRANSIENT_ERROR",
        "DEADLINE_EXCEEDED",
        "CONCURRENT_MODIFICATION",
        "UNAVAILABLE",
        "INTERNAL",
    }
)
#: google.rpc status names that are worth retrying
RETRY_STATUSES = frozenset(
    {"RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "ABORTED"}
)


def _customer_id(value: str) -> str:
    digits = value.replace("-", "").strip()
    if len(digits) != 10 or not digits.isdigit():
        raise ValueError("must be 10 digits (dashes allowed)")
    return digits


class Settings(BaseModel):
    """Type-specific keys of a ``google_ads`` destination."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str
    login_customer_id: str | None = None
    conversion_actions: dict[str, str] = Field(
        description="event name -> conversion action id or resource name"
    )
    api_version: str = Field("v23", pattern=r"^v[0-9]{2,3}$")
    developer_token_env: str = Field(
        "TRUECOUNT_GOOGLE_ADS_DEVELOPER_TOKEN", pattern=ENV_NAME
    )
    client_id_env: str = Field("TRUECOUNT_GOOGLE_ADS_CLIENT_ID", pattern=ENV_NAME)
    client_secret_env: str = Field(
        "TRUECOUNT_GOOGLE_ADS_CLIENT_SECRET", pattern=ENV_NAME
    )
    refresh_token_env: str = Field(
        "TRUECOUNT_GOOGLE_ADS_REFRESH_TOKEN", pattern=ENV_NAME
    )
    token_url: str = Field(TOKEN_URL, pattern=r"^https?://")
    send_user_identifiers: bool = Field(
        True, description="send hashed email/phone (enhanced conversions)"
    )
    too_recent_delay_seconds: int = Field(
        TOO_RECENT_DELAY_SECONDS,
        ge=0,
        le=7 * 86400,
        description="wait after TOO_RECENT_EVENT before uploading again "
        "(the destination is deferred, not failed)",
    )

    @field_validator("customer_id", "login_customer_id")
    @classmethod
    def _check_customer(cls, value: str | None) -> str | None:
        return None if value is None else _customer_id(value)

    @field_validator("conversion_actions")
    @classmethod
    def _check_actions(cls, value: dict[str, str]) -> dict[str, str]:
        for name, action in value.items():
            ok = action.isdigit() or (
                action.startswith("customers/") and "/conversionActions/" in action
            )
            if not ok:
                raise ValueError(
                    f"{name}: {action!r} is not a conversion action id or "
                    "customers/<cid>/conversionActions/<id>"
                )
        return value


@dataclass(frozen=True)
class Credentials:
    """The developer token and OAuth client, read from the environment.

    Left out of ``repr`` so that no traceback or log line shows them.
    """

    developer_token: str = field(repr=False)
    client_id: str = field(repr=False)
    client_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)


def conversion_date_time(moment: datetime) -> str:
    """``yyyy-mm-dd hh:mm:ss+00:00`` in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00:00")


def _error_codes(failure: Any) -> list[str]:
    """Every ``errorCode`` value in a google.rpc Status's GoogleAdsFailure details."""
    codes: list[str] = []
    if not isinstance(failure, dict):
        return codes
    for detail in failure.get("details") or []:
        if not isinstance(detail, dict):
            continue
        for err in detail.get("errors") or []:
            code = err.get("errorCode") if isinstance(err, dict) else None
            if isinstance(code, dict):
                codes.extend(str(v) for v in code.values())
    return codes


class GoogleAdsDestination(BaseDestination):
    """Google Ads API click-conversion upload."""

    TYPE = "google_ads"
    DEFAULT_NAMES = None  # conversion_actions is the mapping
    DEFAULT_CONSENT = ("ad_user_data",)
    DEFAULT_UNKNOWN_CONSENT = "deny"
    DEFAULT_MAX_AGE = timedelta(days=90)

    def __init__(
        self,
        dest_id: str,
        cfg: DestinationConfig,
        settings: Settings,
        credentials: Credentials,
    ) -> None:
        """See :func:`create`."""
        super().__init__(dest_id, cfg)
        self._settings = settings
        self._credentials = credentials
        self._url = resolve_endpoint(
            cfg.endpoint,
            BASE_URL,
            f"/{settings.api_version}/customers/{settings.customer_id}"
            ":uploadClickConversions",
        )
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires: datetime | None = None

    @property
    def test_mode(self) -> bool:
        """Debug events are uploaded with ``validateOnly: true``."""
        return True

    def _action(self, name: str) -> str | Skip:
        key = self.platform_name(name)
        if isinstance(key, Skip):
            return key
        action = self._settings.conversion_actions.get(key)
        if action is None:
            return Skip("unmapped_event")
        if action.isdigit():
            return f"customers/{self._settings.customer_id}/conversionActions/{action}"
        return action

    def build(self, event: Event, now: datetime) -> OutboundRequest | Skip:
        """One ClickConversion, or Skip (unmapped, no click id nor user data)."""
        action = self._action(event.name)
        if isinstance(action, Skip):
            return action
        clicks = event.click_ids
        click = next(
            (
                (key, value)
                for key in ("gclid", "gbraid", "wbraid")
                if (value := getattr(clicks, key))
            ),
            None,
        )
        identifiers: list[dict[str, str]] = []
        if self._settings.send_user_identifiers:
            ident = event.identity
            if ident.email_sha256_google:
                identifiers.append({"hashedEmail": ident.email_sha256_google})
            if ident.phone_sha256_e164:
                identifiers.append({"hashedPhoneNumber": ident.phone_sha256_e164})
        if click is None and not identifiers:
            return Skip("missing_identifier")
        conversion: dict[str, Any] = {}
        if click is not None:
            conversion[click[0]] = click[1]
        conversion["conversionAction"] = action
        conversion["conversionDateTime"] = conversion_date_time(
            event_time(event.occurred_at, now)
        )
        value, currency = None, None
        if event.commerce is not None and event.commerce.value is not None:
            value, currency = event.commerce.value, event.commerce.currency
        elif event.lead is not None and event.lead.value is not None:
            value, currency = event.lead.value, event.lead.currency
        if value is not None:
            conversion["conversionValue"] = money(value)
            conversion["currencyCode"] = currency
        conversion["orderId"] = self._order_id(event)
        if event.consent.ad_user_data != "unknown":
            conversion["consent"] = {"adUserData": event.consent.ad_user_data.upper()}
        if identifiers:
            conversion["userIdentifiers"] = identifiers[:MAX_USER_IDENTIFIERS]
        body: dict[str, Any] = {"conversions": [conversion], "partialFailure": True}
        if event.debug:
            body["validateOnly"] = True
        headers = {"Content-Type": "application/json"}
        if self._settings.login_customer_id:
            headers["login-customer-id"] = self._settings.login_customer_id
        return OutboundRequest(
            method="POST",
            url=self._url,
            json=body,
            headers=headers,
            secret_headers={"developer-token": self._credentials.developer_token},
        )

    @staticmethod
    def _order_id(event: Event) -> str:
        if event.commerce is not None and event.commerce.transaction_id:
            return event.commerce.transaction_id
        if event.lead is not None and event.lead.deal_id:
            return f"deal-{event.lead.deal_id}"  # a lead can win several deals
        lead_id = (event.lead.lead_id if event.lead else None) or event.identity.lead_id
        return lead_id or event.dedup_key

    # --- OAuth -------------------------------------------------------------

    def token_request(self) -> OutboundRequest:
        """The refresh-token grant, form-encoded; all of it is secret."""
        creds = self._credentials
        form = urlencode(
            {
                "grant_type": "refresh_token",
                "client_id": creds.client_id,
                "client_secret": creds.client_secret,
                "refresh_token": creds.refresh_token,
            }
        )
        return OutboundRequest(
            method="POST",
            url=self._settings.token_url,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            content=form.encode("ascii"),
        )

    def _fetch_token(self, sender: HttpSender, now: datetime) -> str:
        response = sender.send(self.token_request())
        data = json_body(response)
        data = data if isinstance(data, dict) else {}
        token = data.get("access_token")
        if not 200 <= response.status < 300 or not isinstance(token, str):
            error = data.get("error") if isinstance(data.get("error"), str) else None
            raise DeliveryError(
                f"token exchange failed: http {response.status}"
                + (f" {error}" if error else ""),
                destination=self.id,
                status_code=response.status,
                retryable=is_retryable_status(response.status),
            )
        expires_in = data.get("expires_in")
        seconds = expires_in if isinstance(expires_in, int | float) else 3600
        self._token = token
        self._token_expires = now + timedelta(seconds=seconds) - TOKEN_MARGIN
        return token

    def authorize(
        self, request: OutboundRequest, sender: HttpSender, now: datetime
    ) -> OutboundRequest:
        """Add ``Authorization: Bearer``; exchange the refresh token if needed.

        Raises:
            truecount.errors.DeliveryError: the token endpoint refused or failed
                (``retryable`` for 408/429/5xx); transport errors from the
                sender propagate.
        """
        with self._lock:
            token = self._token
            if (
                token is None
                or self._token_expires is None
                or now >= self._token_expires
            ):
                token = self._fetch_token(sender, now)
        return replace(
            request,
            secret_headers={
                **request.secret_headers,
                "Authorization": f"Bearer {token}",
            },
        )

    def forget_token(self) -> None:
        """Drop the cached access token (after a 401)."""
        with self._lock:
            self._token = None
            self._token_expires = None

    # --- answers -----------------------------------------------------------

    def _retry_after(
        self, codes: list[str], headers: Mapping[str, str]
    ) -> float | None:
        """``too_recent_delay_seconds`` for TOO_RECENT_*, else ``Retry-After``."""
        if any(c in TOO_RECENT for c in codes):
            return float(self._settings.too_recent_delay_seconds)
        return parse_retry_after(headers)

    def classify(self, response: HttpResponse) -> SendResult:
        """Whole-request errors by status; row errors from partialFailureError.

        ``TOO_RECENT_EVENT`` / ``TOO_RECENT_CONVERSION_ACTION`` (the click is
        less than ~6 h old) is a ``retry`` with ``retry_after`` =
        ``too_recent_delay_seconds``: fanout defers it rather than burning its
        attempts on Pub/Sub's short backoff.
        """
        request_id = header(response.headers, "request-id")
        data = json_body(response)
        data = data if isinstance(data, dict) else {}
        status = response.status
        if not 200 <= status < 300:
            raw_error = data.get("error")
            error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
            codes = _error_codes(error)
            rpc_status = str(error.get("status") or "")
            text = clip(
                f"http {status} {rpc_status}".strip()
                + (f" {','.join(codes)}" if codes else "")
                + (f": {error['message']}" if error.get("message") else "")
            )
            if status == 401:
                self.forget_token()
                return SendResult(
                    "retry", http_status=status, error=text, request_id=request_id
                )
            retry = (
                is_retryable_status(status)
                or rpc_status in RETRY_STATUSES
                or any(c in RETRY_LATER for c in codes)
            )
            return SendResult(
                "retry" if retry else "failed",
                http_status=status,
                error=text,
                request_id=request_id,
                retry_after=self._retry_after(codes, response.headers)
                if retry
                else None,
                detail=drop_empty({"codes": codes}) or None,
            )
        failure = data.get("partialFailureError")
        codes = _error_codes(failure)
        if not failure or (
            isinstance(failure, dict) and not failure.get("code") and not codes
        ):
            return SendResult(
                "delivered",
                http_status=status,
                request_id=request_id,
                detail=drop_empty(
                    {"results": data.get("results"), "jobId": data.get("jobId")}
                ),
            )
        message = failure.get("message") if isinstance(failure, dict) else None
        detail = drop_empty({"codes": codes, "message": message})
        if codes and all(c in ALREADY_DONE for c in codes):
            return SendResult(
                "delivered",
                http_status=status,
                request_id=request_id,
                detail={**detail, "dedup": True},
            )
        text = clip("partial failure: " + (", ".join(codes) or str(message)))
        if codes and all(c in RETRY_LATER or c in ALREADY_DONE for c in codes):
            return SendResult(
                "retry",
                http_status=status,
                error=text,
                request_id=request_id,
                retry_after=self._retry_after(codes, response.headers),
                detail=detail,
            )
        return SendResult(
            "failed",
            http_status=status,
            error=text,
            request_id=request_id,
            detail=detail,
        )


def create(
    dest_id: str, cfg: DestinationConfig, env: Mapping[str, str]
) -> GoogleAdsDestination:
    """Build a ``google_ads`` destination from its config and the environment.

    Args:
        dest_id: the destination id.
        cfg: its config (``customer_id`` and ``conversion_actions`` required).
        env: the environment holding the developer token and OAuth client.

    Returns:
        The destination.

    Raises:
        ConfigError: a bad key, or a credential's variable is unset.
    """
    settings = load_settings(Settings, dest_id, cfg)
    credentials = Credentials(
        developer_token=require_secret(env, settings.developer_token_env, dest_id),
        client_id=require_secret(env, settings.client_id_env, dest_id),
        client_secret=require_secret(env, settings.client_secret_env, dest_id),
        refresh_token=require_secret(env, settings.refresh_token_env, dest_id),
    )
    return GoogleAdsDestination(dest_id, cfg, settings, credentials)
