"""Canonical event, version 1: the Pub/Sub message body.

This module is the single source of the contract in CONTRACT.md. The JSON Schema
(``docs/schema/event.v1.json``) and the Markdown reference (``docs/contract.md``) are
generated from it by ``truecount contract`` / ``python -m truecount.contract``.

Design choices:

* Every model is strict about shape: unknown fields are rejected (``extra="forbid"``).
* Timestamps must carry a timezone and are normalised to UTC; they serialise as
  RFC 3339 with a ``Z`` suffix.
* Money (``value``, ``price``, ``tax``, ``shipping``, ``discount``) is ``Decimal``.
  In JSON it is written as a string (``"21.00"``) so that no binary float ever
  touches it; on input a JSON number or string is accepted.
* ``params`` and ``user_properties`` hold strings or numbers. They are not money:
  monetary values belong in ``commerce`` or ``lead``.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)

from truecount.core.currency import is_currency

SCHEMA_VERSION: Literal[1] = 1

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,39}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"

Source = Literal["ga4", "data", "mp", "stripe", "hubspot", "crm", "shopify"]
BROWSER_SOURCES: frozenset[str] = frozenset({"ga4", "data", "mp"})
BACKEND_SOURCES: frozenset[str] = frozenset({"stripe", "hubspot", "crm", "shopify"})

ConsentValue = Literal["granted", "denied", "unknown"]
CONSENT_TYPES: tuple[str, ...] = (
    "ad_storage",
    "analytics_storage",
    "ad_user_data",
    "ad_personalization",
)


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _rfc3339(value: datetime) -> str:
    if value.tzinfo is not UTC:  # validated values already are
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" → "Z"


UtcDatetime = Annotated[
    AwareDatetime,
    AfterValidator(_to_utc),
    PlainSerializer(_rfc3339, return_type=str, when_used="json"),
]


def _check_currency(value: str) -> str:
    if not is_currency(value):
        raise ValueError(f"{value!r} is not an ISO 4217 currency code")
    return value


Currency = Annotated[
    str,
    Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, upper case"),
    AfterValidator(_check_currency),
]

Money = Annotated[
    Decimal,
    Field(allow_inf_nan=False),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
]

Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN)]


def _param_value(value: object) -> str | int | float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a string or a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


ParamValue = Annotated[
    str | int | float,
    PlainValidator(_param_value),
    WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "number"}]}
    ),
]
ParamName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]{0,99}$")]


class Strict(BaseModel):
    """Base for every contract model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Client(Strict):
    """The browser or device the event came from."""

    client_id: str | None = Field(None, max_length=256)
    user_id: str | None = Field(None, max_length=256)
    session_id: str | None = Field(None, max_length=64)
    session_number: int | None = Field(None, ge=0)
    ip: str | None = Field(None, max_length=64)
    user_agent: str | None = Field(None, max_length=1024)
    language: str | None = Field(None, max_length=64)
    screen_resolution: str | None = Field(None, max_length=32)


class Page(Strict):
    """The page the event happened on."""

    location: str | None = Field(None, max_length=4096)
    referrer: str | None = Field(None, max_length=4096)
    title: str | None = Field(None, max_length=1024)


class Identity(Strict):
    """Hashed identifiers only: lower-case hex SHA-256 of normalised values.

    See ``truecount.core.pii`` for the normalisation of each field.
    """

    email_sha256: Sha256 | None = Field(
        None, description="trimmed, lower-cased (Meta, LinkedIn, TikTok)"
    )
    email_sha256_google: Sha256 | None = Field(
        None, description="as email_sha256, and gmail.com dots removed (GA4, Ads)"
    )
    phone_sha256: Sha256 | None = Field(
        None, description="digits with country code, no '+' (Meta)"
    )
    phone_sha256_e164: Sha256 | None = Field(
        None, description="'+' and digits, E.164 (Google, TikTok)"
    )
    first_name_sha256: Sha256 | None = None
    last_name_sha256: Sha256 | None = None
    city_sha256: Sha256 | None = None
    region_sha256: Sha256 | None = None
    postal_code_sha256: Sha256 | None = None
    country_sha256: Sha256 | None = None
    external_id: Sha256 | None = Field(None, description="SHA-256 of the trimmed id")
    lead_id: str | None = Field(None, max_length=128, description="CRM lead/contact id")


class ClickIds(Strict):
    """Advertising click ids and browser ids, forwarded unchanged."""

    gclid: str | None = Field(None, max_length=512)
    gbraid: str | None = Field(None, max_length=512)
    wbraid: str | None = Field(None, max_length=512)
    dclid: str | None = Field(None, max_length=512)
    fbclid: str | None = Field(None, max_length=512)
    fbc: str | None = Field(None, max_length=512)
    fbp: str | None = Field(None, max_length=512)
    ttclid: str | None = Field(None, max_length=512)
    ttp: str | None = Field(None, max_length=512)
    li_fat_id: str | None = Field(None, max_length=512)
    msclkid: str | None = Field(None, max_length=512)


