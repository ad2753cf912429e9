"""ISO 4217 exponents and exact minor-unit conversion."""

from __future__ import annotations

from decimal import Decimal

import pytest

from truecount.core.currency import (
    STRIPE_EXPONENTS,
    exponent,
    from_minor_units,
    is_currency,
)


@pytest.mark.parametrize(
    ("code", "places"),
    [
        ("EUR", 2),
        ("jpy", 0),
        ("KRW", 0),
        ("KWD", 3),
        ("BHD", 3),
        ("CLF", 4),
        ("ISK", 0),
    ],
)
def test_exponent_follows_iso_4217(code: str, places: int) -> None:
    """Zero-, two-, three- and four-decimal currencies, any case."""
    assert exponent(code) == places


def test_unknown_currency_is_refused() -> None:
    """A code outside ISO 4217 raises, and is_currency says no."""
    with pytest.raises(ValueError, match="unknown currency"):
        exponent("EUX")
    assert not is_currency("EUX")
    assert is_currency("EUR")


def test_minor_units_convert_exactly() -> None:
    """No binary float: 1999 cents are exactly 19.99."""
    assert from_minor_units(1999, "usd") == Decimal("19.99")
    assert str(from_minor_units(2100, "KWD")) == "2.100"
    assert from_minor_units(2100, "JPY") == Decimal("2100")


def test_provider_overrides_win_over_iso() -> None:
    """Stripe's ISK has two digits and MGA none; ISO says the opposite."""
    assert from_minor_units(50000, "isk", STRIPE_EXPONENTS) == Decimal("500.00")
    assert from_minor_units(500, "MGA", STRIPE_EXPONENTS) == Decimal("500")
    assert from_minor_units(500, "MGA") == Decimal("5.00")
