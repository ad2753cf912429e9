"""HubSpot batch mapping and enrichment over the lookup port."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from webhook_support import FakeHubSpotApi, default_fake_hubspot, fixture_json

from truecount.adapters.hubspot_api import make_hubspot_api
from truecount.config import Config, HubSpotConfig, SourcesConfig
from truecount.core.dedup import with_dedup_key
from truecount.errors import InvalidPayload, UpstreamError
from truecount.models.event import Event
from truecount.webhooks import hubspot as mapping
from truecount.webhooks.hubspot import HubSpotContact, HubSpotDeal

RECEIVED = datetime(2024, 4, 5, 19, 40, tzinfo=UTC)
CFG = HubSpotConfig()
CONFIG = Config(sources=SourcesConfig(hubspot=CFG))


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def contact_201() -> HubSpotContact:
    data = fixture_json("hubspot", "contact_201")
    return HubSpotContact(id="201", properties=data["properties"])


def deal_9876(**changes: Any) -> HubSpotDeal:
    props = fixture_json("hubspot", "deal_9876")["properties"] | changes
    return HubSpotDeal(id="9876", properties=props, contact_ids=("201",))


class FakeLookup:
    """The HubSpotLookup port in memory; records calls; can fail."""

    def __init__(
        self,
        contacts: dict[str, HubSpotContact] | None = None,
        deals: dict[str, HubSpotDeal] | None = None,
        fail: bool = False,
    ) -> None:
        self.contacts = contacts if contacts is not None else {"201": contact_201()}
        self.deals = deals if deals is not None else {"9876": deal_9876()}
        self.fail = fail
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.deadlines: list[float | None] = []

    def get_deals(
        self, deal_ids: Sequence[str], deadline: float | None = None
    ) -> dict[str, HubSpotDeal | None]:
        self.calls.append(("deals", tuple(deal_ids)))
        self.deadlines.append(deadline)
        if self.fail:
            raise UpstreamError("HubSpot lookup answered 503")
        return {i: self.deals.get(i) for i in deal_ids}

    def get_contacts(
        self, contact_ids: Sequence[str], deadline: float | None = None
    ) -> dict[str, HubSpotContact | None]:
        self.calls.append(("contacts", tuple(contact_ids)))
        self.deadlines.append(deadline)
        if self.fail:
            raise UpstreamError("HubSpot lookup answered 503")
        return {i: self.contacts.get(i) for i in contact_ids}


def run(
    batch: Any,
    lookup: mapping.HubSpotLookup,
    cfg: HubSpotConfig = CFG,
    deadline: float | None = None,
) -> tuple[list[Event], list[mapping.Ignored]]:
    events, ignored = mapping.map_batch(
        mapping.parse_batch(batch), cfg, lookup, RECEIVED, deadline
    )
    return [with_dedup_key(e, CONFIG.rule(e.name)) for e in events], ignored


def element(**fields: Any) -> dict[str, Any]:
    base = {
        "eventId": 1,
        "subscriptionId": 2,
        "portalId": 3,
        "occurredAt": 1712345678000,
        "subscriptionType": "contact.creation",
        "objectId": 201,
    }
    return base | fields


def check_mixed_batch(events: list[Event], ignored: list[mapping.Ignored]) -> None:
    """The expectations shared by the port test and the fake-server test."""
    assert [(e.event_id, e.name, e.dedup_key) for e in events] == [
        ("hubspot-62515-2001-1001", "generate_lead", "lead:201"),
        ("hubspot-62515-2002-1002", "qualify_lead", "qualify_lead:201"),
        (
            "hubspot-62515-2003-1004",
            "close_convert_lead",
            "close_convert_lead:deal-9876",
        ),
    ]
    lead, qualified, won = events
    for event in events:
        assert event.source == "hubspot"
        assert event.identity.lead_id == "201"
        assert event.identity.email_sha256 == sha("john_smith@gmail.com")
        assert event.identity.email_sha256_google == sha("john_smith@gmail.com")
        assert event.identity.phone_sha256 == sha("16505551212")
        assert event.identity.first_name_sha256 == sha("john")
        assert event.identity.city_sha256 == sha("sanfrancisco")
        assert event.click_ids.gclid == "Cj0KCQjw-hubspot-gclid"
        assert event.click_ids.fbclid == "IwAR2F4-dbP0l7Mn1IawQQ-hubspot"
        assert event.click_ids.fbc is None
        assert event.params["hubspot_contact_id"] == "201"
    assert lead.occurred_at == datetime(2024, 4, 5, 19, 34, 38, tzinfo=UTC)
    assert qualified.occurred_at == datetime(2024, 4, 5, 19, 34, 59, 123000, UTC)
    assert lead.lead is not None
    assert lead.lead.stage == "marketingqualifiedlead"
    assert qualified.lead is not None
    assert qualified.lead.stage == "marketingqualifiedlead"
    assert won.lead is not None
    assert (won.lead.lead_id, won.lead.deal_id, won.lead.stage) == (
        "201",
        "9876",
        "closedwon",
    )
    assert (won.lead.value, won.lead.currency) == (Decimal("1500.50"), "EUR")
    assert won.params["hubspot_deal_id"] == "9876"
    assert [(i.event_id, i.reason) for i in ignored] == [
        ("hubspot-62515-2002-1003", "stage_not_mapped"),
        ("hubspot-62515-2004-1005", "unhandled_type"),
        ("hubspot-62515-2005-1006", "property_not_mapped"),
        ("hubspot-62515-2003-1007", "stage_not_mapped"),
    ]
    for event in events:
        body = event.to_json_bytes().decode()
        assert "John_Smith" not in body
        assert "555-1212" not in body


def test_mixed_batch_maps_through_the_port() -> None:
    """Contact creation, MQL and closed-won become canonical events, enriched
    by one deals read then one contacts read; ignored elements cost no lookup."""
    lookup = FakeLookup()
    events, ignored = run(
        fixture_json("hubspot", "webhook_batch_mixed"), lookup, deadline=12.5
    )
    check_mixed_batch(events, ignored)
    assert lookup.calls == [("deals", ("9876",)), ("contacts", ("201",))]
    assert lookup.deadlines == [12.5, 12.5]


def test_mixed_batch_against_a_local_fake_hubspot_api() -> None:
    """The real httpx adapter against a HubSpot stand-in on 127.0.0.1 gives the
    same events, with the Bearer token and the documented batch requests."""
    fake = default_fake_hubspot()
    with fake.running():
        api = make_hubspot_api(fake.base_url, fake.token, 5.0)
        events, ignored = run(fixture_json("hubspot", "webhook_batch_mixed"), api)
    check_mixed_batch(events, ignored)
    assert [(r["method"], r["path"]) for r in fake.requests] == [
        ("POST", "/crm/v3/objects/deals/batch/read"),
        ("POST", "/crm/v4/associations/deals/contacts/batch/read"),
        ("POST", "/crm/v3/objects/contacts/batch/read"),
    ]
    assert all(r["auth"] == "Bearer pat-test-token" for r in fake.requests)
    deals, links, contacts = (r["body"] for r in fake.requests)
    assert deals == {
        "properties": list(mapping.DEAL_PROPERTIES),
        "propertiesWithHistory": [],
        "inputs": [{"id": "9876"}],
    }
    assert links == {"inputs": [{"id": "9876"}]}
    assert contacts["inputs"] == [{"id": "201"}]
    assert contacts["properties"] == list(mapping.CONTACT_PROPERTIES)


def test_failed_lookup_raises_upstream_error() -> None:
    """A lookup that fails stops the whole batch (the edge answers 503)."""
    with pytest.raises(UpstreamError):
        run(fixture_json("hubspot", "webhook_batch_mixed"), FakeLookup(fail=True))


def test_batch_of_only_ignored_elements_does_no_lookup() -> None:
    """Nothing to publish means no HubSpot call at all."""
    lookup = FakeLookup(fail=True)
    batch = [element(subscriptionType="company.creation")]
    events, ignored = run(batch, lookup)
    assert (events, lookup.calls) == ([], [])
    assert ignored[0].reason == "unhandled_type"


def test_deleted_contact_is_published_without_enrichment() -> None:
    """A contact that no longer exists (404) still gives its lead, unenriched."""
    events, _ = run([element()], FakeLookup(contacts={}))
    assert len(events) == 1
    assert events[0].identity.lead_id == "201"
    assert events[0].identity.email_sha256 is None
    assert events[0].click_ids.gclid is None


def test_deal_without_contact_or_currency() -> None:
    """No associated contact: no lead_id, but the deal still keys the business
    event; no currency: no value."""
    deal = HubSpotDeal(id="9876", properties={"amount": "10", "dealstage": "closedwon"})
    batch = [
        element(
            subscriptionType="deal.propertyChange",
            objectId=9876,
            propertyName="dealstage",
            propertyValue="closedwon",
        )
    ]
    events, _ = run(batch, FakeLookup(deals={"9876": deal}))
    assert events[0].lead is not None
    assert events[0].lead.lead_id is None
    assert events[0].lead.value is None
    assert events[0].dedup_key == "close_convert_lead:deal-9876"


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("1500.50", "eur", (Decimal("1500.50"), "EUR")),
        ("", "EUR", (None, None)),
        ("abc", "EUR", (None, None)),
        ("NaN", "EUR", (None, None)),
        ("10", "EURO", (None, None)),
    ],
)
def test_deal_value_needs_a_number_and_an_iso_currency(
    amount: str, currency: str, expected: tuple[Decimal | None, str | None]
) -> None:
    """Only a finite amount with an ISO 4217 currency becomes a value."""
    deal = deal_9876(amount=amount, deal_currency_code=currency)
    assert mapping.deal_value(deal) == expected


def test_configured_stages_drive_the_mapping() -> None:
    """qualify_stages and deal_stages come from the config."""
    cfg = HubSpotConfig(
        qualify_stages=["opportunity"], deal_stages={"contractsent": "begin_checkout"}
    )
    batch = [
        element(
            eventId=1,
            subscriptionType="contact.propertyChange",
            propertyName="lifecyclestage",
            propertyValue="opportunity",
        ),
        element(
            eventId=2,
            subscriptionType="contact.propertyChange",
            propertyName="lifecyclestage",
            propertyValue="marketingqualifiedlead",
        ),
        element(
            eventId=3,
            subscriptionType="deal.propertyChange",
            objectId=9876,
            propertyName="dealstage",
            propertyValue="contractsent",
        ),
    ]
    events, ignored = run(batch, FakeLookup(), cfg)
    assert [e.name for e in events] == ["qualify_lead", "begin_checkout"]
    assert [i.reason for i in ignored] == ["stage_not_mapped"]


def test_generic_object_creation_of_a_contact_is_a_lead() -> None:
    """object.creation with objectTypeId 0-1 is treated as contact.creation."""
    batch = [element(subscriptionType="object.creation", objectTypeId="0-1")]
    events, _ = run(batch, FakeLookup())
    assert [e.name for e in events] == ["generate_lead"]


def test_redelivered_batch_gives_the_same_event_ids() -> None:
    """Event ids come from portal, subscription and event id only."""
    batch = fixture_json("hubspot", "webhook_batch_mixed")
    first, _ = run(batch, FakeLookup())
    second, _ = run(batch, FakeLookup())
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert first == second


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"eventId": 1}, "$"),
        ([element(), {"eventId": 2}], "[1].subscriptionId"),
        ([element(portalId="abc")], "[0].portalId"),
    ],
)
def test_malformed_batch_is_a_400_naming_the_path(body: Any, path: str) -> None:
    """Not an array, or an element without its ids, is rejected with its path."""
    with pytest.raises(InvalidPayload) as info:
        mapping.parse_batch(body)
    assert info.value.status == 400
    assert path in [f["path"] for f in info.value.fields]


def test_two_won_deals_of_one_contact_are_two_business_events() -> None:
    """Each deal has its own dedup key, so a contact's second deal still counts."""
    from truecount.webhooks.hubspot import HubSpotDeal

    lookup = FakeLookup()
    lookup.deals["7001"] = HubSpotDeal(
        id="7001",
        properties={"amount": "10", "deal_currency_code": "EUR"},
        contact_ids=("201",),
    )
    lookup.deals["7002"] = HubSpotDeal(
        id="7002",
        properties={"amount": "20", "deal_currency_code": "EUR"},
        contact_ids=("201",),
    )
    batch = [
        element(
            eventId=n,
            subscriptionType="deal.propertyChange",
            objectId=deal,
            propertyName="dealstage",
            propertyValue="closedwon",
        )
        for n, deal in ((1, 7001), (2, 7002))
    ]

    events, _ = run(batch, lookup)

    assert [e.dedup_key for e in events] == [
        "close_convert_lead:deal-7001",
        "close_convert_lead:deal-7002",
    ]
    assert {e.lead.lead_id for e in events if e.lead} == {"201"}