class Consent(Strict):
    """Consent Mode v2 state. ``unknown`` means no signal was received."""

    ad_storage: ConsentValue = "unknown"
    analytics_storage: ConsentValue = "unknown"
    ad_user_data: ConsentValue = "unknown"
    ad_personalization: ConsentValue = "unknown"
    gcs: str | None = Field(None, max_length=16, description="raw gcs, for audit")
    gcd: str | None = Field(None, max_length=64, description="raw gcd, for audit")


class Item(Strict):
    """A GA4 e-commerce item."""

    item_id: str | None = Field(None, max_length=256)
    item_name: str | None = Field(None, max_length=256)
    price: Money | None = None
    quantity: int | None = Field(None, ge=0)
    item_brand: str | None = Field(None, max_length=256)
    item_category: str | None = Field(None, max_length=256)
    item_category2: str | None = Field(None, max_length=256)
    item_category3: str | None = Field(None, max_length=256)
    item_category4: str | None = Field(None, max_length=256)
    item_category5: str | None = Field(None, max_length=256)
    item_variant: str | None = Field(None, max_length=256)
    coupon: str | None = Field(None, max_length=256)
    discount: Money | None = None
    affiliation: str | None = Field(None, max_length=256)
    index: int | None = Field(None, ge=0)
    item_list_id: str | None = Field(None, max_length=256)
    item_list_name: str | None = Field(None, max_length=256)
    location_id: str | None = Field(None, max_length=256)
    promotion_id: str | None = Field(None, max_length=256)
    promotion_name: str | None = Field(None, max_length=256)
    creative_name: str | None = Field(None, max_length=256)
    creative_slot: str | None = Field(None, max_length=256)
    params: dict[ParamName, ParamValue] = Field(
        default_factory=dict, description="custom item parameters (GA4 kN/vN)"
    )


class Commerce(Strict):
    """Order data for e-commerce events."""

    transaction_id: str | None = Field(None, min_length=1, max_length=256)
    value: Money | None = None
    currency: Currency | None = None
    tax: Money | None = None
    shipping: Money | None = None
    coupon: str | None = Field(None, max_length=256)
    items: list[Item] = Field(default_factory=list, max_length=200)

    @model_validator(mode="after")
    def _value_needs_currency(self) -> Commerce:
        if self.value is not None and self.currency is None:
            raise ValueError("currency is required when value is set")
        return self


class Lead(Strict):
    """A lead or deal in a CRM."""

    lead_id: str | None = Field(None, min_length=1, max_length=128)
    deal_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="CRM deal or opportunity id: each deal is its own business "
        "event, so one lead can win several",
    )
    stage: str | None = Field(None, max_length=128)
    value: Money | None = None
    currency: Currency | None = None

    @model_validator(mode="after")
    def _value_needs_currency(self) -> Lead:
        if self.value is not None and self.currency is None:
            raise ValueError("currency is required when value is set")
        return self


class Event(Strict):
    """Canonical event v1."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(min_length=1, max_length=128)
    name: str = Field(pattern=NAME_PATTERN)
    source: Source
    occurred_at: UtcDatetime
    received_at: UtcDatetime
    dedup_key: str = Field(
        "",
        max_length=512,
        description="business key, e.g. purchase:T-1001; default event:<event_id>",
    )
    client: Client = Field(default_factory=Client)
    page: Page | None = None
    identity: Identity = Field(default_factory=Identity)
    click_ids: ClickIds = Field(default_factory=ClickIds)
    consent: Consent = Field(default_factory=Consent)
    commerce: Commerce | None = None
    lead: Lead | None = None
    params: dict[ParamName, ParamValue] = Field(default_factory=dict)
    user_properties: dict[ParamName, ParamValue] = Field(default_factory=dict)
    debug: bool = False

    @model_validator(mode="after")
    def _default_dedup_key(self) -> Event:
        if not self.dedup_key:
            object.__setattr__(self, "dedup_key", f"event:{self.event_id}")
        return self

    @property
    def is_browser(self) -> bool:
        """True for events that came in through ``ingest``."""
        return self.source in BROWSER_SOURCES

    def pubsub_attributes(self) -> dict[str, str]:
        """The Pub/Sub attributes CONTRACT.md puts on every message."""
        return {
            "event_id": self.event_id,
            "dedup_key": self.dedup_key,
            "name": self.name,
            "source": self.source,
            "schema_version": str(self.schema_version),
        }

    def to_json_bytes(self) -> bytes:
        """Serialise as the UTF-8 JSON message body, leaving out unset nulls."""
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_json_bytes(cls, data: bytes | str) -> Event:
        """Parse and validate a message body."""
        return cls.model_validate_json(data)


_PATH_TOKEN = re.compile(r"^\d+$")


def error_fields(errors: list[Any], prefix: str = "") -> list[dict[str, str]]:
    """Turn pydantic ``errors()`` into the CONTRACT error ``fields`` list.

    Each entry is ``{"path": "commerce.items[0].price", "message": "..."}``.
    """
    out: list[dict[str, str]] = []
    for err in errors:
        path = prefix
        for part in err.get("loc", ()):
            token = str(part)
            if _PATH_TOKEN.match(token):
                path += f"[{token}]"
            elif not token.startswith(("function-", "union[", "json-or-python")):
                path = f"{path}.{token}" if path else token
        out.append({"path": path or "$", "message": str(err.get("msg", "invalid"))})
    return out
