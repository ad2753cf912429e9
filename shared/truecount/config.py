"""The TOML configuration, named by ``TRUECOUNT_CONFIG``.

``parse_config`` is pure (text in, models out); ``load_config`` reads the file.
Every error names the key and the reason, e.g.::

    destinations.meta.events[1]: String should match pattern ...

Secrets are never in the file: each credential is named by the environment
variable that holds it (``*_env`` keys). Destination-specific keys are validated
by the destination's own module (``truecount.destinations.<type>.Settings``) when
fanout builds its destinations; ``truecount config check`` validates everything.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from truecount.errors import ConfigError

EVENT_NAME = r"^(\*|[A-Za-z][A-Za-z0-9_]{0,39})$"
ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"

DestinationType = Literal["ga4", "meta", "google_ads", "linkedin", "tiktok", "http"]
ConsentTypeName = Literal[
    "ad_storage", "analytics_storage", "ad_user_data", "ad_personalization"
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngestConfig(_Section):
    """Browser intake (``ingest``)."""

    cors_origins: list[str] = Field(
        default_factory=list,
        description="origins allowed to send with credentials; echoed back",
    )
    trusted_proxies: int = Field(
        1,
        ge=0,
        le=10,
        description="proxy hops appended to X-Forwarded-For by our own load "
        "balancers; the client IP is the hop just before them",
    )
    max_body_bytes: int = Field(65536, ge=1024, le=10_000_000)
    max_events_per_request: int = Field(50, ge=1, le=1000)
    mp_api_secrets_env: str = Field("TRUECOUNT_MP_API_SECRETS", pattern=ENV_NAME)
    publish_timeout_seconds: float = Field(10.0, gt=0, le=60)


class StripeConfig(_Section):
    """``POST /stripe``."""

    signing_secrets_env: str = Field(
        "TRUECOUNT_STRIPE_SIGNING_SECRETS", pattern=ENV_NAME
    )
    tolerance_seconds: int = Field(300, ge=0, le=86400)
    test_mode: Literal["debug", "drop", "accept"] = Field(
        "debug", description="livemode=false events: mark debug, drop, or accept"
    )
    renewal_event_name: str = Field(
        "purchase", pattern=EVENT_NAME, description="name for invoice.paid renewals"
    )


class HubSpotConfig(_Section):
    """``POST /hubspot``."""

    client_secret_env: str = Field("TRUECOUNT_HUBSPOT_CLIENT_SECRET", pattern=ENV_NAME)
    token_env: str = Field("TRUECOUNT_HUBSPOT_TOKEN", pattern=ENV_NAME)
    api_base_url: str = "https://api.hubapi.com"
    public_url: str | None = Field(
        None, description="public base URL HubSpot calls, when behind a proxy"
    )
    tolerance_seconds: int = Field(300, ge=1, le=86400)
    qualify_stages: list[str] = Field(
        default_factory=lambda: ["marketingqualifiedlead", "salesqualifiedlead"],
        description="lifecyclestage values that emit qualify_lead",
    )
    deal_stages: dict[str, str] = Field(
        default_factory=lambda: {"closedwon": "close_convert_lead"},
        description="dealstage value -> canonical event name",
    )
    lookup_timeout_seconds: float = Field(5.0, gt=0, le=30)
    lookup_budget_seconds: float = Field(
        3.0,
        gt=0,
        le=30,
        description="total time for one delivery's CRM lookups (at most three "
        "batch requests); past it the webhook answers 503 and HubSpot retries. "
        "HubSpot gives up on a delivery after about 5 s",
    )
    default_currency: str | None = Field(
        None,
        pattern=r"^[A-Z]{3}$",
        description="currency of deals without deal_currency_code "
        "(single-currency portals)",
    )


class CrmConfig(_Section):
    """``POST /crm``: Truecount's own signed contract."""

    keys_env: str = Field("TRUECOUNT_CRM_KEYS", pattern=ENV_NAME)
    tolerance_seconds: int = Field(300, ge=1, le=86400)


class SourcesConfig(_Section):
    """Backend sources. A configured section makes that source the truth."""

    stripe: StripeConfig | None = None
    hubspot: HubSpotConfig | None = None
    crm: CrmConfig | None = None
    max_body_bytes: int = Field(262144, ge=1024, le=10_000_000)

    @property
    def any_backend(self) -> bool:
        """True when at least one backend source is configured."""
        return any(s is not None for s in (self.stripe, self.hubspot, self.crm))

    @property
    def sells(self) -> bool:
        """True when a configured backend reports purchases (Stripe).

        HubSpot and a lead-only CRM never send ``purchase``: making the backend
        the truth for purchases then would hold every browser purchase forever.
        """
        return self.stripe is not None


