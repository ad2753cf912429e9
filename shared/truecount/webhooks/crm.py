"""Truecount's signed CRM contract (``POST /crm``): body to canonical event.

Pure: the signature is checked by :func:`truecount.webhooks.signatures.verify_crm`
before this runs; ``received_at`` is passed in. One event per request::

    {
      "name": "qualify_lead",                       # GA4 name rules
      "event_id": "crm-lead-42-mql",                # stable per occurrence
      "occurred_at": "2024-05-01T12:00:00Z",        # RFC 3339 with offset
      "lead": {"lead_id": "42", "stage": "mql", "value": "100", "currency": "EUR"},
      "commerce": null,                             # or an order
      "identity": {"email": "...", "phone": "...", "first_name": "...",
                   "last_name": "...", "city": "...", "region": "...",
                   "postal_code": "...", "country": "US", "external_id": "...",
                   "phone_country_code": "1"},      # raw or SHA-256 hex
      "click_ids": {"gclid": "..."},
      "consent": {"ad_user_data": "granted"},
      "client": {"client_id": "...", "session_id": "...", "user_id": "..."},
      "params": {"plan": "pro"},
      "debug": false
    }

Raw identity fields are normalised and hashed here and never go further.
Unknown keys are rejected (400 naming the path), as are ``occurred_at`` values
without an offset or more than the tolerance in the future.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from truecount.core.pii import RawIdentity, hash_identity, scrub_params
from truecount.errors import InvalidPayload
from truecount.models.event import (
    NAME_PATTERN,
    ClickIds,
    Client,
    Commerce,
    Consent,
    Event,
    Lead,
    ParamName,
    ParamValue,
    error_fields,
)

_MAX_RAW = 512


class CrmIdentity(BaseModel):
    """Raw (or already SHA-256 hashed) identifiers of the person."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(None, max_length=_MAX_RAW)
    phone: str | None = Field(None, max_length=64)
    first_name: str | None = Field(None, max_length=_MAX_RAW)
    last_name: str | None = Field(None, max_length=_MAX_RAW)
    city: str | None = Field(None, max_length=_MAX_RAW)
    region: str | None = Field(None, max_length=_MAX_RAW)
    postal_code: str | None = Field(None, max_length=64)
    country: str | None = Field(None, max_length=64)
    external_id: str | None = Field(None, max_length=_MAX_RAW)
    phone_country_code: str | None = Field(
        None,
        pattern=r"^\+?[1-9]\d{0,2}$",
        description="calling code for phones written without one, e.g. 1 or 44",
    )


class CrmEvent(BaseModel):
    """The ``POST /crm`` body."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    event_id: str = Field(min_length=1, max_length=128)
    occurred_at: AwareDatetime
    lead: Lead | None = None
    commerce: Commerce | None = None
    identity: CrmIdentity = Field(default_factory=CrmIdentity)
    click_ids: ClickIds = Field(default_factory=ClickIds)
    consent: Consent = Field(default_factory=Consent)
    client: Client = Field(default_factory=Client)
    params: dict[ParamName, ParamValue] = Field(default_factory=dict)
    user_properties: dict[ParamName, ParamValue] = Field(default_factory=dict)
    debug: bool = False


def parse_crm(data: Any) -> CrmEvent:
    """Validate a ``POST /crm`` body.

    Args:
        data: the parsed JSON body.

    Returns:
        The validated request.

    Raises:
        InvalidPayload: 400 with a ``fields`` entry per bad path.
    """
    try:
        return CrmEvent.model_validate(data)
    except ValidationError as exc:
        raise InvalidPayload(
            "invalid CRM event", error_fields(exc.errors()), "invalid_event"
        ) from None


def map_crm(request: CrmEvent, received_at: datetime, max_future: timedelta) -> Event:
    """Turn a validated CRM request into a canonical event (PII hashed).

    Args:
        request: the validated body.
        received_at: when it arrived.
        max_future: how far ``occurred_at`` may be ahead of ``received_at``.

    Returns:
        The canonical event (source ``crm``), without its dedup key.

    Raises:
        InvalidPayload: ``occurred_at`` is in the future, or a value does not fit
            the canonical event.
    """
    if request.occurred_at > received_at + max_future:
        message = "is in the future"
        raise InvalidPayload(
            "occurred_at is in the future",
            [{"path": "occurred_at", "message": message}],
            "invalid_event",
        )
    params, found_email = scrub_params(dict(request.params))
    raw = request.identity
    lead_id = request.lead.lead_id if request.lead else None
    identity = hash_identity(
        RawIdentity(
            email=raw.email or found_email,
            phone=raw.phone,
            first_name=raw.first_name,
            last_name=raw.last_name,
            city=raw.city,
            region=raw.region,
            postal_code=raw.postal_code,
            country=raw.country,
            external_id=raw.external_id,
            lead_id=lead_id,
            phone_default_country=raw.phone_country_code,
        )
    )
    user_properties, _ = scrub_params(dict(request.user_properties))
    try:
        return Event(
            event_id=request.event_id,
            name=request.name,
            source="crm",
            occurred_at=request.occurred_at,
            received_at=received_at,
            client=request.client,
            identity=identity,
            click_ids=request.click_ids,
            consent=request.consent,
            commerce=request.commerce,
            lead=request.lead,
            params=params,
            user_properties=user_properties,
            debug=request.debug,
        )
    except ValidationError as exc:
        raise InvalidPayload(
            "invalid CRM event", error_fields(exc.errors()), "invalid_event"
        ) from None
