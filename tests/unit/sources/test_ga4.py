"""GA4 client (/g/collect): every parameter family of SPECS §1.2, items, batching."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from truecount.core.pii import sha256_hex
from truecount.errors import InvalidPayload
from truecount.models.event import Event
from truecount.sources.browser import HttpInput
from truecount.sources.common import Problems
from truecount.sources.ga4 import parse_item, parse_request

NOW = datetime(2024, 4, 5, 19, 34, 38, 901000, tzinfo=UTC)
BASE = "v=2&tid=G-ABC1234567&_p=1712345678901&cid=1234567890.1700000000"

SPEC_GET = (
    "v=2&tid=G-ABC1234567&gtm=45je4a20v9&_p=1712345678901&cid=1234567890.1700000000"
    "&ul=en-us&sr=1920x1080&gcs=G111&gcd=13t3t3t3t5l1&dma=0&_s=1&sid=1712345600&sct=3"
    "&seg=1&dl=https%3A%2F%2Fshop.example%2Fthanks&dt=Thanks&en=purchase&_c=1&cu=EUR"
    "&ep.transaction_id=T-1001&epn.value=21&pr1=idSKU123~nmBlue%20Shirt~pr10.5~qt2"
)
SPEC_POST_URL = (
    "v=2&tid=G-ABC1234567&_p=1712345678901&cid=1234567890.1700000000&sid=1712345600"
    "&sct=3&seg=1&dl=https%3A%2F%2Fshop.example%2F&dt=Home&ul=en-us&sr=1920x1080&gcs=G111"
)
SPEC_POST_BODY = (
    "en=page_view&_s=1&_ss=1&_nsi=1&_fv=1&_et=5\n"
    "en=scroll&_s=2&_et=1200&epn.percent_scrolled=90"
)


def parse(
    query: str,
    body: str | bytes | None = None,
    *,
    cookies: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    max_events: int = 50,
) -> list[Event]:
    raw = body.encode() if isinstance(body, str) else body
    req = HttpInput(
        method="POST" if body is not None else "GET",
        query=query.encode(),
        body=raw or b"",
        headers=headers or {},
        cookies=cookies or {},
        remote_addr="10.0.0.1",
    )
    return parse_request(req, NOW, trusted_proxies=1, max_events=max_events)


def one(query: str, **kwargs: object) -> Event:
    events = parse(query, **kwargs)  # type: ignore[arg-type]
    assert len(events) == 1
    return events[0]


def error_paths(query: str, body: str | None = None) -> list[str]:
    with pytest.raises(InvalidPayload) as info:
        parse(query, body)
    assert info.value.status == 400
    return [f["path"] for f in info.value.fields]


# --- SPECS §1.6 examples -----------------------------------------------------------


def test_spec_get_purchase_maps_every_field() -> None:
    """The SPECS §1.6 GET purchase hit becomes the expected canonical event."""
    event = one(
        SPEC_GET, headers={"user-agent": "UA/1", "x-forwarded-for": "203.0.113.9"}
    )
    assert event.name == "purchase"
    assert event.source == "ga4"
    assert event.occurred_at == NOW
    assert event.received_at == NOW
    assert event.client.client_id == "1234567890.1700000000"
    assert event.client.session_id == "1712345600"
    assert event.client.session_number == 3
    assert event.client.language == "en-us"
    assert event.client.screen_resolution == "1920x1080"
    assert event.client.ip == "203.0.113.9"
    assert event.client.user_agent == "UA/1"
    assert event.page is not None
    assert event.page.location == "https://shop.example/thanks"
    assert event.page.title == "Thanks"
    assert event.commerce is not None
    assert event.commerce.transaction_id == "T-1001"
    assert event.commerce.value == Decimal("21")
    assert event.commerce.currency == "EUR"
    assert [i.model_dump(exclude_none=True) for i in event.commerce.items] == [
        {
            "item_id": "SKU123",
            "item_name": "Blue Shirt",
            "price": Decimal("10.5"),
            "quantity": 2,
            "params": {},
        }
    ]
    assert event.consent.ad_storage == "granted"
    assert event.consent.ad_user_data == "granted"
    assert event.consent.gcs == "G111"
    assert event.consent.gcd == "13t3t3t3t5l1"
    assert event.params == {"dma": 0, "session_engaged": 1, "conversion": 1}


def test_spec_post_batch_gives_one_event_per_line_with_shared_url_params() -> None:
    """The SPECS §1.6 POST batch gives two events sharing the URL parameters."""
    page_view, scroll = parse(SPEC_POST_URL, SPEC_POST_BODY)
    assert (page_view.name, scroll.name) == ("page_view", "scroll")
    for event in (page_view, scroll):
        assert event.client.client_id == "1234567890.1700000000"
        assert event.client.session_id == "1712345600"
        assert event.page is not None
        assert event.page.title == "Home"
        assert event.consent.analytics_storage == "granted"
    assert page_view.params == {
        "session_engaged": 1,
        "session_start": 1,
        "new_session": 1,
        "first_visit": 1,
        "engagement_time_msec": 5,
    }
    assert scroll.params == {
        "session_engaged": 1,
        "engagement_time_msec": 1200,
        "percent_scrolled": 90,
    }


def test_batched_post_with_three_lines_and_crlf() -> None:
    """Three lines (CRLF tolerated, blank lines skipped) give three events in order."""
    body = "en=page_view&_s=1\r\nen=scroll&_s=2\r\n\r\nen=click&_s=3&ep.link_id=x\r\n"
    events = parse(BASE, body)
    assert [e.name for e in events] == ["page_view", "scroll", "click"]
    assert events[2].params == {"link_id": "x"}
    assert len({e.event_id for e in events}) == 3


def test_a_line_overrides_the_url_params() -> None:
    """A line's parameter wins over the same URL parameter."""
    events = parse(BASE + "&dt=Home&ep.section=top", "en=a&dt=Other\nen=b")
    assert events[0].page is not None
    assert events[0].page.title == "Other"
    assert events[1].page is not None
    assert events[1].page.title == "Home"
    assert events[0].params == {"section": "top"}


