"""HubSpot webhook batches to canonical events, with CRM enrichment over a port.

Pure: the HubSpot API is reached only through :class:`HubSpotLookup` (the httpx
adapter is ``truecount.adapters.hubspot_api``), and ``received_at`` is passed in.

Mapping (``subscriptionType`` → canonical name; generic ``object.*`` types with
``objectTypeId`` ``0-1`` (contact) and ``0-3`` (deal) are treated the same way):

* ``contact.creation`` → ``generate_lead``, ``lead_id`` = the contact id;
* ``contact.propertyChange`` of ``lifecyclestage`` to one of ``qualify_stages``
  → ``qualify_lead`` (``lead.stage`` = the new stage);
* ``deal.propertyChange`` of ``dealstage`` to a key of ``deal_stages`` → that
  name (``closedwon`` → ``close_convert_lead``), ``lead.value``/``currency``
  from the deal, ``lead_id`` = the deal's first associated contact, so that the
  deal stitches with that contact's earlier events;
* anything else is ignored.

Enrichment: every id is planned first, then the whole batch is read in two
port calls: all deals (with their associated contacts), then all contacts (the
events' and the deals' first contacts) — at most three HTTP round trips with the
httpx adapter, whatever the batch size (HubSpot sends up to ~100 events and
gives up after about 5 s). A ``deadline`` (a ``time.monotonic()`` value chosen
by the caller) is passed through so the adapter starts no request after it.
Each contact's email, phone, names and address are hashed here; HubSpot's stored
click ids become ``click_ids.gclid`` (``hs_google_click_id``) and
``click_ids.fbclid`` (``hs_facebook_click_id``). No ``fbc`` is built: the
browser's real ``_fbc`` cookie is filled in by fanout's identity stitching,
which a synthetic value would block. A lookup that fails raises
:class:`~truecount.errors.UpstreamError` (503, HubSpot retries); an object that
no longer exists (404) is mapped without enrichment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from truecount.config import HubSpotConfig
from truecount.core.currency import is_currency
from truecount.core.pii import RawIdentity, hash_identity
from truecount.errors import InvalidPayload
from truecount.models.event import ClickIds, Event, Identity, Lead, error_fields

GENERATE_LEAD = "generate_lead"
QUALIFY_LEAD = "qualify_lead"
CONTACT_TYPE_ID = "0-1"
DEAL_TYPE_ID = "0-3"
_MAX_CLICK_ID = 512

#: Contact properties the adapter must request.
CONTACT_PROPERTIES: tuple[str, ...] = (
    "email",
    "phone",
    "firstname",
    "lastname",
    "city",
    "state",
    "zip",
    "country",
    "hs_google_click_id",
    "hs_facebook_click_id",
    "lifecyclestage",
)
#: Deal properties the adapter must request.
DEAL_PROPERTIES: tuple[str, ...] = ("amount", "deal_currency_code", "dealstage")


@dataclass(frozen=True)
class HubSpotContact:
    """A contact as read from the CRM (raw values: never logged or published)."""

    id: str
    properties: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class HubSpotDeal:
    """A deal as read from the CRM, with its associated contact ids."""

    id: str
    properties: dict[str, str | None] = field(default_factory=dict)
    contact_ids: tuple[str, ...] = ()


class HubSpotLookup(Protocol):
    """Reads CRM objects in batches. Implemented by ``truecount.adapters.hubspot_api``.

    ``deadline`` is a ``time.monotonic()`` value (or None for no overall limit):
    an implementation starts no request after it and raises
    :class:`~truecount.errors.UpstreamError` instead.
    """

    def get_deals(
        self, deal_ids: Sequence[str], deadline: float | None = None
    ) -> dict[str, HubSpotDeal | None]:
        """The deals with ``DEAL_PROPERTIES`` and their associated contacts.

        Args:
            deal_ids: distinct deal ids.
            deadline: when to stop starting requests (monotonic seconds).

        Returns:
            ``{id: deal}`` for every requested id; None for a deal that does not
            exist (any more).

        Raises:
            truecount.errors.UpstreamError: the lookup failed; retry later.
        """
        ...

    def get_contacts(
        self, contact_ids: Sequence[str], deadline: float | None = None
    ) -> dict[str, HubSpotContact | None]:
        """The contacts with the properties of ``CONTACT_PROPERTIES``.

        Args:
            contact_ids: distinct contact ids.
            deadline: when to stop starting requests (monotonic seconds).

        Returns:
            ``{id: contact}`` for every requested id; None for a contact that
            does not exist (any more).

        Raises:
            truecount.errors.UpstreamError: the lookup failed; retry later.
        """
        ...


class WebhookEvent(BaseModel):
    """One element of a HubSpot webhook batch (only the fields we read)."""

    model_config = ConfigDict(extra="ignore")

    eventId: int = Field(ge=0)  # noqa: N815 (HubSpot's names)
    subscriptionId: int = Field(ge=0)  # noqa: N815
    portalId: int = Field(ge=0)  # noqa: N815
    occurredAt: int = Field(ge=0, lt=253402300800000)  # noqa: N815 (< year 10000)
    subscriptionType: str = Field(min_length=1, max_length=128)  # noqa: N815
    objectId: int | None = Field(None, ge=0)  # noqa: N815
    objectTypeId: str | None = None  # noqa: N815
    propertyName: str | None = None  # noqa: N815
    propertyValue: str | None = None  # noqa: N815
    changeSource: str | None = None  # noqa: N815

    @property
    def event_id(self) -> str:
        """The canonical event id: ``hubspot-<portal>-<subscription>-<event>``."""
        return f"hubspot-{self.portalId}-{self.subscriptionId}-{self.eventId}"


_BATCH: TypeAdapter[list[WebhookEvent]] = TypeAdapter(list[WebhookEvent])


@dataclass(frozen=True)
class Ignored:
    """A batch element that is not published, and why (for the log)."""

    event_id: str
    subscription_type: str
    reason: str


@dataclass(frozen=True)
class _Plan:
    """A batch element that will be published, before enrichment."""

    source: WebhookEvent
    name: str
    object_kind: Literal["contact", "deal"]
    object_id: str
    stage: str | None


def parse_batch(data: Any) -> list[WebhookEvent]:
    """Validate a HubSpot webhook body: a JSON array of event objects.

    Args:
        data: the parsed JSON body.

    Returns:
        The events, in order.

    Raises:
        InvalidPayload: not an array of HubSpot events (field paths like
            ``[2].portalId``).
    """
    try:
        return _BATCH.validate_python(data)
    except ValidationError as exc:
        raise InvalidPayload(
            "not a HubSpot webhook batch", error_fields(exc.errors()), "invalid_event"
        ) from None


def _kind(event: WebhookEvent) -> tuple[str | None, str]:
    """``(object kind, action)`` of a subscription type."""
    kind, _, action = event.subscriptionType.partition(".")
    if kind != "object":
        return kind, action
    generic = {CONTACT_TYPE_ID: "contact", DEAL_TYPE_ID: "deal"}
    return generic.get(event.objectTypeId or ""), action


def plan(event: WebhookEvent, config: HubSpotConfig) -> _Plan | Ignored:
    """Decide what one batch element becomes, without any lookup.

    Args:
        event: the batch element.
        config: the ``[sources.hubspot]`` section.

    Returns:
        The plan, or :class:`Ignored` with the reason.
    """
    obj, action = _kind(event)

    def ignored(reason: str) -> Ignored:
        return Ignored(event.event_id, event.subscriptionType, reason)

    if obj not in ("contact", "deal") or action not in ("creation", "propertyChange"):
        return ignored("unhandled_type")
    if event.objectId is None:
        return ignored("missing_object_id")
    object_id = str(event.objectId)
    value = (event.propertyValue or "").strip()
    if obj == "contact" and action == "creation":
        return _Plan(event, GENERATE_LEAD, "contact", object_id, None)
    if obj == "contact" and event.propertyName == "lifecyclestage":
        if value in config.qualify_stages:
            return _Plan(event, QUALIFY_LEAD, "contact", object_id, value)
        return ignored("stage_not_mapped")
    if (
        obj == "deal"
        and action == "propertyChange"
        and event.propertyName == "dealstage"
    ):
        name = config.deal_stages.get(value)
        if name is not None:
            return _Plan(event, name, "deal", object_id, value)
        return ignored("stage_not_mapped")
    return ignored("property_not_mapped")


def _occurred_at(millis: int) -> datetime:
    seconds, rest = divmod(millis, 1000)
    return datetime.fromtimestamp(seconds, UTC) + timedelta(milliseconds=rest)


def _prop(obj: HubSpotContact | HubSpotDeal | None, name: str) -> str | None:
    if obj is None:
        return None
    value = (obj.properties.get(name) or "").strip()
    return value or None


def _click_id(contact: HubSpotContact | None, name: str) -> str | None:
    value = _prop(contact, name)
    return value if value and len(value) <= _MAX_CLICK_ID else None


def _identity(contact: HubSpotContact | None, lead_id: str | None) -> Identity:
    return hash_identity(
        RawIdentity(
            email=_prop(contact, "email"),
            phone=_prop(contact, "phone"),
            first_name=_prop(contact, "firstname"),
            last_name=_prop(contact, "lastname"),
            city=_prop(contact, "city"),
            region=_prop(contact, "state"),
            postal_code=_prop(contact, "zip"),
            country=_prop(contact, "country"),
            lead_id=lead_id,
        )
    )


def deal_value(
    deal: HubSpotDeal | None, default_currency: str | None = None
) -> tuple[Decimal | None, str | None]:
    """The deal's amount and currency, when both are usable.

    Args:
        deal: the deal, or None.
        default_currency: the portal's currency, for deals without
            ``deal_currency_code`` (single-currency portals leave it empty).

    Returns:
        ``(amount, currency)``; ``(None, None)`` when the amount is missing or not
        a number, or the currency is not ISO 4217.
    """
    code = _prop(deal, "deal_currency_code") or default_currency or ""
    amount = _prop(deal, "amount")
    if amount is None or not is_currency(code.upper()):
        return None, None
    try:
        value = Decimal(amount)
    except InvalidOperation:
        return None, None
    if not value.is_finite():
        return None, None
    return value, code.upper()


@dataclass(frozen=True)
class _Records:
    """The CRM objects of one batch, read up front."""

    deals: dict[str, HubSpotDeal | None]
    contacts: dict[str, HubSpotContact | None]


def _unique(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _first_contact(deal: HubSpotDeal | None) -> str | None:
    return deal.contact_ids[0] if deal and deal.contact_ids else None


def _read(
    planned: Sequence[_Plan], lookup: HubSpotLookup, deadline: float | None
) -> _Records:
    """Read every deal, then every contact, of the planned elements."""
    deal_ids = _unique([p.object_id for p in planned if p.object_kind == "deal"])
    deals = lookup.get_deals(deal_ids, deadline) if deal_ids else {}
    wanted: list[str] = []
    for item in planned:
        if item.object_kind == "contact":
            wanted.append(item.object_id)
        else:
            contact_id = _first_contact(deals.get(item.object_id))
            if contact_id:
                wanted.append(contact_id)
    contact_ids = _unique(wanted)
    contacts = lookup.get_contacts(contact_ids, deadline) if contact_ids else {}
    return _Records(deals, contacts)


def _build(
    item: _Plan, records: _Records, received_at: datetime, default_currency: str | None
) -> Event:
    source = item.source
    params: dict[str, str | int | float] = {
        "hubspot_portal_id": source.portalId,
        "hubspot_subscription_type": source.subscriptionType,
    }
    value: Decimal | None = None
    currency: str | None = None
    stage = item.stage
    deal_id = item.object_id if item.object_kind == "deal" else None
    if deal_id is not None:
        deal = records.deals.get(deal_id)
        params["hubspot_deal_id"] = deal_id
        contact_id = _first_contact(deal)
        value, currency = deal_value(deal, default_currency)
    else:
        contact_id = item.object_id
    contact = records.contacts.get(contact_id) if contact_id else None
    if contact_id:
        params["hubspot_contact_id"] = contact_id
    if stage is None:
        stage = _prop(contact, "lifecyclestage")
    return Event(
        event_id=source.event_id,
        name=item.name,
        source="hubspot",
        occurred_at=_occurred_at(source.occurredAt),
        received_at=received_at,
        identity=_identity(contact, contact_id),
        click_ids=ClickIds(
            gclid=_click_id(contact, "hs_google_click_id"),
            fbclid=_click_id(contact, "hs_facebook_click_id"),
        ),
        lead=Lead(
            lead_id=contact_id,
            deal_id=deal_id,
            stage=stage,
            value=value,
            currency=currency,
        ),
        params=params,
    )


def map_batch(
    events: Sequence[WebhookEvent],
    config: HubSpotConfig,
    lookup: HubSpotLookup,
    received_at: datetime,
    deadline: float | None = None,
) -> tuple[list[Event], list[Ignored]]:
    """Map a verified batch to canonical events, enriching through ``lookup``.

    Every element is planned first, so ignored elements cost no lookup; then all
    deals are read in one port call and all contacts (including each deal's
    first associated contact) in another. Either the whole batch maps or an
    error is raised (nothing is published).

    Args:
        events: the parsed batch.
        config: the ``[sources.hubspot]`` section.
        lookup: the CRM reader.
        received_at: when the webhook arrived.
        deadline: a ``time.monotonic()`` value after which the lookup starts no
            request (the delivery's enrichment budget); None for no limit.

    Returns:
        ``(events, ignored)``; events carry no dedup key yet.

    Raises:
        truecount.errors.UpstreamError: a lookup failed or the deadline passed.
    """
    planned: list[_Plan] = []
    ignored: list[Ignored] = []
    for event in events:
        result = plan(event, config)
        if isinstance(result, Ignored):
            ignored.append(result)
        else:
            planned.append(result)
    if not planned:
        return [], ignored
    records = _read(planned, lookup, deadline)
    currency = config.default_currency
    return [_build(i, records, received_at, currency) for i in planned], ignored
