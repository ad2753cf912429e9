"""Data Client (/data): Stape Data Tag compatible GET and POST."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import quote

import pytest

from truecount.core.pii import sha256_hex
from truecount.errors import InvalidPayload
from truecount.models.event import Event
from truecount.sources.browser import HttpInput
from truecount.sources.common import canonical_json, derive_event_id
from truecount.sources.data_client import parse_request

NOW = datetime(2024, 4, 5, 19, 34, 38, 901000, tzinfo=UTC)

PURCHASE = {
    "event_name": "purchase",
    "event_id": "evt-1",
    "client_id": "111.222",
    "user_id": "u-1",
    "page_location": "https://shop.example/thanks?gclid=G1",
    "page_referrer": "https://shop.example/cart",
    "page_title": "Thanks",
    "value": 21.5,
    "currency": "eur",
    "transaction_id": "T-1",
    "items": [{"item_id": "SKU1", "price": 10.75, "quantity": 2, "color": "red"}],
    "user_data": {
        "email_address": "John_Smith@gmail.com",
        "phone_number": "+1 (555) 123-4567",
        "address": {
            "first_name": "John",
            "last_name": "Smith",
            "city": "San Francisco",
            "region": "CA",
            "postal_code": "94103",
            "country": "US",
        },
    },
    "consent_state": {
        "ad_storage": "granted",
        "analytics_storage": True,
        "ad_user_data": "denied",
        "ad_personalization": "false",
    },
    "common_cookie": {"_fbp": "fb.1.1.2", "_fbc": "fb.1.3.FB", "_ttp": "TTP"},
    "page_hostname": "shop.example",
    "logged_in": True,
    "nested": {"ignored": 1},
}


def request(
    method: str = "POST",
    *,
    query: str = "",
    body: bytes = b"",
    content_type: str = "application/json",
    cookies: dict[str, str] | None = None,
) -> HttpInput:
    return HttpInput(
        method=method,
        query=query.encode(),
        body=body,
        headers={
            "content-type": content_type,
            "user-agent": "UA/2",
            "x-forwarded-for": "198.51.100.4",
        },
        cookies=cookies or {},
        remote_addr="10.0.0.1",
    )


def parse(req: HttpInput, max_events: int = 50) -> list[Event]:
    return parse_request(req, NOW, trusted_proxies=1, max_events=max_events)


def test_post_json_object_maps_every_documented_field() -> None:
    """A Data Tag purchase maps to client, page, commerce, identity, consent, click ids."""
    (event,) = parse(request(body=json.dumps(PURCHASE).encode()))
    assert event.source == "data"
    assert event.event_id == "evt-1"
    assert event.client.client_id == "111.222"
    assert event.client.user_id == "u-1"
    assert event.client.ip == "198.51.100.4"
    assert event.client.user_agent == "UA/2"
    assert event.page is not None
    assert event.page.title == "Thanks"
    assert event.commerce is not None
    assert event.commerce.value == Decimal("21.5")
    assert event.commerce.currency == "EUR"
    assert event.commerce.transaction_id == "T-1"
    assert event.commerce.items[0].price == Decimal("10.75")
    assert event.commerce.items[0].params == {"color": "red"}
    assert event.identity.email_sha256 == (
        "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    )
    assert event.identity.phone_sha256_e164 == sha256_hex("+15551234567")
    assert event.identity.first_name_sha256 == sha256_hex("john")
    assert event.identity.city_sha256 == sha256_hex("sanfrancisco")
    assert event.identity.country_sha256 == sha256_hex("us")
    assert event.consent.model_dump(exclude_none=True) == {
        "ad_storage": "granted",
        "analytics_storage": "granted",
        "ad_user_data": "denied",
        "ad_personalization": "denied",
    }
    assert event.click_ids.gclid == "G1"
    assert event.click_ids.fbp == "fb.1.1.2"
    assert event.click_ids.fbc == "fb.1.3.FB"
    assert event.click_ids.ttp == "TTP"
    assert event.params == {"page_hostname": "shop.example", "logged_in": "true"}
    text = event.model_dump_json()
    assert "John" not in text
    assert "555" not in text
    assert "Francisco" not in text


def test_post_json_array_gives_several_events_with_indexed_paths() -> None:
    """An array is several events; errors name [i].field."""
    body = json.dumps([{"event_name": "page_view"}, {"event_name": "add_to_cart"}])
    events = parse(request(body=body.encode()))
    assert [e.name for e in events] == ["page_view", "add_to_cart"]
    bad = json.dumps([{"event_name": "ok"}, {"event_name": ""}, {"value": "x"}])
    with pytest.raises(InvalidPayload) as info:
        parse(request(body=bad.encode()))
    assert [f["path"] for f in info.value.fields] == [
        "[1].event_name",
        "[2].event_name",
    ]


def test_get_with_dtdc_base64_json() -> None:
    """GET ?dtdc=<base64 JSON> is decoded (URL-safe alphabet, no padding)."""
    raw = base64.urlsafe_b64encode(
        json.dumps({"event_name": "page_view", "x": "é?"}).encode()
    )
    (event,) = parse(request("GET", query="dtdc=" + raw.decode().rstrip("=")))
    assert event.name == "page_view"
    assert event.params == {"x": "é?"}


def test_get_with_dtcd_json() -> None:
    """GET ?dtcd=<JSON> is parsed."""
    (event,) = parse(
        request("GET", query="dtcd=" + quote(json.dumps({"event_name": "sign_up"})))
    )
    assert event.name == "sign_up"


def test_get_with_plain_query_params_is_one_event() -> None:
    """Without dtdc/dtcd, the query parameters are the event object."""
    (event,) = parse(request("GET", query="event_name=page_view&page_title=Home&n=3"))
    assert event.page is not None
    assert event.page.title == "Home"
    assert event.params == {"n": "3"}


def test_post_form_encoded_with_json_structured_fields() -> None:
    """A form body is one flat event; user_data and items may be JSON text."""
    body = (
        "event_name=purchase&currency=USD&value=10.00&transaction_id=T2"
        "&items="
        + quote(json.dumps([{"item_id": "A", "quantity": 1}]))
        + "&user_data="
        + quote(json.dumps({"email": "a@b.example"}))
    )
    (event,) = parse(
        request(body=body.encode(), content_type="application/x-www-form-urlencoded")
    )
    assert event.commerce is not None
    assert event.commerce.value == Decimal("10.00")
    assert event.commerce.items[0].item_id == "A"
    assert event.identity.email_sha256 == sha256_hex("a@b.example")


def test_email_and_phone_aliases_in_user_data() -> None:
    """user_data.email / user_data.phone are accepted as aliases."""
    body = {
        "event_name": "generate_lead",
        "user_data": {"email": "X@Y.example", "phone": "+44 20 7946 0958"},
    }
    (event,) = parse(request(body=json.dumps(body).encode()))
    assert event.identity.email_sha256 == sha256_hex("x@y.example")
    assert event.identity.phone_sha256 == sha256_hex("442079460958")


def test_email_in_a_plain_param_is_scrubbed() -> None:
    """A raw email in any parameter is hashed into identity and dropped."""
    body = {"event_name": "x", "note": "mail me at a@b.example", "ok": 1}
    (event,) = parse(request(body=json.dumps(body).encode()))
    assert event.params == {"ok": 1}
    assert event.identity.email_sha256 == sha256_hex("a@b.example")


def test_client_id_and_session_from_cookies() -> None:
    """Without client_id: _ga from common_cookie or the request; _ga_<x> gives the session."""
    body = {"event_name": "x", "common_cookie": {"_ga": "GA1.1.5.6"}}
    (event,) = parse(
        request(
            body=json.dumps(body).encode(), cookies={"_ga_S1": "GS1.1.1712345600.2"}
        )
    )
    assert event.client.client_id == "5.6"
    assert (event.client.session_id, event.client.session_number) == ("1712345600", 2)


def test_derived_event_id_is_deterministic() -> None:
    """Without event_id: data- + 32 hex of sha256(canonical JSON | index)."""
    obj = {"event_name": "page_view", "client_id": "1.2"}
    first = parse(request(body=json.dumps(obj).encode()))[0]
    again = parse(request(body=json.dumps(obj, indent=2).encode()))[0]
    assert first.event_id == again.event_id
    assert first.event_id == derive_event_id("data", canonical_json(obj), "0")


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b"{", "$"),
        (b'{"event_name": NaN}', "$"),
        (b"[1]", "[0]"),
        (b"[]", "$"),
        (b'{"event_name":"x","items":{}}', "items"),
        (b'{"event_name":"x","items":[{"price":"abc"}]}', "items[0].price"),
        (b'{"event_name":"x","user_data":[]}', "user_data"),
        (b'{"event_name":"purchase","value":5}', "currency"),
        (b'{"event_name":"x","currency":"ZZZ","items":[{}]}', "currency"),
        (b'{"event_name":"x","client_id":{"a":1}}', "client_id"),
    ],
)
def test_invalid_bodies_are_400_naming_the_field(body: bytes, path: str) -> None:
    """Bad JSON and bad fields are 400s naming the path."""
    with pytest.raises(InvalidPayload) as info:
        parse(request(body=body))
    assert info.value.status == 400
    assert path in [f["path"] for f in info.value.fields]


def test_bad_dtdc_is_400() -> None:
    """dtdc that is not base64 JSON is a 400 naming dtdc."""
    with pytest.raises(InvalidPayload) as info:
        parse(request("GET", query="dtdc=%21%21%21"))
    assert info.value.fields[0]["path"] == "dtdc"


def test_too_many_events_is_413() -> None:
    """An array longer than max_events_per_request is a 413."""
    body = json.dumps([{"event_name": "x"}] * 3).encode()
    with pytest.raises(InvalidPayload) as info:
        parse(request(body=body), max_events=2)
    assert info.value.status == 413
