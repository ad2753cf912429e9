"""PII normalisation and hashing (SPECS §2.5, §3.3, §4.2, §5a.2, §5b.2, App. B)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from truecount.core import pii
from truecount.core.pii import RawIdentity, hash_identity
from truecount.errors import InvalidPayload

META_EMAIL_SHA256 = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
# "+44 7700 900123" in Arabic-Indic digits.
ARABIC_INDIC_UK = (
    "+\u0664\u0664 \u0667\u0667\u0660\u0660 \u0669\u0660\u0660\u0661\u0662\u0663"
)
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# --- hashing primitives -------------------------------------------------------


def test_sha256_hex_matches_the_appendix_b_vector() -> None:
    """The normalised Meta doc email hashes to the verified vector."""
    assert pii.sha256_hex("john_smith@gmail.com") == META_EMAIL_SHA256


def test_sha256_hex_hashes_utf8_bytes() -> None:
    """Non-ASCII text is hashed as UTF-8."""
    assert pii.sha256_hex("joão") == hashlib.sha256("joão".encode()).hexdigest()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (META_EMAIL_SHA256, True),
        (META_EMAIL_SHA256.upper(), True),
        (f" {META_EMAIL_SHA256} ", True),
        (META_EMAIL_SHA256[:-1], False),
        (META_EMAIL_SHA256 + "0", False),
        ("g" * 64, False),
        ("", False),
    ],
)
def test_is_sha256_accepts_exactly_64_hex_digits(value: str, expected: bool) -> None:
    """Only 64 hex digits in either case count as a digest."""
    assert pii.is_sha256(value) is expected


# --- email ----------------------------------------------------------------------


def test_normalize_email_trims_and_lowercases_the_meta_example() -> None:
    """Meta's doc example normalises and hashes to the Appendix B vector."""
    normalised = pii.normalize_email("  John_Smith@gmail.com ")

    assert normalised == "john_smith@gmail.com"
    assert pii.sha256_hex(normalised) == META_EMAIL_SHA256


def test_normalize_email_keeps_gmail_dots_for_meta() -> None:
    """Meta, LinkedIn and TikTok do not remove dots in gmail local parts."""
    assert pii.normalize_email("John.Smith@Gmail.com") == "john.smith@gmail.com"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("john.smith@gmail.com", "johnsmith@gmail.com"),
        (" J.O.H.N@GoogleMail.com", "john@googlemail.com"),
        ("john.smith+news@gmail.com", "johnsmith+news@gmail.com"),
        ("john.smith@example.com", "john.smith@example.com"),
        ("john.smith@gmail.com.au", "john.smith@gmail.com.au"),
    ],
)
def test_normalize_email_google_drops_dots_only_for_gmail(
    raw: str, expected: str
) -> None:
    """Google removes local-part dots for gmail.com and googlemail.com only."""
    assert pii.normalize_email_google(raw) == expected


def test_google_and_meta_email_hashes_differ_for_dotted_gmail() -> None:
    """A dotted gmail address gets two different digests."""
    identity = hash_identity(RawIdentity(email="John.Smith@gmail.com"))

    assert identity.email_sha256 == h("john.smith@gmail.com")
    assert identity.email_sha256_google == h("johnsmith@gmail.com")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "not an email",
        "john@",
        "@example.com",
        "john@example",
        "john smith@example.com",
        "john@@example.com",
        "john@example.c0m",
        "<john@example.com>",
        "a" * 250 + "@example.com",
    ],
)
def test_normalize_email_rejects_junk(raw: str) -> None:
    """Values that are not an email address give None, never a hash."""
    assert pii.normalize_email(raw) is None
    assert pii.normalize_email_google(raw) is None


def test_normalize_email_google_rejects_an_all_dots_gmail_local_part() -> None:
    """Removing dots must not leave an empty local part."""
    assert pii.normalize_email_google("...@gmail.com") is None