def test_empty_post_body_means_the_url_is_the_event() -> None:
    """An empty or blank POST body: the query string describes one event."""
    assert [e.name for e in parse(BASE + "&en=page_view", "")] == ["page_view"]
    assert [e.name for e in parse(BASE + "&en=page_view", "\r\n")] == ["page_view"]


# --- parameter families ------------------------------------------------------------------


def test_ep_and_epn_are_typed_and_a_bad_number_stays_a_string() -> None:
    """ep.* is a string, epn.* a number; an epn that fails to parse stays a string."""
    event = one(BASE + "&en=x&ep.a=42&epn.b=42&epn.c=1.25&epn.d=abc&epn.e=1e5")
    assert event.params == {"a": "42", "b": 42, "c": 1.25, "d": "abc", "e": "1e5"}


def test_up_and_upn_are_user_properties() -> None:
    """up.* and upn.* become typed user properties."""
    event = one(BASE + "&en=x&up.plan=pro&upn.seats=5")
    assert event.user_properties == {"plan": "pro", "seats": 5}


def test_uid_and_client_fields() -> None:
    """uid, ul and sr fill the client."""
    event = one(BASE + "&en=x&uid=u-42&ul=de-de&sr=390x844")
    assert event.client.user_id == "u-42"
    assert event.client.language == "de-de"
    assert event.client.screen_resolution == "390x844"


def test_page_params_dl_dr_dt() -> None:
    """dl, dr and dt fill the page."""
    event = one(
        BASE + "&en=x&dl=https%3A%2F%2Fa.example%2Fp&dr=https%3A%2F%2Fref.example&dt=T"
    )
    assert event.page is not None
    assert event.page.model_dump() == {
        "location": "https://a.example/p",
        "referrer": "https://ref.example",
        "title": "T",
    }


def test_campaign_params_are_named() -> None:
    """cm, cs, cn, cc, ck, ci, ccf, cmt become campaign_* params."""
    event = one(
        BASE
        + "&en=page_view&cm=cpc&cs=google&cn=spring&cc=ad1&ck=shoes&ci=42&ccf=video&cmt=remarketing"
    )
    assert event.params == {
        "campaign_medium": "cpc",
        "campaign_source": "google",
        "campaign_name": "spring",
        "campaign_content": "ad1",
        "campaign_term": "shoes",
        "campaign_id": "42",
        "campaign_creative_format": "video",
        "campaign_marketing_tactic": "remarketing",
    }