def test_deal_without_currency_uses_the_configured_portal_currency() -> None:
    """Single-currency portals leave deal_currency_code empty; the value stays."""
    from truecount.webhooks.hubspot import HubSpotDeal

    lookup = FakeLookup()
    lookup.deals["7003"] = HubSpotDeal(
        id="7003", properties={"amount": "1500"}, contact_ids=("201",)
    )
    batch = [
        element(
            subscriptionType="deal.propertyChange",
            objectId=7003,
            propertyName="dealstage",
            propertyValue="closedwon",
        )
    ]

    without, _ = run(batch, lookup)
    with_default, _ = run(
        batch, lookup, CFG.model_copy(update={"default_currency": "USD"})
    )

    assert without[0].lead is not None
    assert without[0].lead.value is None
    assert with_default[0].lead is not None
    assert (with_default[0].lead.value, with_default[0].lead.currency) == (
        Decimal("1500"),
        "USD",
    )


# --- a large mixed batch: every id read once, in at most three requests ---------


def big_tables() -> tuple[dict[str, Any], dict[str, Any]]:
    """Contacts 301-320 and deals 801-811 as the CRM API answers them; deal
    80n belongs to contact 30n, deal 811 has no contact."""
    contacts = {
        str(300 + n): {
            "id": str(300 + n),
            "properties": {
                "email": f"User{n}@Example.com",
                "hs_google_click_id": f"gclid-{n}",
                "lifecyclestage": "lead",
            },
        }
        for n in range(1, 21)
    }
    deals: dict[str, Any] = {
        str(800 + n): {
            "id": str(800 + n),
            "properties": {"amount": str(100 * n), "deal_currency_code": "EUR"},
            "associations": {"contacts": {"results": [{"id": str(300 + n)}]}},
        }
        for n in range(1, 11)
    }
    deals["811"] = {"id": "811", "properties": {"amount": "5", "dealstage": "x"}}
    return contacts, deals