def test_normalize_email_accepts_unicode_domains() -> None:
    """Internationalised domains are lower-cased and kept."""
    assert pii.normalize_email("Jörg@Bücher.DE") == "jörg@bücher.de"


# --- phone ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "country", "meta", "e164"),
    [
        ("(650) 555-1212", "1", "16505551212", "+16505551212"),
        ("+1 (650) 555-1212", None, "16505551212", "+16505551212"),
        ("+1 650 555 1212", "44", "16505551212", "+16505551212"),
        ("1-650-555-1212", "1", "16505551212", "+16505551212"),
        ("16505551212", None, "16505551212", "+16505551212"),
        ("0044 20 7946 0958", None, "442079460958", "+442079460958"),
        ("07700 900123", "44", "447700900123", "+447700900123"),
        ("07700 900123", "+44", "447700900123", "+447700900123"),
        ("+44 (0)20 7946 0958", None, "442079460958", "+442079460958"),
        ("06 1234 5678", "39", "390612345678", "+390612345678"),
        ("030 1234567", "49", "49301234567", "+49301234567"),
        ("+49.30.1234567", None, "49301234567", "+49301234567"),
        (ARABIC_INDIC_UK, None, "447700900123", "+447700900123"),
    ],
)
def test_normalize_phone_gives_country_code_and_digits(
    raw: str, country: str | None, meta: str, e164: str
) -> None:
    """Meta gets digits with country code; Google and TikTok get E.164."""
    assert pii.normalize_phone(raw, country) == meta
    assert pii.normalize_phone_e164(raw, country) == e164


@pytest.mark.parametrize(
    ("raw", "country"),
    [
        ("", None),
        ("call me", "1"),
        ("555-CALL-NOW", "1"),
        ("12345", "1"),
        ("+1234", None),
        ("+1 650 555 1212 1234 5678", None),
        ("0650 555 1212", None),
        ("650-555-1212", "abc"),
        ("650-555-1212", "0"),
        ("650-555-1212", "1234"),
        ("650-555-1212", "\u00b9"),
        ("+1 650 555 1212\u00b2", None),
        ("+0 650 555 1212", None),
        ("000", "1"),
        ("21 650 555 1212", "1"),
        ("650 555 121", "1"),
    ],
)
def test_normalize_phone_rejects_junk(raw: str, country: str | None) -> None:
    """Letters, absurd lengths, unknown countries and bad defaults give None."""
    assert pii.normalize_phone(raw, country) is None
    assert pii.normalize_phone_e164(raw, country) is None


def test_normalize_phone_strips_the_international_00_prefix_for_meta() -> None:
    """Meta's rule: remove non-digits, then a leading international 00."""
    assert pii.normalize_phone("00 1 650 555 1212", "44") == "16505551212"


# --- names and address ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  John ", "john"),
        ("JOÃO", "joão"),
        ("Jo\u0061\u0303o", "joão"),
        ("O'Brien-Smith", "obriensmith"),
        ("Mary  Ann", "mary ann"),
        ("Dr. Zoë", "dr zoë"),
        ("Łukasz", "łukasz"),
    ],
)
def test_normalize_name_lowercases_and_strips_punctuation(
    raw: str, expected: str
) -> None:
    """Names keep Unicode letters in NFC form and lose punctuation."""
    assert pii.normalize_name(raw) == expected


def test_normalize_name_meta_utf8_example_hashes_composed_form() -> None:
    """Meta's "joão" example hashes the same whether composed or decomposed."""
    composed = hash_identity(RawIdentity(first_name="João"))
    decomposed = hash_identity(RawIdentity(first_name="Jo\u0061\u0303o"))

    assert composed.first_name_sha256 == h("joão")
    assert decomposed.first_name_sha256 == h("joão")