def test_promotion_events_read_cn_cs_as_creative() -> None:
    """On view_promotion cn/cs are the creative name/slot, with pi, pn, lo."""
    event = one(BASE + "&en=view_promotion&pi=P1&pn=Sale&cn=banner&cs=top&lo=home")
    assert event.params == {
        "promotion_id": "P1",
        "promotion_name": "Sale",
        "creative_name": "banner",
        "creative_slot": "top",
        "location_id": "home",
    }


def test_session_flags_and_engagement() -> None:
    """_ss, _fv, _nsi, _c, _dbg are 1 when present; seg and _et are numbers."""
    event = one(
        BASE
        + "&en=x&_ss&_fv=1&_nsi=1&_c=1&_dbg=1&seg=0&_et=250&npa=1&dma=1&tt=internal"
    )
    assert event.params == {
        "session_start": 1,
        "first_visit": 1,
        "new_session": 1,
        "conversion": 1,
        "debug_mode": 1,
        "session_engaged": 0,
        "engagement_time_msec": 250,
        "npa": 1,
        "dma": 1,
        "traffic_type": "internal",
    }
    assert event.consent.ad_personalization == "denied"


def test_internal_params_are_not_forwarded() -> None:
    """gtm, _p, _s, tfd, _eu, richsstsse and client hints are not params."""
    event = one(BASE + "&en=x&gtm=45je&_s=3&tfd=100&_eu=AAI&richsstsse&uaa=arm&are=1")
    assert event.params == {}


def test_sid_and_sct_come_from_the_session_cookie_when_absent() -> None:
    """Without sid/sct the _ga_<stream> cookie (GS2) gives session id and number."""
    event = one(
        "v=2&tid=G-ABC1234567&en=x",
        cookies={
            "_ga": "GA1.1.111.222",
            "_ga_ABC1234567": "GS2.1.s1712345600$o5$g1$t1712345700$j0$l0$h0",
        },
    )
    assert event.client.client_id == "111.222"
    assert event.client.session_id == "1712345600"
    assert event.client.session_number == 5


def test_gs1_session_cookie() -> None:
    """The GS1 session cookie format is read too."""
    event = one(
        "v=2&tid=G-ABC1234567&en=x",
        cookies={"_ga_ABC1234567": "GS1.1.1712345600.9.1.1712345700.0.0.0"},
    )
    assert (event.client.session_id, event.client.session_number) == ("1712345600", 9)


def test_url_cid_wins_over_the_ga_cookie() -> None:
    """cid in the hit is used before the _ga cookie."""
    event = one(BASE + "&en=x", cookies={"_ga": "GA1.1.9.9"})
    assert event.client.client_id == "1234567890.1700000000"


def test_click_ids_come_from_dl_and_cookies() -> None:
    """Click ids from the page URL and first-party cookies land in click_ids."""
    dl = "https%3A%2F%2Fshop.example%2F%3Fgclid%3DG1%26fbclid%3DFB1"
    event = one(
        BASE + f"&en=page_view&dl={dl}", cookies={"_fbp": "fb.1.1.2", "_ttp": "T"}
    )
    assert event.click_ids.gclid == "G1"
    assert event.click_ids.fbclid == "FB1"
    assert event.click_ids.fbc == "fb.1.1712345678901.FB1"
    assert event.click_ids.fbp == "fb.1.1.2"
    assert event.click_ids.ttp == "T"


def test_gclid_from_the_gcl_aw_cookie() -> None:
    """_gcl_aw = GCL.<ts>.<gclid> gives the gclid."""
    event = one(BASE + "&en=x", cookies={"_gcl_aw": "GCL.1712345678.Cj0KCQ"})
    assert event.click_ids.gclid == "Cj0KCQ"


def test_currency_from_ep_currency_is_upper_cased() -> None:
    """ep.currency is used when cu is absent, and upper-cased."""
    event = one(BASE + "&en=add_to_cart&ep.currency=eur&epn.value=9.99")
    assert event.commerce is not None
    assert (event.commerce.currency, event.commerce.value) == ("EUR", Decimal("9.99"))


