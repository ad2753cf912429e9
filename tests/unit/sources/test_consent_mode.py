"""Consent Mode v2 parsing (SPECS §9): gcs, gcd letters, npa, flags."""

from __future__ import annotations

import pytest

from truecount.sources.consent_mode import (
    consent_value,
    decode_gcd_letter,
    from_consent_mode,
    from_flags,
    parse_gcd,
    parse_gcs,
)


@pytest.mark.parametrize(
    ("gcs", "ad_storage", "analytics_storage"),
    [
        ("G111", "granted", "granted"),
        ("G110", "granted", "denied"),
        ("G101", "denied", "granted"),
        ("G100", "denied", "denied"),
        ("G1--", "unknown", "unknown"),
    ],
)
def test_gcs_table_rows_decode_to_the_storage_types(
    gcs: str, ad_storage: str, analytics_storage: str
) -> None:
    """Every row of the SPECS §9.2 gcs table decodes as documented."""
    assert parse_gcs(gcs) == {
        "ad_storage": ad_storage,
        "analytics_storage": analytics_storage,
    }


@pytest.mark.parametrize("gcs", [None, "", "G1", "G11", "G1111", "X111", "G1x1"])
def test_missing_or_malformed_gcs_is_no_signal(gcs: str | None) -> None:
    """A missing or malformed gcs is unknown, never granted."""
    assert parse_gcs(gcs) == {"ad_storage": "unknown", "analytics_storage": "unknown"}


@pytest.mark.parametrize(
    ("letter", "default", "update", "effective"),
    [
        ("l", "unknown", "unknown", "unknown"),
        ("p", "denied", "unknown", "denied"),
        ("q", "denied", "denied", "denied"),
        ("t", "granted", "unknown", "granted"),
        ("r", "denied", "granted", "granted"),
        ("m", "unknown", "denied", "denied"),
        ("n", "unknown", "granted", "granted"),
        ("u", "granted", "denied", "denied"),
        ("v", "granted", "granted", "granted"),
    ],
)
def test_gcd_letters_decode_default_update_and_effective(
    letter: str, default: str, update: str, effective: str
) -> None:
    """Each gcd letter of the SPECS §9.3 table gives its default, update, effective."""
    assert decode_gcd_letter(letter) == (default, update)
    gcd = f"13{letter}3{letter}3{letter}3{letter}5"
    assert parse_gcd(gcd) == dict.fromkeys(
        ("ad_storage", "analytics_storage", "ad_user_data", "ad_personalization"),
        effective,
    )


def test_gcd_groups_map_to_the_four_types_in_order() -> None:
    """The four letters are ad_storage, analytics_storage, ad_user_data, ad_personalization."""
    assert parse_gcd("13v3q3r3m5l1") == {
        "ad_storage": "granted",
        "analytics_storage": "denied",
        "ad_user_data": "granted",
        "ad_personalization": "denied",
    }


@pytest.mark.parametrize("gcd", ["11p1p1p1p5", "13r3r3r3r1", "13l3l3l3l1"])
def test_spec_example_gcd_values_parse(gcd: str) -> None:
    """The example gcd values in SPECS parse to one state for all four types."""
    expected = {
        "11p1p1p1p5": "denied",
        "13r3r3r3r1": "granted",
        "13l3l3l3l1": "unknown",
    }
    assert set(parse_gcd(gcd).values()) == {expected[gcd]}


@pytest.mark.parametrize("gcd", [None, "", "1", "13é3é", "1" + "3" * 80, "13l3l<"])
def test_malformed_gcd_is_no_signal(gcd: str | None) -> None:
    """Junk gcd values give unknown for every type and never raise."""
    assert set(parse_gcd(gcd).values()) == {"unknown"}


def test_gcs_wins_over_gcd_for_storage_and_raw_values_are_kept() -> None:
    """gcs overrides gcd's storage types; gcd alone gives the data-use types."""
    consent = from_consent_mode("G100", "13v3v3v3q5", None)
    assert consent.ad_storage == "denied"
    assert consent.analytics_storage == "denied"
    assert consent.ad_user_data == "granted"
    assert consent.ad_personalization == "denied"
    assert consent.gcs == "G100"
    assert consent.gcd == "13v3v3v3q5"


def test_no_consent_signal_is_unknown_everywhere() -> None:
    """Without gcs, gcd or npa every type is unknown."""
    consent = from_consent_mode(None, None, None)
    assert consent.model_dump(exclude_none=True) == dict.fromkeys(
        ("ad_storage", "analytics_storage", "ad_user_data", "ad_personalization"),
        "unknown",
    )


def test_npa_denies_unknown_ad_personalization_only() -> None:
    """npa=1 denies ad_personalization when nothing else says so."""
    assert from_consent_mode(None, None, "1").ad_personalization == "denied"
    assert from_consent_mode(None, "13v3v3v3v5", "1").ad_personalization == "granted"
    assert from_consent_mode(None, None, "0").ad_personalization == "unknown"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("granted", "granted"),
        ("GRANTED", "granted"),
        ("denied", "denied"),
        ("DENIED", "denied"),
        (True, "granted"),
        (False, "denied"),
        ("true", "granted"),
        ("false", "denied"),
        (1, "granted"),
        (0, "denied"),
        ("maybe", "unknown"),
        (None, "unknown"),
        ({"x": 1}, "unknown"),
    ],
)
def test_consent_flag_values(value: object, expected: str) -> None:
    """Data tag and MP consent values map to granted/denied/unknown."""
    assert consent_value(value) == expected


def test_flags_build_consent_with_unnamed_types_unknown() -> None:
    """from_flags fills named types and leaves the others unknown."""
    consent = from_flags({"ad_user_data": "GRANTED", "ad_personalization": "DENIED"})
    assert (consent.ad_storage, consent.analytics_storage) == ("unknown", "unknown")
    assert (consent.ad_user_data, consent.ad_personalization) == ("granted", "denied")
