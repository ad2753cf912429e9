"""The HubSpot CRM batch adapter, through httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from webhook_support import fixture_json

from truecount.adapters.hubspot_api import (
    CONTACTS_READ,
    DEAL_CONTACTS_READ,
    DEALS_READ,
    HubSpotApi,
)
from truecount.errors import UpstreamError
from truecount.webhooks.hubspot import (
    CONTACT_PROPERTIES,
    DEAL_PROPERTIES,
    HubSpotContact,
    HubSpotDeal,
)

Handler = Callable[[httpx.Request], httpx.Response]
NOT_FOUND_ERROR = {
    "status": "error",
    "category": "OBJECT_NOT_FOUND",
    "message": "Could not get some CONTACT objects, they may be deleted",
    "context": {"ids": ["404"]},
}


def api(
    handler: Handler, clock: Callable[[], float] = lambda: 0.0
) -> tuple[HubSpotApi, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    client = httpx.Client(transport=httpx.MockTransport(record))
    return HubSpotApi(client, "pat-token", "https://hubspot.test/", 5.0, clock), seen


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content)


def batch_answer(*results: Any, errors: list[Any] | None = None) -> httpx.Response:
    data: dict[str, Any] = {"status": "COMPLETE", "results": list(results)}
    if errors:
        data["errors"] = errors
    return httpx.Response(207 if errors else 200, json=data)


def test_contacts_are_read_in_one_batch_with_token_and_properties() -> None:
    """POST contacts/batch/read with the Bearer token, the properties and the ids;
    the answer is keyed by id."""
    contact = fixture_json("hubspot", "contact_201")
    reader, seen = api(lambda r: batch_answer(contact))
    assert reader.get_contacts(["201"]) == {
        "201": HubSpotContact(id="201", properties=contact["properties"])
    }
    (request,) = seen
    assert (request.method, request.url.path) == ("POST", CONTACTS_READ)
    assert request.headers["Authorization"] == "Bearer pat-token"
    assert body_of(request) == {
        "properties": list(CONTACT_PROPERTIES),
        "propertiesWithHistory": [],
        "inputs": [{"id": "201"}],
    }


def test_missing_ids_are_none_when_reported_not_found() -> None:
    """A 207 with OBJECT_NOT_FOUND for an id: that contact is None, the others
    are returned."""
    contact = fixture_json("hubspot", "contact_201")
    reader, _ = api(lambda r: batch_answer(contact, errors=[NOT_FOUND_ERROR]))
    found = reader.get_contacts(["201", "404"])
    assert list(found) == ["201", "404"]
    assert found["404"] is None
    assert found["201"] is not None


def test_404_object_not_found_means_none_exist() -> None:
    """A 404 whose body says OBJECT_NOT_FOUND: every id is None, no error."""
    reader, seen = api(lambda r: httpx.Response(404, json=NOT_FOUND_ERROR))
    assert reader.get_contacts(["1", "2"]) == {"1": None, "2": None}
    assert reader.get_deals(["3"]) == {"3": None}
    assert [r.url.path for r in seen] == [CONTACTS_READ, DEALS_READ]


def test_other_404_is_an_upstream_error() -> None:
    """A 404 without OBJECT_NOT_FOUND (e.g. a wrong base URL) is not 'gone'."""
    reader, _ = api(lambda r: httpx.Response(404, text="Not Found"))
    with pytest.raises(UpstreamError):
        reader.get_contacts(["1"])


def test_other_per_item_errors_raise_upstream_error() -> None:
    """A per-item error other than OBJECT_NOT_FOUND fails the read, naming only
    its category (never the message, which may quote data)."""
    error = {"status": "error", "category": "VALIDATION_ERROR", "message": "a@b.c"}
    reader, _ = api(lambda r: batch_answer(errors=[error]))
    with pytest.raises(UpstreamError) as info:
        reader.get_contacts(["1"])
    assert "VALIDATION_ERROR" in str(info.value)
    assert "a@b.c" not in str(info.value)


def test_deals_and_their_contacts_cost_two_requests() -> None:
    """Deals batch read, then the v4 deal→contact associations batch read for
    the deals found; contact ids keep HubSpot's order, without repeats."""
    deal = fixture_json("hubspot", "deal_9876")
    deal.pop("associations")
    links = {
        "status": "COMPLETE",
        "results": [
            {
                "from": {"id": "9876"},
                "to": [
                    {"toObjectId": 201, "associationTypes": []},
                    {"toObjectId": 305, "associationTypes": []},
                    {"toObjectId": 201, "associationTypes": []},
                ],
            }
        ],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == DEALS_READ:
            return batch_answer(deal, errors=[NOT_FOUND_ERROR])
        return httpx.Response(200, json=links)

    reader, seen = api(handler)
    assert reader.get_deals(["9876", "404"]) == {
        "9876": HubSpotDeal(
            id="9876", properties=deal["properties"], contact_ids=("201", "305")
        ),
        "404": None,
    }
    assert [r.url.path for r in seen] == [DEALS_READ, DEAL_CONTACTS_READ]
    assert body_of(seen[0])["properties"] == list(DEAL_PROPERTIES)
    assert body_of(seen[1]) == {"inputs": [{"id": "9876"}]}


def test_deal_with_association_error_has_no_contacts() -> None:
    """A per-item error of the associations read (a deal without contacts) gives
    an empty tuple, not a failure."""
    deal = {"id": "1", "properties": {"amount": "5"}}
    error = {"status": "error", "category": "VALIDATION_ERROR", "message": "none"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == DEALS_READ:
            return batch_answer(deal)
        return batch_answer(errors=[error])

    reader, _ = api(handler)
    found = reader.get_deals(["1"])
    assert found["1"] is not None
    assert found["1"].contact_ids == ()


def test_no_deal_found_skips_the_associations_read() -> None:
    """Only existing deals are asked for their contacts."""
    reader, seen = api(lambda r: batch_answer(errors=[NOT_FOUND_ERROR]))
    assert reader.get_deals(["404"]) == {"404": None}
    assert [r.url.path for r in seen] == [DEALS_READ]


def test_more_than_100_ids_are_split_into_batches_of_100() -> None:
    """HubSpot's batch limit: 150 distinct ids (plus repeats) cost two requests."""

    def handler(request: httpx.Request) -> httpx.Response:
        ids = [i["id"] for i in body_of(request)["inputs"]]
        return batch_answer(*({"id": i, "properties": {}} for i in ids))

    reader, seen = api(handler)
    ids = [str(n) for n in range(150)]
    found = reader.get_contacts([*ids, "1", "2"])
    assert [len(body_of(r)["inputs"]) for r in seen] == [100, 50]
    assert set(found) == set(ids)
    assert all(c is not None for c in found.values())


@pytest.mark.parametrize("status", [401, 403, 429, 500, 502, 503])
def test_error_statuses_raise_upstream_error(status: int) -> None:
    """Auth, rate-limit and server errors are UpstreamError (503 to HubSpot)."""
    reader, _ = api(lambda r: httpx.Response(status, json={"message": "x"}))
    with pytest.raises(UpstreamError) as info:
        reader.get_contacts(["1"])
    assert str(status) in str(info.value)
    assert "pat-token" not in str(info.value)


def test_rate_limit_is_named_in_the_error() -> None:
    """A 429 says 'rate limited', so the log explains the 503."""
    answer = httpx.Response(429, headers={"Retry-After": "10"}, json={})
    reader, _ = api(lambda r: answer)
    with pytest.raises(UpstreamError, match="rate limited"):
        reader.get_deals(["1"])


def test_timeout_and_connection_errors_raise_upstream_error() -> None:
    """Transport failures are UpstreamError."""

    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    reader, _ = api(boom)
    with pytest.raises(UpstreamError):
        reader.get_deals(["1"])


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[1, 2]",
        b'{"results": {"id": "1"}}',
        b'{"results": [{"id": "1"}]}',
        b'{"results": [{"properties": {}}]}',
    ],
)
def test_unexpected_bodies_raise_upstream_error(content: bytes) -> None:
    """Invalid JSON, a non-object, malformed results or a result without
    properties or id fail."""
    reader, _ = api(lambda r: httpx.Response(200, content=content))
    with pytest.raises(UpstreamError):
        reader.get_contacts(["1"])