@pytest.mark.parametrize("raw", ["", "   ", "...", "123", "--"])
def test_normalize_name_rejects_values_without_letters(raw: str) -> None:
    """A name with no letters left is dropped."""
    assert pii.normalize_name(raw) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("San Francisco", "sanfrancisco"),
        ("  St. Louis ", "stlouis"),
        ("Winston-Salem (NC) 27101", "winstonsalemnc"),
        ("München", "münchen"),
    ],
)
def test_normalize_city_keeps_lowercase_letters_only(raw: str, expected: str) -> None:
    """Meta's ct rule: lower-case, no digits, spaces or punctuation."""
    assert pii.normalize_city(raw) == expected


def test_normalize_region_uses_the_city_rule() -> None:
    """Meta's st rule is the ct rule; US states are two letters."""
    assert pii.normalize_region(" CA ") == "ca"
    assert pii.normalize_region("New York") == "newyork"
    assert pii.normalize_region("12") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("94035", "94035"),
        ("94035-1234", "94035"),
        ("M1 1AE", "m11ae"),
        ("  sw1a 2aa ", "sw1a2aa"),
        ("75.008", "75008"),
        ("-", None),
        ("", None),
    ],
)
def test_normalize_postal_code_follows_meta(raw: str, expected: str | None) -> None:
    """Meta's zp rule: lower-case, no spaces, only the part before '-'."""
    assert pii.normalize_postal_code(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("US", "us"),
        (" gb ", "gb"),
        ("U.S.", "us"),
        ("USA", None),
        ("United States", None),
        ("1", None),
        ("", None),
    ],
)
def test_normalize_country_requires_alpha2(raw: str, expected: str | None) -> None:
    """Country must be ISO 3166-1 alpha-2, lower-cased."""
    assert pii.normalize_country(raw) == expected


def test_normalize_external_id_trims_and_keeps_case() -> None:
    """Your own id is trimmed only; its case is significant."""
    assert pii.normalize_external_id("  Cust-42 ") == "Cust-42"
    assert pii.normalize_external_id("   ") is None


# --- hash_identity ----------------------------------------------------------------


def test_hash_identity_fills_every_field_from_raw_values() -> None:
    """Every raw field is normalised per platform and hashed."""
    raw = RawIdentity(
        email=" John.Smith@Gmail.com ",
        phone="(650) 555-1212",
        phone_default_country="1",
        first_name="João",
        last_name="O'Brien",
        city="San Francisco",
        region="CA",
        postal_code="94035-1234",
        country="US",
        external_id=" cust-42 ",
        lead_id=" L-9 ",
    )

    identity = hash_identity(raw)

    assert identity.model_dump() == {
        "email_sha256": h("john.smith@gmail.com"),
        "email_sha256_google": h("johnsmith@gmail.com"),
        "phone_sha256": h("16505551212"),
        "phone_sha256_e164": h("+16505551212"),
        "first_name_sha256": h("joão"),
        "last_name_sha256": h("obrien"),
        "city_sha256": h("sanfrancisco"),
        "region_sha256": h("ca"),
        "postal_code_sha256": h("94035"),
        "country_sha256": h("us"),
        "external_id": h("cust-42"),
        "lead_id": "L-9",
    }


def test_hash_identity_passes_prehashed_values_through_lowercased() -> None:
    """Already-hashed values are never hashed twice; upper-case hex is lowered."""
    digest = META_EMAIL_SHA256.upper()

    identity = hash_identity(
        RawIdentity(
            email=digest,
            phone=digest,
            first_name=digest,
            last_name=digest,
            external_id=digest,
        )
    )

    assert identity.email_sha256 == META_EMAIL_SHA256
    assert identity.email_sha256_google == META_EMAIL_SHA256
    assert identity.phone_sha256 == META_EMAIL_SHA256
    assert identity.phone_sha256_e164 == META_EMAIL_SHA256
    assert identity.first_name_sha256 == META_EMAIL_SHA256
    assert identity.last_name_sha256 == META_EMAIL_SHA256
    assert identity.external_id == META_EMAIL_SHA256


def test_hash_identity_drops_junk_instead_of_hashing_it() -> None:
    """Invalid values leave their field empty."""
    identity = hash_identity(
        RawIdentity(email="nope", phone="call me", country="Germany", first_name="!!")
    )

    assert identity.model_dump(exclude_none=True) == {}


