"""The HubSpot CRM v3 adapter, through httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from webhook_support import fixture_json

from truecount.adapters.hubspot_api import HubSpotApi
from truecount.errors import UpstreamError
from truecount.webhooks.hubspot import CONTACT_PROPERTIES, HubSpotContact, HubSpotDeal

Handler = Callable[[httpx.Request], httpx.Response]


def api(handler: Handler) -> tuple[HubSpotApi, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    client = httpx.Client(transport=httpx.MockTransport(record))
    return HubSpotApi(client, "pat-token", "https://hubspot.test/"), seen


def test_contact_is_read_with_token_and_properties() -> None:
    """GET /crm/v3/objects/contacts/{id} with the Bearer token and properties."""
    body = fixture_json("hubspot", "contact_201")
    reader, seen = api(lambda r: httpx.Response(200, json=body))
    contact = reader.get_contact("201")
    assert contact == HubSpotContact(id="201", properties=body["properties"])
    request = seen[0]
    assert request.url.path == "/crm/v3/objects/contacts/201"
    assert request.url.params["properties"] == ",".join(CONTACT_PROPERTIES)
    assert request.headers["Authorization"] == "Bearer pat-token"


def test_deal_is_read_with_associated_contacts() -> None:
    """The deal read asks for associations=contacts and returns their ids."""
    body = fixture_json("hubspot", "deal_9876")
    body["associations"]["contacts"]["results"].append({"id": 305, "type": "x"})
    reader, seen = api(lambda r: httpx.Response(200, json=body))
    deal = reader.get_deal("9876")
    assert deal == HubSpotDeal(
        id="9876", properties=body["properties"], contact_ids=("201", "305")
    )
    assert seen[0].url.params["associations"] == "contacts"
    assert seen[0].url.params["properties"] == "amount,deal_currency_code,dealstage"


def test_deal_without_associations_has_no_contacts() -> None:
    """A deal with no associated contact gives an empty tuple."""
    body = {"id": "1", "properties": {"amount": "5"}}
    reader, _ = api(lambda r: httpx.Response(200, json=body))
    deal = reader.get_deal("1")
    assert deal is not None
    assert deal.contact_ids == ()


def test_not_found_is_none() -> None:
    """A 404 means the object is gone: None, not an error."""
    reader, _ = api(lambda r: httpx.Response(404, json={"status": "error"}))
    assert reader.get_contact("1") is None
    assert reader.get_deal("1") is None


@pytest.mark.parametrize("status", [401, 403, 429, 500, 502, 503])
def test_error_statuses_raise_upstream_error(status: int) -> None:
    """Auth, rate-limit and server errors are UpstreamError (503 to HubSpot)."""
    reader, _ = api(lambda r: httpx.Response(status, json={"message": "x"}))
    with pytest.raises(UpstreamError) as info:
        reader.get_contact("1")
    assert str(status) in str(info.value)


def test_timeout_and_connection_errors_raise_upstream_error() -> None:
    """Transport failures are UpstreamError."""

    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    reader, _ = api(boom)
    with pytest.raises(UpstreamError):
        reader.get_deal("1")


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b'{"id": "1"}'])
def test_unexpected_bodies_raise_upstream_error(content: bytes) -> None:
    """Invalid JSON, a non-object or an object without properties fail."""
    reader, _ = api(lambda r: httpx.Response(200, content=content))
    with pytest.raises(UpstreamError):
        reader.get_contact("1")


def test_error_messages_carry_no_response_body() -> None:
    """Nothing from the response (it may hold PII) is in the error."""
    leak = json.dumps({"message": "jane@example.com"})
    reader, _ = api(lambda r: httpx.Response(500, content=leak.encode()))
    with pytest.raises(UpstreamError) as info:
        reader.get_contact("1")
    assert "jane" not in str(info.value)