def big_batch() -> list[dict[str, Any]]:
    """50 elements: 21 creations (contact 399 is gone), 10 MQLs of contacts that
    were also created, 12 closed-won deals (deal 899 is gone), 7 ignored."""
    batch: list[dict[str, Any]] = []

    def add(**fields: Any) -> None:
        batch.append(element(eventId=len(batch) + 1, **fields))

    for n in [*range(301, 321), 399]:
        add(objectId=n)
    for n in range(301, 311):
        add(
            subscriptionType="contact.propertyChange",
            objectId=n,
            propertyName="lifecyclestage",
            propertyValue="marketingqualifiedlead",
        )
    for n in [*range(801, 812), 899]:
        add(
            subscriptionType="deal.propertyChange",
            objectId=n,
            propertyName="dealstage",
            propertyValue="closedwon",
        )
    for n in range(7):
        add(subscriptionType="company.creation", objectId=900 + n)
    assert len(batch) == 50
    return batch


def lookup_of(contacts: dict[str, Any], deals: dict[str, Any]) -> FakeLookup:
    """The in-memory port holding the same objects as the fake API."""
    return FakeLookup(
        contacts={
            k: HubSpotContact(id=k, properties=v["properties"])
            for k, v in contacts.items()
        },
        deals={
            k: HubSpotDeal(
                id=k,
                properties=v["properties"],
                contact_ids=tuple(
                    r["id"]
                    for r in v.get("associations", {})
                    .get("contacts", {})
                    .get("results", [])
                ),
            )
            for k, v in deals.items()
        },
    )


