"""HTTP sink: the canonical event, signed, POSTed to your own endpoint.

The body is the canonical event JSON (``None`` fields left out), serialised
canonically (sorted keys, no spaces, UTF-8) so that the receiver can verify the
signature over the exact bytes::

    Truecount-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

The receiver recomputes the HMAC over the raw body bytes and compares with
``hmac.compare_digest``; it should also reject stale ``t``. ``Idempotency-Key``
is the SHA-256 of the event's dedup key, so a retried delivery carries the same
key. Without a secret (``secret_env`` unset in the environment) nothing is signed.

Credentials the endpoint wants as headers (``Authorization: Bearer ...``) go in
``secret_headers_env`` (header name -> environment variable): they are sent but
never recorded, unlike ``headers``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from truecount.config import ENV_NAME, DestinationConfig
from truecount.destinations.base import (
    BaseDestination,
    classify_http,
    epoch_seconds,
    header,
    load_settings,
    optional_secret,
    require_secret,
)
from truecount.errors import ConfigError
from truecount.models.event import Event
from truecount.ports import HttpResponse, OutboundRequest, SendResult, Skip

SIGNATURE_HEADER = "Truecount-Signature"


class Settings(BaseModel):
    """Type-specific keys of an ``http`` destination."""

    model_config = ConfigDict(extra="forbid")

    secret_env: str = Field("TRUECOUNT_HTTP_SINK_SECRET", pattern=ENV_NAME)
    headers: dict[str, str] = Field(
        default_factory=dict, description="extra static headers (no secrets)"
    )
    secret_headers_env: dict[str, str] = Field(
        default_factory=dict,
        description="header name -> environment variable holding its value "
        "(sent, never recorded)",
    )
    send_debug: bool = Field(
        False,
        description="also deliver debug events (the body says debug: true); "
        "by default they are built and recorded but not sent",
    )

    @field_validator("secret_headers_env")
    @classmethod
    def _check_env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for header_name, env_name in value.items():
            if not re.fullmatch(ENV_NAME, env_name):
                raise ValueError(
                    f"{header_name}: {env_name!r} is not an environment variable name"
                )
        return value


def canonical_body(data: Any) -> bytes:
    """The exact bytes the sink receives: sorted keys, compact, UTF-8."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Truecount-Signature`` header value for a body.

    Args:
        secret: the shared signing secret.
        timestamp: unix seconds of the attempt.
        body: the exact body bytes.

    Returns:
        ``t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>." + body>``.
    """
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, "sha256")
    return f"t={timestamp},v1={mac.hexdigest()}"


class HttpDestination(BaseDestination):
    """Delivers canonical events to any HTTP endpoint."""

    TYPE = "http"
    DEFAULT_UNKNOWN_CONSENT = "allow"

    def __init__(
        self,
        dest_id: str,
        cfg: DestinationConfig,
        settings: Settings,
        secret: str | None,
        secret_headers: Mapping[str, str] | None = None,
    ) -> None:
        """See :func:`create`."""
        super().__init__(dest_id, cfg)
        if cfg.endpoint is None:
            raise ConfigError(
                f"destinations.{dest_id}.endpoint: required for type 'http'"
            )
        self._url = cfg.endpoint
        self._settings = settings
        self._secret = secret
        self._secret_headers = dict(secret_headers or {})

    @property
    def test_mode(self) -> bool:
        """Debug events are delivered only with ``send_debug = true``."""
        return self._settings.send_debug

    def build(self, event: Event, now: datetime) -> OutboundRequest | Skip:
        """POST the canonical event JSON, signed when a secret is set."""
        data = event.model_dump(mode="json", exclude_none=True)
        body = canonical_body(data)
        headers = {
            **self._settings.headers,
            "Content-Type": "application/json",
            "Truecount-Event-Id": event.event_id,
            "Idempotency-Key": hashlib.sha256(event.dedup_key.encode()).hexdigest(),
        }
        secret_headers: dict[str, str] = dict(self._secret_headers)
        if self._secret is not None:
            secret_headers[SIGNATURE_HEADER] = sign(
                self._secret, epoch_seconds(now), body
            )
        return OutboundRequest(
            method="POST",
            url=self._url,
            json=data,
            headers=headers,
            secret_headers=secret_headers,
            content=body,
        )

    def classify(self, response: HttpResponse) -> SendResult:
        """By HTTP status; ``X-Request-Id`` is kept when the sink sends one."""
        return classify_http(
            response, request_id=header(response.headers, "X-Request-Id")
        )


def create(
    dest_id: str, cfg: DestinationConfig, env: Mapping[str, str]
) -> HttpDestination:
    """Build an ``http`` destination from its config and the environment.

    Args:
        dest_id: the destination id.
        cfg: its config; ``endpoint`` is required and is the full URL.
        env: the environment holding the optional signing secret and the
            ``secret_headers_env`` values.

    Returns:
        The destination.

    Raises:
        ConfigError: a bad key, no ``endpoint``, or a ``secret_headers_env``
            variable is unset.
    """
    settings = load_settings(Settings, dest_id, cfg)
    secret_headers = {
        name: require_secret(env, var, dest_id)
        for name, var in settings.secret_headers_env.items()
    }
    return HttpDestination(
        dest_id,
        cfg,
        settings,
        optional_secret(env, settings.secret_env),
        secret_headers,
    )