def test_malformed_association_results_raise_upstream_error() -> None:
    """An associations answer without ``from.id`` or ``to`` fails."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == DEALS_READ:
            return batch_answer({"id": "1", "properties": {}})
        return httpx.Response(200, json={"results": [{"to": []}]})

    reader, _ = api(handler)
    with pytest.raises(UpstreamError):
        reader.get_deals(["1"])


def test_error_messages_carry_no_response_body() -> None:
    """Nothing from the response (it may hold PII) is in the error."""
    leak = json.dumps({"message": "jane@example.com"})
    reader, _ = api(lambda r: httpx.Response(500, content=leak.encode()))
    with pytest.raises(UpstreamError) as info:
        reader.get_contacts(["1"])
    assert "jane" not in str(info.value)


def test_no_request_starts_after_the_deadline() -> None:
    """Once the deadline has passed, the read fails without calling HubSpot."""
    reader, seen = api(lambda r: batch_answer(), clock=lambda: 100.0)
    with pytest.raises(UpstreamError, match="budget"):
        reader.get_contacts(["1"], deadline=100.0)
    assert seen == []


def test_deadline_caps_each_request_timeout() -> None:
    """Each request's timeouts are the per-request timeout capped by the time
    left: 5 s per request, 0.75 s left → 0.75 s; no deadline → 5 s."""
    timeouts: list[dict[str, float | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"])
        return batch_answer()

    reader, _ = api(handler, clock=lambda: 10.0)
    reader.get_contacts(["1"], deadline=10.75)
    reader.get_contacts(["1"], deadline=60.0)
    reader.get_contacts(["1"])
    assert [t["read"] for t in timeouts] == [0.75, 5.0, 5.0]
    assert timeouts[0]["connect"] == 0.75


def test_deadline_passing_between_deals_and_associations_fails_the_read() -> None:
    """The budget covers the whole delivery: a deals read that used it all up
    stops before the associations read."""
    now = [0.0]

    def handler(request: httpx.Request) -> httpx.Response:
        now[0] += 2.0  # HubSpot took 2 s
        return batch_answer({"id": "1", "properties": {}})

    reader, seen = api(handler, clock=lambda: now[0])
    with pytest.raises(UpstreamError, match="budget"):
        reader.get_deals(["1"], deadline=1.5)
    assert [r.url.path for r in seen] == [DEALS_READ]
