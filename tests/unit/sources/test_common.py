"""Shared source rules: typing, money, JSON, URL redaction, event assembly."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from truecount.core.pii import sha256_hex
from truecount.errors import InvalidPayload
from truecount.sources.common import (
    Draft,
    Problems,
    derive_event_id,
    finish,
    load_json,
    param_value,
    parse_number,
    redact_url,
    to_int,
)

NOW = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("21", Decimal("21")),
        ("-0.5", Decimal("-0.5")),
        (" 10.50 ", Decimal("10.50")),
        (".5", Decimal("0.5")),
        ("1e5", None),
        ("inf", None),
        ("nan", None),
        ("1" * 31, None),
        ("", None),
        ("12abc", None),
    ],
)
def test_parse_number_accepts_plain_decimals_only(
    text: str, expected: Decimal | None
) -> None:
    """Only plain decimal strings are numbers; exponents and specials are not."""
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("90"), 90),
        (Decimal("1.25"), 1.25),
        (Decimal("1E+40"), "1E+40"),
        (True, "true"),
        (False, "false"),
        ("x", "x"),
        (2**70, str(2**70)),
        (float("inf"), "inf"),
        (3, 3),
    ],
)
def test_param_value_types(value: object, expected: object) -> None:
    """Params become int, float or str; huge and non-finite numbers become text."""
    assert param_value(value) == expected  # type: ignore[arg-type]


def test_to_int_rejects_negative_and_fractional() -> None:
    """to_int accepts non-negative integral values only."""
    assert to_int("3") == 3
    assert to_int(Decimal("2.0")) == 2
    assert to_int("-1") is None
    assert to_int("1.5") is None
    assert to_int(True) is None


@pytest.mark.parametrize(
    "text", ["{", "NaN", '{"a": Infinity}', "[" * 5000 + "]" * 5000, "1" * 5000]
)
def test_load_json_turns_every_parse_failure_into_400(text: str) -> None:
    """Invalid JSON, NaN/Infinity, absurd nesting and huge ints are 400s."""
    with pytest.raises(InvalidPayload) as info:
        load_json(text, "body")
    assert info.value.status == 400
    assert info.value.fields[0]["path"] == "body"


def test_load_json_keeps_fractions_exact() -> None:
    """Numbers with a fraction are parsed as exact decimals."""
    assert load_json('{"v": 0.1}') == {"v": Decimal("0.1")}


@pytest.mark.parametrize(
    ("url", "expected", "email"),
    [
        ("https://a.example/p?x=1", "https://a.example/p?x=1", None),
        (
            "https://a.example/p?e=jo%40b.example&x=1",
            "https://a.example/p?x=1",
            "jo@b.example",
        ),
        ("https://a.example/p#jo@b.example", "https://a.example/p", "jo@b.example"),
        ("https://a.example/u/jo@b.example/", None, "jo@b.example"),
    ],
)
def test_redact_url_removes_emails(
    url: str, expected: str | None, email: str | None
) -> None:
    """Query params and fragments with an email are removed; an email in the path drops the URL."""
    assert redact_url(url) == (expected, email)


def test_derive_event_id_shape() -> None:
    """Derived ids are <prefix>- and 32 hex of SHA-256 of the joined parts."""
    assert derive_event_id("ga4", "a", "b") == "ga4-" + sha256_hex("a|b")[:32]


def test_finish_hashes_an_email_event_id() -> None:
    """An event id that holds an email is replaced by its hash; the email goes to identity."""
    draft = Draft(
        source="data",
        name="sign_up",
        event_id="jo@b.example",
        occurred_at=NOW,
        received_at=NOW,
    )
    event = finish(draft, Problems())
    assert event is not None
    assert event.event_id == derive_event_id("data", "jo@b.example")
    assert event.identity.email_sha256 == sha256_hex("jo@b.example")


def test_finish_moves_lead_fields_into_lead() -> None:
    """Lead events carry lead_id, value and currency in lead."""
    draft = Draft(
        source="data",
        name="generate_lead",
        event_id="e1",
        occurred_at=NOW,
        received_at=NOW,
        params={
            "lead_id": "L1",
            "value": Decimal("50"),
            "currency": "eur",
            "form": "x",
        },
    )
    event = finish(draft, Problems())
    assert event is not None
    assert event.lead is not None
    assert (event.lead.lead_id, event.lead.value, event.lead.currency) == (
        "L1",
        Decimal("50"),
        "EUR",
    )
    assert event.params == {"form": "x"}