def test_tax_shipping_coupon_go_into_commerce_exactly() -> None:
    """tax, shipping and coupon are commerce fields, as exact decimals."""
    event = one(
        BASE + "&en=purchase&cu=USD&ep.transaction_id=T1&epn.value=100.10"
        "&epn.tax=8.01&epn.shipping=4.99&ep.coupon=SPRING"
    )
    assert event.commerce is not None
    assert event.commerce.value == Decimal("100.10")
    assert event.commerce.tax == Decimal("8.01")
    assert event.commerce.shipping == Decimal("4.99")
    assert event.commerce.coupon == "SPRING"
    assert event.params == {}


def test_purchase_with_three_items_one_with_custom_params() -> None:
    """pr1..pr3 become items in order; kN/vN pairs become Item.params."""
    event = one(
        BASE + "&en=purchase&cu=EUR&ep.transaction_id=T-9&epn.value=41.5"
        "&pr1=idA~nmAlpha~pr10.5~qt1~brAcme~caShirts~c2Men~vaBlue~cpX~ds1.5~afWeb~lp1~lnList~liL1"
        "&pr2=idB~nmBeta~pr20~qt1~k0color~v0red~k1size~v1M"
        "&pr3=idC~pr11~qt1"
    )
    assert event.commerce is not None
    items = event.commerce.items
    assert [i.item_id for i in items] == ["A", "B", "C"]
    assert items[0].model_dump(exclude_none=True) == {
        "item_id": "A",
        "item_name": "Alpha",
        "price": Decimal("10.5"),
        "quantity": 1,
        "item_brand": "Acme",
        "item_category": "Shirts",
        "item_category2": "Men",
        "item_variant": "Blue",
        "coupon": "X",
        "discount": Decimal("1.5"),
        "affiliation": "Web",
        "index": 1,
        "item_list_name": "List",
        "item_list_id": "L1",
        "params": {},
    }
    assert items[1].params == {"color": "red", "size": "M"}
    assert items[2].price == Decimal("11")


def test_items_are_ordered_by_their_number() -> None:
    """pr10 comes after pr2."""
    event = one(BASE + "&en=view_item_list&pr10=idJ&pr2=idB")
    assert event.commerce is not None
    assert [i.item_id for i in event.commerce.items] == ["B", "J"]


def test_parse_item_ignores_unknown_keys() -> None:
    """Unknown two-letter keys inside an item are skipped."""
    item = parse_item("idX~zzjunk~qt3", "pr1", Problems())
    assert item is not None
    assert (item.item_id, item.quantity) == ("X", 3)


# --- event_id ---------------------------------------------------------------------------


def test_ep_event_id_is_used_as_the_event_id() -> None:
    """ep.event_id is the event id and is not kept in params."""
    event = one(BASE + "&en=purchase&ep.event_id=evt-123&cu=EUR&ep.transaction_id=T")
    assert event.event_id == "evt-123"
    assert "event_id" not in event.params


def test_derived_event_id_is_deterministic_and_documented() -> None:
    """Without ep.event_id: ga4- + 32 hex of sha256(tid|cid|_p|_s|en|index)."""
    first = one(BASE + "&_s=4&en=page_view")
    again = one(BASE + "&_s=4&en=page_view")
    other = one(BASE + "&_s=5&en=page_view")
    parts = "G-ABC1234567|1234567890.1700000000|1712345678901|4|page_view|0"
    expected = "ga4-" + sha256_hex(parts)[:32]
    assert first.event_id == again.event_id == expected
    assert other.event_id != first.event_id


def test_dedup_key_is_left_to_the_caller() -> None:
    """The source leaves the default dedup key; the app sets it from the rules."""
    assert one(BASE + "&en=x").dedup_key.startswith("event:ga4-")


# --- PII --------------------------------------------------------------------------------