def test_hash_identity_of_nothing_is_empty() -> None:
    """No raw values give an empty identity."""
    assert hash_identity(RawIdentity()).model_dump(exclude_none=True) == {}


def test_hash_identity_rejects_an_overlong_lead_id() -> None:
    """A lead id over 128 characters is bad input naming the field."""
    with pytest.raises(InvalidPayload) as info:
        hash_identity(RawIdentity(lead_id="x" * 129))

    assert info.value.fields[0]["path"] == "lead_id"


def test_raw_identity_forbids_unknown_fields() -> None:
    """A typo in a raw field name is an error, not silently dropped PII."""
    with pytest.raises(ValidationError):
        RawIdentity.model_validate({"emial": "a@b.com"})


# --- params scrubbing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("john@example.com", True),
        ("contact: John@Example.com today", True),
        ("https://x.test/thanks?email=john%40example.com", True),
        ("https://x.test/thanks?email=john%40example.com".upper(), True),
        ("@handle", False),
        ("user@localhost", False),
        ("no at sign", False),
        ("50%40off", False),
    ],
)
def test_looks_like_email_finds_addresses_in_text(value: str, expected: bool) -> None:
    """Plain and URL-encoded addresses are found anywhere in a value."""
    assert pii.looks_like_email(value) is expected


def test_scrub_params_removes_email_values_and_returns_the_first() -> None:
    """Params carrying an email are dropped; the first address is returned."""
    params: dict[str, str | int | float] = {
        "plan": "pro",
        "user_email": "Jane@Example.com",
        "note": "cc bob@example.org",
        "count": 3,
        "ratio": 0.5,
    }

    clean, email = pii.scrub_params(params)

    assert clean == {"plan": "pro", "count": 3, "ratio": 0.5}
    assert email == "Jane@Example.com"
    assert "user_email" in params


def test_scrub_params_without_emails_changes_nothing() -> None:
    """Clean params come back equal, with no email."""
    assert pii.scrub_params({"a": "b", "n": 1}) == ({"a": "b", "n": 1}, None)


# --- properties ---------------------------------------------------------------------

NORMALIZERS = [
    pii.normalize_email,
    pii.normalize_email_google,
    pii.normalize_name,
    pii.normalize_city,
    pii.normalize_region,
    pii.normalize_postal_code,
    pii.normalize_country,
    pii.normalize_external_id,
    pii.normalize_phone,
]
emails = st.builds(
    "{}@{}.{}".format,
    st.from_regex(r"[A-Za-z0-9._+-]{1,20}", fullmatch=True),
    st.sampled_from(["gmail", "googlemail", "example", "Mail-Host"]),
    st.sampled_from(["com", "org", "DE"]),
)
text = st.one_of(st.text(max_size=40), emails, st.from_regex(r"[+0-9 ()-]{0,20}"))


@settings(deadline=None, max_examples=150)
@given(value=text, normalize=st.sampled_from(NORMALIZERS))
def test_normalizers_are_idempotent(
    value: str, normalize: Callable[[str], str | None]
) -> None:
    """Normalising a normalised value changes nothing."""
    once = normalize(value)

    assert once is None or normalize(once) == once


@settings(deadline=None, max_examples=150)
@given(
    value=st.from_regex(r"\+?[0-9 ()-]{0,20}", fullmatch=True),
    country=st.sampled_from([None, "1", "44", "39", "+49"]),
)
def test_e164_phone_is_idempotent_and_agrees_with_meta(
    value: str, country: str | None
) -> None:
    """E.164 output re-normalises to itself and is '+' and the Meta digits."""
    e164 = pii.normalize_phone_e164(value, country)
    meta = pii.normalize_phone(value, country)

    if e164 is None:
        assert meta is None
    else:
        assert e164 == f"+{meta}"
        assert pii.normalize_phone_e164(e164, country) == e164
        assert 7 <= len(meta or "") <= 15