def check_big_batch(events: list[Event], ignored: list[mapping.Ignored]) -> None:
    """What the 50-element batch maps to, whichever reader served it."""
    assert len(events) == 43
    assert len(ignored) == 7
    by_id = {e.event_id: e for e in events}
    created = by_id["hubspot-3-2-5"]  # contact 305
    assert created.identity.email_sha256 == sha("user5@example.com")
    assert created.click_ids.gclid == "gclid-5"
    gone = by_id["hubspot-3-2-21"]  # contact 399: published, unenriched
    assert (gone.identity.lead_id, gone.identity.email_sha256) == ("399", None)
    won = by_id["hubspot-3-2-34"]  # deal 803 of contact 303
    assert won.lead is not None
    assert (won.lead.lead_id, won.lead.value, won.lead.currency) == (
        "303",
        Decimal("300"),
        "EUR",
    )
    assert won.identity.email_sha256 == sha("user3@example.com")
    no_contact = by_id["hubspot-3-2-42"]  # deal 811: no associated contact
    assert no_contact.lead is not None
    assert (no_contact.lead.lead_id, no_contact.identity.email_sha256) == (None, None)
    missing_deal = by_id["hubspot-3-2-43"]  # deal 899: gone
    assert missing_deal.lead is not None
    assert (missing_deal.lead.deal_id, missing_deal.lead.lead_id) == ("899", None)
    assert missing_deal.dedup_key == "close_convert_lead:deal-899"


