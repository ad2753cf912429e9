"""Shared browser context: strict query parsing, IP, GA cookies, click ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from truecount.errors import InvalidPayload
from truecount.sources.browser import (
    build_fbc,
    click_ids,
    client_id_from_ga_cookie,
    client_ip,
    parse_query,
    session_cookie,
    session_from_ga_cookie,
)

NOW = datetime(2024, 4, 5, 19, 34, 38, 901000, tzinfo=UTC)
NOW_MS = 1712345678901


def test_parse_query_decodes_plus_percent_and_utf8() -> None:
    """+ is a space, %XX a byte, and the bytes are UTF-8."""
    assert parse_query(b"a=x+y&b=caf%C3%A9&c&&d=") == [
        ("a", "x y"),
        ("b", "café"),
        ("c", ""),
        ("d", ""),
    ]


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b"a=%zz", "a"),
        (b"a=%", "a"),
        (b"a=%4", "a"),
        (b"%zz=1", "$query"),
        (b"a=%ff", "a"),
        (b"a=\xff", "a"),
    ],
)
def test_parse_query_rejects_bad_encoding_with_400(raw: bytes, path: str) -> None:
    """Malformed percent-encoding and invalid UTF-8 are 400s naming the field."""
    with pytest.raises(InvalidPayload) as info:
        parse_query(raw)
    assert info.value.status == 400
    assert info.value.fields[0]["path"] == path


def test_parse_query_names_the_line_in_body_errors() -> None:
    """A body line's error path carries the line prefix."""
    with pytest.raises(InvalidPayload) as info:
        parse_query(b"en=x&ep.a=%zz", "line[2]")
    assert info.value.fields[0]["path"] == "line[2].ep.a"


@pytest.mark.parametrize(
    ("trusted", "xff", "remote", "expected"),
    [
        (0, "198.51.100.7, 203.0.113.5", "10.0.0.1", "10.0.0.1"),
        (1, "198.51.100.7, 203.0.113.5", "10.0.0.1", "203.0.113.5"),
        (2, "198.51.100.7, 203.0.113.5", "10.0.0.1", "198.51.100.7"),
        (2, "203.0.113.5", "10.0.0.1", "10.0.0.1"),
        (1, None, "10.0.0.1", "10.0.0.1"),
        (1, "spoofed, 2001:db8::1", None, "2001:db8::1"),
        (1, "not-an-ip", "10.0.0.1", None),
        (0, None, None, None),
    ],
)
def test_client_ip_takes_the_hop_before_trusted_proxies(
    trusted: int, xff: str | None, remote: str | None, expected: str | None
) -> None:
    """With n trusted proxies the client is the n-th X-Forwarded-For entry from the right."""
    assert client_ip(remote, xff, trusted) == expected


def test_client_ip_ignores_entries_a_client_prepends() -> None:
    """Entries the browser puts in front cannot move the chosen hop."""
    assert client_ip("10.0.0.1", "1.1.1.1, 2.2.2.2, 198.51.100.7", 1) == "198.51.100.7"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("GA1.1.1234567890.1700000000", "1234567890.1700000000"),
        ("GA1.2.987.654", "987.654"),
        ("GA2.1.1.2", None),
        ("junk", None),
        ("", None),
        (None, None),
    ],
)
def test_ga_cookie_gives_the_client_id(value: str | None, expected: str | None) -> None:
    """_ga = GA1.<n>.<a>.<b> gives <a>.<b>."""
    assert client_id_from_ga_cookie(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("GS1.1.1712345600.3.1.1712345700.0.0.0", ("1712345600", 3)),
        ("GS1.1.1712345600.7", ("1712345600", 7)),
        ("GS2.1.s1712345600$o4$g1$t1712345700$j60$l0$h0", ("1712345600", 4)),
        ("GS2.1.s1712345600$g1", ("1712345600", None)),
        ("GS3.1.x", (None, None)),
        (None, (None, None)),
    ],
)
def test_session_cookie_formats_gs1_and_gs2(
    value: str | None, expected: tuple[str | None, int | None]
) -> None:
    """_ga_<stream> in GS1 and GS2 formats gives the session id and number."""
    assert session_from_ga_cookie(value) == expected