@settings(deadline=None, max_examples=100)
@given(
    email=st.one_of(st.none(), text),
    phone=st.one_of(st.none(), text),
    name=st.one_of(st.none(), text),
    place=st.one_of(st.none(), text),
)
def test_hash_identity_outputs_only_lowercase_hex_digests(
    email: str | None, phone: str | None, name: str | None, place: str | None
) -> None:
    """Whatever comes in, every hashed field is None or 64 lower-case hex."""
    identity = hash_identity(
        RawIdentity(
            email=email,
            phone=phone,
            first_name=name,
            last_name=name,
            city=place,
            region=place,
            postal_code=place,
            country=place,
            external_id=name,
        )
    )

    digests = identity.model_dump(exclude={"lead_id"})
    assert all(v is None or HEX64.match(v) for v in digests.values())


# --- sweep: the last line of defence ------------------------------------------


def test_redact_emails_replaces_each_address_with_a_stable_token() -> None:
    """Plain, encoded and twice-encoded addresses become em_<16 hex>; the same
    address always gives the same token; text without one is untouched."""
    plain, first = pii.redact_emails("order for Jane@Example.com, cc bob@x.io")
    encoded, _ = pii.redact_emails("https://s.example/?u=jane%40example.com")
    twice, _ = pii.redact_emails("u=jane%2540example.com")
    token = "em_" + pii.sha256_hex("jane@example.com")[:16]

    assert plain == f"order for {token}, cc em_{pii.sha256_hex('bob@x.io')[:16]}"
    assert first == "Jane@Example.com"
    assert encoded == f"https://s.example/?u={token}"
    assert twice == f"u={token}"
    assert pii.redact_emails("https://shop.example/@handle?a=%20b") == (
        "https://shop.example/@handle?a=%20b",
        None,
    )


def test_sweep_event_cleans_every_field_and_hashes_the_first_address() -> None:
    """Transaction id, dedup key, URL, item name and params lose the address;
    identity gains its hash; an event without one comes back unchanged."""
    from datetime import UTC, datetime

    from truecount.models.event import Commerce, Event, Item, Page

    now = datetime(2026, 1, 1, tzinfo=UTC)
    event = Event(
        event_id="e1", name="purchase", source="data", occurred_at=now,
        received_at=now, dedup_key="purchase:jane@example.com",
        page=Page(location="https://s.example/?email=jane%40example.com"),
        commerce=Commerce(
            transaction_id="jane@example.com", value=1, currency="EUR",
            items=[Item(item_name="gift for jane@example.com")],
        ),
        params={"note": "jane@example.com"},
    )  # fmt: skip
    token = "em_" + pii.sha256_hex("jane@example.com")[:16]

    swept = pii.sweep_event(event)

    assert "@" not in swept.model_dump_json()
    assert swept.dedup_key == f"purchase:{token}"
    assert swept.commerce is not None
    assert swept.commerce.transaction_id == token
    assert swept.identity.email_sha256 == pii.sha256_hex("jane@example.com")
    clean = Event(event_id="e2", name="page_view", source="ga4", occurred_at=now,
                  received_at=now)  # fmt: skip
    assert pii.sweep_event(clean) is clean


def test_sweep_that_would_overflow_a_field_is_a_named_400() -> None:
    """a@b.co (6 chars) becomes a 19-char token: a session id already at its
    64-char limit cannot hold it, and that is bad input, not a crash."""
    from datetime import UTC, datetime

    from truecount.errors import InvalidPayload
    from truecount.models.event import Client, Event

    now = datetime(2026, 1, 1, tzinfo=UTC)
    event = Event(
        event_id="e1", name="page_view", source="ga4", occurred_at=now,
        received_at=now, client=Client(session_id="s" * 57 + " a@b.co"),
    )  # fmt: skip

    with pytest.raises(InvalidPayload) as caught:
        pii.sweep_event(event)

    assert caught.value.status == 400
    assert [f["path"] for f in caught.value.fields] == ["client.session_id"]