def test_large_batch_reads_deals_then_contacts_once_each() -> None:
    """50 elements cost two port calls: every deal id once, then every contact id
    once (the events' and the deals' contacts, without repeats)."""
    contacts, deals = big_tables()
    lookup = lookup_of(contacts, deals)
    events, ignored = run(big_batch(), lookup)
    check_big_batch(events, ignored)
    assert [kind for kind, _ in lookup.calls] == ["deals", "contacts"]
    deal_ids, contact_ids = (ids for _, ids in lookup.calls)
    assert deal_ids == (*(str(n) for n in range(801, 812)), "899")
    assert contact_ids == (*(str(n) for n in range(301, 321)), "399")


def test_large_batch_costs_three_requests_on_the_local_fake_api() -> None:
    """Against the HubSpot stand-in, the 50-element batch costs three HTTP
    requests (deals, their contacts, contacts) and maps as through the port."""
    contacts, deals = big_tables()
    fake = FakeHubSpotApi(contacts, deals)
    with fake.running():
        api = make_hubspot_api(fake.base_url, fake.token, 5.0)
        events, ignored = run(big_batch(), api)
    check_big_batch(events, ignored)
    assert len(fake.requests) == 3
    expected, _ = run(big_batch(), lookup_of(contacts, deals))
    assert events == expected


def test_batch_of_contacts_only_reads_no_deal() -> None:
    """Without deal elements there is a single port call, for the contacts."""
    lookup = FakeLookup()
    run([element(), element(eventId=2)], lookup)
    assert lookup.calls == [("contacts", ("201",))]


def test_deleted_deal_needs_no_contact_read() -> None:
    """A deal that no longer exists is published without lead or value, and
    leaves nothing to read from the contacts."""
    batch = [
        element(
            subscriptionType="deal.propertyChange",
            objectId=9876,
            propertyName="dealstage",
            propertyValue="closedwon",
        )
    ]
    lookup = FakeLookup(deals={})
    events, _ = run(batch, lookup)
    assert lookup.calls == [("deals", ("9876",))]
    assert events[0].lead is not None
    assert (events[0].lead.lead_id, events[0].lead.value) == (None, None)


@pytest.mark.parametrize("status", [429, 500])
def test_failing_fake_api_raises_upstream_error(status: int) -> None:
    """A rate-limited or failing HubSpot API stops the batch (503 at the edge)."""
    fake = default_fake_hubspot()
    fake.fail_status = status
    batch = fixture_json("hubspot", "webhook_batch_mixed")
    with fake.running():
        api = make_hubspot_api(fake.base_url, fake.token, 5.0)
        with pytest.raises(UpstreamError) as info:
            run(batch, api)
    assert str(status) in str(info.value)
    assert fake.token not in str(info.value)
    assert len(fake.requests) == 1