class FanoutConfig(_Section):
    """Delivery, ledger and identity store."""

    max_attempts: int = Field(8, ge=1, le=100)
    ledger_ttl_days: int = Field(35, ge=1, le=3650)
    identity_ttl_days: int = Field(90, ge=1, le=3650)
    dead_letter_topic: str = Field("truecount-events-dead-letter", min_length=3)
    http_timeout_seconds: float = Field(10.0, gt=0, le=60)
    defer_threshold_seconds: float = Field(
        600,
        ge=60,
        le=86400,
        description="a retry asking to wait longer than this (Google Ads "
        "TOO_RECENT_EVENT: ~6 h) is deferred: kept pending until then and "
        "redriven, not counted against max_attempts",
    )


class DestinationConfig(BaseModel):
    """Keys every destination has. Type-specific keys are kept as extras and
    validated by ``truecount.destinations.<type>.Settings``."""

    model_config = ConfigDict(extra="allow")

    type: DestinationType
    enabled: bool = True
    endpoint: str | None = Field(
        None, pattern=r"^https?://", description="base-URL override (tests, local)"
    )
    events: list[str] = Field(
        default_factory=lambda: ["*"],
        description='canonical event names routed here; "*" = all',
    )
    names: dict[str, str] = Field(
        default_factory=dict, description="canonical name -> platform event name"
    )
    consent: list[ConsentTypeName] | None = Field(
        None, description="consent types required (default: per destination type)"
    )
    unknown_consent: Literal["deny", "allow"] | None = Field(
        None, description="what unknown consent counts as (default: deny for ads)"
    )
    max_attempts: int | None = Field(None, ge=1, le=100)

    @model_validator(mode="after")
    def _check_events(self) -> DestinationConfig:
        import re

        for i, name in enumerate(self.events):
            if not re.match(EVENT_NAME, name):
                raise ValueError(f"events[{i}]: {name!r} is not an event name or '*'")
        return self

    @property
    def options(self) -> dict[str, Any]:
        """The type-specific keys."""
        return dict(self.model_extra or {})


class RuleConfig(_Section):
    """Dedup rule for one canonical event name (``[rules.<name>]``)."""

    key: Literal["transaction_id", "lead_id", "event_id"] = "event_id"
    truth: Literal["first", "backend"] | None = Field(
        None,
        description="first (default) | backend (default for purchase once Stripe "
        "is configured)",
    )
    idempotence: Literal["ledger", "none"] = Field(
        "ledger", description="none: skip the ledger (at-least-once funnel events)"
    )
    prefix: str | None = Field(
        None, pattern=r"^[a-z_]{1,40}$", description="dedup key prefix; default name"
    )


DEFAULT_RULES: dict[str, RuleConfig] = {
    "purchase": RuleConfig(key="transaction_id"),
    "refund": RuleConfig(key="transaction_id"),
    "generate_lead": RuleConfig(key="lead_id", prefix="lead"),
    "qualify_lead": RuleConfig(key="lead_id"),
    "close_convert_lead": RuleConfig(key="lead_id"),
}


class Config(_Section):
    """The whole file."""

    ingest: IngestConfig = Field(default_factory=IngestConfig)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    fanout: FanoutConfig = Field(default_factory=FanoutConfig)
    destinations: dict[str, DestinationConfig] = Field(default_factory=dict)
    rules: dict[str, RuleConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_ids(self) -> Config:
        import re

        for dest_id in self.destinations:
            if not re.match(r"^[a-z][a-z0-9_]{0,39}$", dest_id):
                raise ValueError(f"destination id {dest_id!r} must be snake_case")
        for name in self.rules:
            if not re.match(EVENT_NAME, name) or name == "*":
                raise ValueError(f"rules.{name}: not an event name")
        return self

    def rule(self, name: str) -> RuleConfig:
        """The effective rule for an event name, defaults applied."""
        base = DEFAULT_RULES.get(name) or RuleConfig()
        if name in self.rules:  # an explicit rule overrides only the keys it sets
            base = base.model_copy(
                update=self.rules[name].model_dump(exclude_unset=True)
            )
        if base.truth is None:
            backend = name == "purchase" and self.sources.sells
            base = base.model_copy(update={"truth": "backend" if backend else "first"})
        return base


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ""
        for part in e["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path = f"{path}.{part}" if path else str(part)
        lines.append(f"{path or '$'}: {e['msg']}")
    return "; ".join(lines)


def parse_config(text: str, origin: str = "<config>") -> Config:
    """Parse and validate config TOML.

    Args:
        text: the TOML document.
        origin: a name for error messages (the file path).

    Returns:
        The validated config.

    Raises:
        ConfigError: naming the key and the reason.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: invalid TOML: {exc}") from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {_format_errors(exc)}") from None


def load_config(path: str | Path | None) -> Config:
    """Load the config file; ``None`` gives the defaults (no destinations)."""
    if path is None or str(path) == "":
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from None
    return parse_config(text, str(p))


def format_validation_error(err: ValidationError, prefix: str) -> str:
    """Format a destination ``Settings`` error with its ``destinations.<id>`` path."""
    return "; ".join(
        f"{prefix}.{part}" if not part.startswith("$") else f"{prefix}{part[1:]}"
        for part in _format_errors(err).split("; ")
    )