def test_email_in_a_param_is_hashed_into_identity_and_dropped() -> None:
    """A raw email in ep.* never leaves ingest: it is hashed into identity."""
    event = one(BASE + "&en=sign_up&ep.contact=John_Smith%40gmail.com&ep.plan=pro")
    assert event.params == {"plan": "pro"}
    assert event.identity.email_sha256 == (
        "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    )
    assert "John" not in event.model_dump_json()


def test_pii_named_params_and_email_uid_and_url_are_scrubbed() -> None:
    """ep.phone, an email uid, and an email in dl never reach the event."""
    dl = "https%3A%2F%2Fa.example%2F%3Fe%3Djo%2540x.example%26k%3D1"
    event = one(
        BASE + f"&en=x&ep.phone=%2B15551234567&uid=jo%40x.example&dl={dl}&dt=Hi"
    )
    text = event.model_dump_json()
    assert "jo@x.example" not in text
    assert "jo%40x.example" not in text
    assert "15551234567" not in text
    assert event.client.user_id is None
    assert event.page is not None
    assert event.page.location == "https://a.example/?k=1"
    assert event.identity.email_sha256 == sha256_hex("jo@x.example")
    assert event.identity.phone_sha256_e164 == sha256_hex("+15551234567")


def test_email_in_user_properties_is_scrubbed() -> None:
    """An email in up.* is dropped and hashed."""
    event = one(BASE + "&en=x&up.mail=a%40b.example")
    assert event.user_properties == {}
    assert event.identity.email_sha256 == sha256_hex("a@b.example")


# --- errors -----------------------------------------------------------------------------


def test_claim_rule_needs_v2_and_tid() -> None:
    """Without v=2 or tid the hit is a 400 naming the field."""
    assert error_paths("tid=G-1&en=x") == ["v"]
    assert error_paths("v=1&tid=G-1&en=x") == ["v"]
    assert error_paths("v=2&en=x") == ["tid"]


def test_missing_or_invalid_en_names_the_line() -> None:
    """A line without en, or with a bad name, is named line[i].en."""
    assert error_paths(BASE, "en=ok\n_et=5\nen=1bad") == ["line[1].en", "line[2].en"]
    assert error_paths(BASE) == ["en"]


def test_bad_currency_and_value_name_their_params() -> None:
    """An unknown cu and a non-numeric epn.value are named."""
    assert error_paths(BASE + "&en=purchase&cu=XXX&epn.value=abc") == [
        "cu",
        "epn.value",
    ]


def test_purchase_value_without_currency_is_an_error() -> None:
    """purchase/refund need a currency when value is set."""
    assert error_paths(BASE + "&en=purchase&epn.value=10") == ["cu"]


def test_value_without_currency_on_other_events_stays_a_param() -> None:
    """On add_to_cart a value without currency is kept as a number param."""
    event = one(BASE + "&en=add_to_cart&epn.value=10")
    assert event.commerce is not None
    assert event.commerce.value is None
    assert event.params == {"value": 10}


def test_bad_item_fields_name_the_item() -> None:
    """A non-numeric price or quantity names prN (with the line)."""
    paths = error_paths(
        BASE + "&cu=EUR", "en=purchase&pr1=idA~prX\nen=x&pr3=idC~qtmany"
    )
    assert paths == ["line[0].pr1", "line[1].pr3"]


def test_bad_param_name_is_named() -> None:
    """An ep.* name outside the GA4 alphabet is a 400 naming it."""
    assert error_paths(BASE + "&en=x&ep.bad%20name=1") == ["ep.bad name"]


def test_malformed_percent_encoding_in_a_line_is_400() -> None:
    """%zz or a lone % in the body is a 400 naming the line and key."""
    assert error_paths(BASE, "en=x&ep.a=%zz") == ["line[0].ep.a"]
    assert error_paths(BASE + "&en=x&dt=%") == ["dt"]


def test_invalid_utf8_in_the_body_is_400() -> None:
    """Bytes that are not UTF-8 are a 400, never a crash."""
    with pytest.raises(InvalidPayload) as info:
        parse(BASE, b"en=x&dt=\xff\xfe")
    assert info.value.fields[0]["path"] == "line[0].dt"


def test_too_many_lines_is_413() -> None:
    """More lines than max_events_per_request is a 413."""
    with pytest.raises(InvalidPayload) as info:
        parse(BASE, "\n".join("en=x" for _ in range(4)), max_events=3)
    assert info.value.status == 413
