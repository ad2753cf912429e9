"""Shared, pure helpers for destination modules.

Every ``truecount.destinations.<type>`` module builds on :class:`BaseDestination`
(routing, name mapping, consent defaults, the default ``authorize`` and
``classify``) and on the helpers here: settings and secret loading, HTTP
classification, money and timestamp conversion, and endpoint resolution.

Nothing here does I/O or reads the clock or the environment: ``now`` and ``env``
are passed in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from truecount.config import DestinationConfig, format_validation_error
from truecount.errors import ConfigError
from truecount.log import register_secret
from truecount.ports import (
    ConsentType,
    HttpResponse,
    HttpSender,
    OutboundRequest,
    SendResult,
    Skip,
)

#: the event param fanout sets to the browser copy's event_id, when the ledger
#: knows one (Meta, TikTok and LinkedIn dedup against the browser tag with it)
BROWSER_EVENT_ID_PARAM = "truecount_browser_event_id"

#: event params that are Truecount's own plumbing, never forwarded as params
INTERNAL_PARAM_PREFIX = "truecount_"

UnknownConsent = Literal["deny", "allow"]
SettingsT = TypeVar("SettingsT", bound=BaseModel)


# --- config ------------------------------------------------------------------


def load_settings(
    settings_cls: type[SettingsT], dest_id: str, cfg: DestinationConfig
) -> SettingsT:
    """Validate a destination's type-specific keys.

    Args:
        settings_cls: the module's ``Settings`` model.
        dest_id: the destination id (the TOML table name).
        cfg: the destination's config; ``cfg.options`` holds the extra keys.

    Returns:
        The validated settings.

    Raises:
        ConfigError: naming ``destinations.<id>.<key>`` and the reason.
    """
    try:
        return settings_cls.model_validate(cfg.options)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, f"destinations.{dest_id}")
        ) from None


def require_secret(env: Mapping[str, str], name: str, dest_id: str) -> str:
    """Read a required secret from ``env``.

    Args:
        env: the environment (injected, never ``os.environ`` directly).
        name: the variable's name, from the settings.
        dest_id: the destination id, for the error message.

    Returns:
        The secret, stripped of surrounding whitespace.

    Raises:
        ConfigError: the variable is unset or empty; names it, never a value.
    """
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigError(
            f"destinations.{dest_id}: environment variable {name} is not set"
        )
    register_secret(value)  # the log redactor never prints it
    return value


def optional_secret(env: Mapping[str, str], name: str) -> str | None:
    """Read an optional secret; ``None`` when unset or empty."""
    value = (env.get(name) or "").strip()
    if value:
        register_secret(value)
    return value or None


def resolve_endpoint(override: str | None, default_base: str, path: str) -> str:
    """Join a base URL and a platform path.

    ``override`` (the config's ``endpoint``) replaces the platform's base URL
    and keeps any path of its own, so ``http://127.0.0.1:8080/capture`` and
    ``/mp/collect`` give ``http://127.0.0.1:8080/capture/mp/collect``.

    Args:
        override: the configured base URL, or None.
        default_base: the platform's production base URL.
        path: the platform path, starting with ``/``.

    Returns:
        The full URL without a query string.
    """
    base = (override or default_base).rstrip("/")
    return base + path


# --- names -------------------------------------------------------------------


def accepts(events: list[str], name: str) -> bool:
    """Whether a configured ``events`` list routes ``name`` (``"*"`` = all)."""
    return "*" in events or name in events


def map_name(
    name: str,
    overrides: Mapping[str, str],
    defaults: Mapping[str, str] | None,
) -> str | Skip:
    """Map a canonical event name to the platform's.

    Args:
        name: the canonical name.
        overrides: the config's ``names`` (wins over the defaults).
        defaults: the module's ``DEFAULT_NAMES``, or None to pass names
            through unchanged (GA4, whose names are the canonical ones).

    Returns:
        The platform name, or ``Skip("unmapped_event")``.
    """
    if name in overrides:
        return overrides[name]
    if defaults is None:
        return name
    mapped = defaults.get(name)
    return mapped if mapped is not None else Skip("unmapped_event")


def browser_event_id(params: Mapping[str, Any], event_id: str) -> str:
    """The id the browser tag used for this event, else ``event_id``.

    Fanout sets ``params["truecount_browser_event_id"]`` when the ledger knows
    the browser copy of a backend event; platforms that dedup against their
    browser tag (Meta, TikTok, LinkedIn) need that id.
    """
    value = params.get(BROWSER_EVENT_ID_PARAM)
    if isinstance(value, str) and value:
        return value
    return event_id


# --- values ------------------------------------------------------------------


def money(value: Decimal) -> int | float:
    """A Decimal amount as a JSON number: an int when integral, else a float.

    Only call this at the wire edge: the canonical event keeps Decimals.
    """
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def money_text(value: Decimal) -> str:
    """A Decimal amount as plain decimal text (``"21.00"``), never exponent form."""
    return format(value, "f")


def event_time(occurred_at: datetime, now: datetime) -> datetime:
    """The event time to send: ``occurred_at``, never later than ``now``.

    Platforms reject events from the future; a small clock skew between the
    browser and us must not lose an event.
    """
    return min(occurred_at, now)


def epoch_seconds(moment: datetime) -> int:
    """Unix seconds (floor) of an aware datetime."""
    return int(moment.timestamp() // 1)


def epoch_millis(moment: datetime) -> int:
    """Unix milliseconds of an aware datetime, exact for microsecond input."""
    return epoch_micros(moment) // 1000


def epoch_micros(moment: datetime) -> int:
    """Unix microseconds of an aware datetime, computed without float error."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def drop_empty(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` without None values, empty strings, lists or dicts."""
    return {k: v for k, v in data.items() if v is not None and v not in ("", [], {})}


# --- responses ---------------------------------------------------------------


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def json_body(response: HttpResponse) -> Any:
    """The response body parsed as JSON, or None when empty or not JSON."""
    if not response.body:
        return None
    try:
        return json.loads(response.body)
    except (ValueError, UnicodeDecodeError):
        return None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from a ``Retry-After`` header.

    Delta-seconds are used as they are. An HTTP date is measured against the
    response's own ``Date`` header, so no clock is read; without one it is
    ignored.

    Args:
        headers: the response headers.

    Returns:
        Seconds (>= 0), or None when absent or unparseable.
    """
    raw = header(headers, "Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    sent = header(headers, "Date")
    if sent is None:
        return None
    try:
        until = parsedate_to_datetime(raw)
        base = parsedate_to_datetime(sent)
    except (TypeError, ValueError):
        return None
    return max(0.0, (until - base).total_seconds())


def is_retryable_status(status: int) -> bool:
    """408, 429 and 5xx are worth retrying; other statuses are not."""
    return status in (408, 429) or status >= 500


def classify_http(
    response: HttpResponse,
    request_id: str | None = None,
    error: str | None = None,
) -> SendResult:
    """Classify a response by its HTTP status alone.

    2xx is delivered; 408, 429 and 5xx are retried (honouring ``Retry-After``);
    anything else is a permanent failure.

    Args:
        response: the platform's answer.
        request_id: the platform's request or trace id, if known.
        error: an error text to use instead of ``http <status>``.

    Returns:
        The classified result.
    """
    status = response.status
    if 200 <= status < 300:
        return SendResult("delivered", http_status=status, request_id=request_id)
    text = error or f"http {status}"
    return error_result(is_retryable_status(status), response, text, request_id)


def error_result(
    retryable: bool,
    response: HttpResponse,
    error: str,
    request_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> SendResult:
    """A platform error as a result: ``retry`` (honouring ``Retry-After``) or
    ``failed``.

    Args:
        retryable: whether trying again later may succeed.
        response: the platform's answer.
        error: the error text for the ledger.
        request_id: the platform's request or trace id, if known.
        detail: platform details worth keeping (error codes, rows).

    Returns:
        The classified result.
    """
    if retryable:
        return SendResult(
            "retry",
            http_status=response.status,
            error=error,
            request_id=request_id,
            retry_after=parse_retry_after(response.headers),
            detail=detail,
        )
    return SendResult(
        "failed",
        http_status=response.status,
        error=error,
        request_id=request_id,
        detail=detail,
    )


def clip(text: str, limit: int = 300) -> str:
    """Shorten a platform message for the ledger."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the base class ----------------------------------------------------------


class BaseDestination:
    """Common state and behaviour of every destination.

    Subclasses set the class-level defaults and implement ``build`` (and
    ``classify`` when the platform's answers need more than the HTTP status).
    """

    TYPE: ClassVar[str] = ""
    DEFAULT_NAMES: ClassVar[Mapping[str, str] | None] = None
    DEFAULT_CONSENT: ClassVar[tuple[ConsentType, ...]] = ()
    DEFAULT_UNKNOWN_CONSENT: ClassVar[UnknownConsent] = "deny"
    DEFAULT_MAX_AGE: ClassVar[timedelta | None] = None

    def __init__(self, dest_id: str, cfg: DestinationConfig) -> None:
        """Apply the common config keys over the type's defaults."""
        self.id: str = dest_id
        self.type: str = self.TYPE
        self.required_consent: tuple[ConsentType, ...] = (
            tuple(cfg.consent) if cfg.consent is not None else self.DEFAULT_CONSENT
        )
        self.unknown_consent: UnknownConsent = (
            cfg.unknown_consent or self.DEFAULT_UNKNOWN_CONSENT
        )
        self.max_age: timedelta | None = self.DEFAULT_MAX_AGE
        self.max_attempts: int | None = cfg.max_attempts
        self._events = list(cfg.events)
        self._names = dict(cfg.names)
        self._endpoint = cfg.endpoint

    @property
    def test_mode(self) -> bool:
        """Whether debug events can go to a platform test mode (default: no)."""
        return False

    def accepts(self, event_name: str) -> bool:
        """Whether the config routes this canonical event name here."""
        return accepts(self._events, event_name)

    def platform_name(self, name: str) -> str | Skip:
        """The platform's name for a canonical event, or ``Skip``."""
        return map_name(name, self._names, self.DEFAULT_NAMES)

    def classify(self, response: HttpResponse) -> SendResult:
        """Classify by HTTP status (subclasses read the body too)."""
        return classify_http(response)

    def authorize(
        self, request: OutboundRequest, sender: HttpSender, now: datetime
    ) -> OutboundRequest:
        """No credentials to fetch: the request as it is."""
        return request

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id!r}>"
