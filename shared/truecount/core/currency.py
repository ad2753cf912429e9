"""ISO 4217 currencies and their minor-unit exponents.

Pure data and functions: no I/O. Used to validate ``currency`` on canonical events
and to convert provider amounts in minor units (Stripe) to exact decimals.
"""

from __future__ import annotations

from decimal import Decimal

# Active ISO 4217 codes whose minor unit is not 2. Everything else in CODES has 2.
_ZERO = frozenset(
    [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "ISK",
        "JPY",
        "KMF",
        "KRW",
        "PYG",
        "RWF",
        "UGX",
        "UYI",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
)
_THREE = frozenset(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"])
_FOUR = frozenset(["CLF", "UYW"])

CODES: frozenset[str] = frozenset(
    [
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BHD",
        "BIF",
        "BMD",
        "BND",
        "BOB",
        "BOV",
        "BRL",
        "BSD",
        "BTN",
        "BWP",
        "BYN",
        "BZD",
        "CAD",
        "CDF",
        "CHE",
        "CHF",
        "CHW",
        "CLF",
        "CLP",
        "CNY",
        "COP",
        "COU",
        "CRC",
        "CUC",
        "CUP",
        "CVE",
        "CZK",
        "DJF",
        "DKK",
        "DOP",
        "DZD",
        "EGP",
        "ERN",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GHS",
        "GIP",
        "GMD",
        "GNF",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "IQD",
        "IRR",
        "ISK",
        "JMD",
        "JOD",
        "JPY",
        "KES",
        "KGS",
        "KHR",
        "KMF",
        "KPW",
        "KRW",
        "KWD",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "LYD",
        "MAD",
        "MDL",
        "MGA",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MRU",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MXV",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "OMR",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "PYG",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "RWF",
        "SAR",
        "SBD",
        "SCR",
        "SDG",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SLL",
        "SOS",
        "SRD",
        "SSP",
        "STN",
        "SVC",
        "SYP",
        "SZL",
        "THB",
        "TJS",
        "TMT",
        "TND",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "UGX",
        "USD",
        "USN",
        "UYI",
        "UYU",
        "UYW",
        "UZS",
        "VED",
        "VES",
        "VND",
        "VUV",
        "WST",
        "XAF",
        "XAG",
        "XAU",
        "XCD",
        "XCG",
        "XDR",
        "XOF",
        "XPD",
        "XPF",
        "XPT",
        "XSU",
        "XUA",
        "YER",
        "ZAR",
        "ZMW",
        "ZWG",
        "ZWL",
    ]
)


def is_currency(code: str) -> bool:
    """Tell whether ``code`` is an active upper-case ISO 4217 code."""
    return code in CODES


def exponent(code: str) -> int:
    """Return the number of minor-unit digits of an ISO 4217 currency.

    Args:
        code: ISO 4217 code, any case.

    Returns:
        0, 2, 3 or 4.

    Raises:
        ValueError: the code is not an ISO 4217 currency.
    """
    upper = code.upper()
    if upper not in CODES:
        raise ValueError(f"unknown currency {code!r}")
    if upper in _ZERO:
        return 0
    if upper in _THREE:
        return 3
    if upper in _FOUR:
        return 4
    return 2


#: Stripe counts these currencies in other units than ISO 4217 says: ISK as a
#: two-decimal currency (amounts are multiples of 100) and MGA as zero-decimal.
STRIPE_EXPONENTS: dict[str, int] = {"ISK": 2, "MGA": 0}


def from_minor_units(
    amount: int, code: str, overrides: dict[str, int] | None = None
) -> Decimal:
    """Convert an integer amount in minor units to an exact decimal.

    ``from_minor_units(2100, "eur") == Decimal("21.00")``;
    ``from_minor_units(2100, "JPY") == Decimal("2100")``;
    ``from_minor_units(2100, "KWD") == Decimal("2.100")``.

    Args:
        amount: the integer amount in minor units.
        code: ISO 4217 code, any case.
        overrides: a provider's own exponents where they differ from ISO
            (``STRIPE_EXPONENTS``).
    """
    places = (overrides or {}).get(code.upper())
    if places is None:
        places = exponent(code)
    return Decimal(amount).scaleb(-places)