def test_session_cookie_is_chosen_by_measurement_id() -> None:
    """The _ga_<stream> cookie of the hit's tid is used; without a tid only a unique one."""
    cookies = {"_ga_ABC1234567": "GS1.1.1.2", "_ga_OTHER": "GS1.1.3.4"}
    assert session_cookie(cookies, "G-ABC1234567") == "GS1.1.1.2"
    assert session_cookie(cookies, None) is None
    assert session_cookie({"_ga_X": "GS1.1.5.6"}, None) == "GS1.1.5.6"


def test_click_ids_from_the_page_url() -> None:
    """Every click id in the landing-page URL is read."""
    url = (
        "https://shop.example/?gclid=G1&gbraid=GB&wbraid=WB&dclid=DC&ttclid=TT"
        "&li_fat_id=LI&msclkid=MS&utm_source=x"
    )
    ids = click_ids(url, {}, NOW)
    assert ids.model_dump(exclude_none=True) == {
        "gclid": "G1",
        "gbraid": "GB",
        "wbraid": "WB",
        "dclid": "DC",
        "ttclid": "TT",
        "li_fat_id": "LI",
        "msclkid": "MS",
    }


def test_click_ids_from_cookies() -> None:
    """_fbc, _fbp, _ttp, _gcl_aw, _gcl_gb, ttclid, li_fat_id, _uetmsclkid are read."""
    cookies = {
        "_fbc": "fb.1.1712000000000.AbC",
        "_fbp": "fb.1.1596403881668.1116446470",
        "_ttp": "ttp-cookie",
        "_gcl_aw": "GCL.1712345678.Cj0KCQjw",
        "_gcl_gb": "GCL.1712345678.GBRAID",
        "ttclid": "tt-cookie",
        "li_fat_id": "li-cookie",
        "_uetmsclkid": "_uetMSCLK",
    }
    ids = click_ids(None, cookies, NOW)
    assert ids.fbc == "fb.1.1712000000000.AbC"
    assert ids.fbp == "fb.1.1596403881668.1116446470"
    assert ids.ttp == "ttp-cookie"
    assert ids.gclid == "Cj0KCQjw"
    assert ids.gbraid == "GBRAID"
    assert ids.ttclid == "tt-cookie"
    assert ids.li_fat_id == "li-cookie"
    assert ids.msclkid == "MSCLK"


def test_url_click_id_wins_over_the_cookie() -> None:
    """A gclid in the page URL is newer than the _gcl_aw cookie."""
    ids = click_ids("https://x.example/?gclid=NEW", {"_gcl_aw": "GCL.1.OLD"}, NOW)
    assert ids.gclid == "NEW"


def test_fbclid_builds_fbc_with_the_receipt_time_in_ms() -> None:
    """fbclid without _fbc gives fbc = fb.1.<received ms>.<fbclid>, case kept."""
    fbclid = "IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk"
    ids = click_ids(f"https://shop.example/?fbclid={fbclid}", {}, NOW)
    assert ids.fbclid == fbclid
    assert ids.fbc == f"fb.1.{NOW_MS}.{fbclid}"
    assert build_fbc("AbC", NOW) == f"fb.1.{NOW_MS}.AbC"


def test_existing_fbc_cookie_for_the_same_click_is_kept() -> None:
    """When _fbc already holds the URL's fbclid the cookie is forwarded unchanged."""
    ids = click_ids("https://x.example/?fbclid=AbC", {"_fbc": "fb.1.1700.AbC"}, NOW)
    assert ids.fbc == "fb.1.1700.AbC"


def test_a_new_fbclid_replaces_an_older_fbc_cookie() -> None:
    """A different fbclid in the URL means a newer click: fbc is rebuilt."""
    ids = click_ids("https://x.example/?fbclid=NEW", {"_fbc": "fb.1.1700.OLD"}, NOW)
    assert ids.fbc == f"fb.1.{NOW_MS}.NEW"


def test_overlong_or_spaced_click_ids_are_dropped() -> None:
    """Junk values never fail the request: they are left out."""
    ids = click_ids(None, {"_fbp": "x" * 600, "_ttp": "a b"}, NOW)
    assert ids.fbp is None
    assert ids.ttp is None
