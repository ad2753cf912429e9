"""PII normalisation and SHA-256 hashing, per platform (reference/SPECS.md).

Pure functions: no I/O, no clock, no environment. ``ingest`` and ``webhook`` call
:func:`hash_identity` once per event; raw values never travel further.

Each ``normalize_*`` function returns the normalised text, or ``None`` when the input
is not a usable value (empty, junk, implausible). Every normaliser is idempotent:
``f(f(x)) == f(x)``. Hashes are lower-case hex SHA-256 of the UTF-8 bytes.

Per platform:

* Email, Meta / LinkedIn / TikTok: trim and lower-case (``email_sha256``).
* Email, Google (GA4 MP, Google Ads): also drop every ``.`` in the local part of
  ``gmail.com`` / ``googlemail.com`` addresses (``email_sha256_google``).
* Phone, Meta: digits only, with the country code, no ``+``, no leading ``00``
  (``phone_sha256``). Google and TikTok: E.164 with ``+`` (``phone_sha256_e164``).
* Names: trim, lower-case, strip punctuation; Unicode letters are kept (``joão``).
* City and region (Meta): lower-case, keep letters only (``sanfrancisco``).
* Postal code (Meta): lower-case, no spaces, only the part before ``-``.
* Country: ISO 3166-1 alpha-2, lower-case.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, ValidationError

from truecount.errors import InvalidPayload
from truecount.models.event import Event, Identity, error_fields

_Normalizer = Callable[[str], str | None]

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")

# A whole value that is one email address. Local part: no whitespace, no '@', no
# quotes or brackets. Domain: dot-separated labels, a final label of >= 2 letters.
_EMAIL = re.compile(
    r"^[^\s@\"'<>()\[\],;:]+@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}$"
)
# An email address anywhere inside a longer text (params, log lines).
_EMAIL_IN_TEXT = re.compile(r"[\w.%+'-]+@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}")
_EMAIL_MAX = 254
_LEAD_ID_MAX = 128
_GOOGLE_MAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})

_PHONE_ALLOWED = re.compile(r"^[\d\s+\-().\/]+$")
# "+44 (0)20 ...": the bracketed trunk 0 is not dialled with the country code.
_BRACKETED_TRUNK = re.compile(r"\(\s*0\s*\)")
_PHONE_MIN_DIGITS = 7
_PHONE_MAX_DIGITS = 15  # E.164
# Calling codes where the leading 0 of a national number is part of the number,
# not a trunk prefix (Italy, San Marino, Vatican City).
_KEEP_LEADING_ZERO = frozenset({"39", "378", "379"})
_NANP = "1"
_NANP_NATIONAL_DIGITS = 10


def sha256_hex(value: str) -> str:
    """Hash a normalised value.

    Args:
        value: the normalised text.

    Returns:
        Lower-case hex SHA-256 of the UTF-8 bytes.
    """
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def is_sha256(value: str) -> bool:
    """Tell whether a value is already a SHA-256 hex digest (either case).

    Args:
        value: any text.

    Returns:
        True for exactly 64 hex digits, ignoring surrounding whitespace.
    """
    return bool(_SHA256.match(value.strip()))


def _text(raw: str | None) -> str:
    """NFC-normalised, trimmed text; '' for None."""
    if raw is None:
        return ""
    return unicodedata.normalize("NFC", raw).strip()


def _nfc(value: str) -> str:
    """NFC again: dropping a character can leave a mark to recombine."""
    return unicodedata.normalize("NFC", value)


def normalize_email(raw: str) -> str | None:
    """Normalise an email the way Meta, LinkedIn and TikTok expect.

    Args:
        raw: the address as entered.

    Returns:
        The trimmed, lower-cased address, or None if it is not an email address.
    """
    value = _nfc(_text(raw).lower())
    if len(value) > _EMAIL_MAX or not _EMAIL.match(value):
        return None
    return value


def normalize_email_google(raw: str) -> str | None:
    """Normalise an email the way GA4 (Measurement Protocol) and Google Ads expect.

    As :func:`normalize_email`, and for ``gmail.com`` / ``googlemail.com`` the dots
    in the local part are removed (``john.smith@gmail.com`` -> ``johnsmith@...``).

    Args:
        raw: the address as entered.

    Returns:
        The normalised address, or None if it is not an email address.
    """
    value = normalize_email(raw)
    if value is None:
        return None
    local, _, domain = value.rpartition("@")
    if domain in _GOOGLE_MAIL_DOMAINS:
        local = local.replace(".", "")
        if not local:
            return None
    return f"{local}@{domain}"


def _calling_code(default_country: str | None) -> str | None:
    if default_country is None:
        return None
    code = default_country.strip().removeprefix("+")
    if not (code.isascii() and code.isdigit()) or not 1 <= len(code) <= 3:
        return None
    if code.startswith("0"):
        return None
    return code


def _phone_digits(raw: str, default_country: str | None) -> str | None:
    """Digits with the country code and no '+', or None."""
    text = _text(raw)
    if not text or not _PHONE_ALLOWED.match(text):
        return None
    text = _BRACKETED_TRUNK.sub("", text)
    # Any script's decimal digits (e.g. Arabic-Indic) become ASCII digits.
    digits = "".join(str(unicodedata.decimal(ch)) for ch in text if ch.isdecimal())
    if text.startswith("+"):
        number = digits
    elif digits.startswith("00"):
        number = digits[2:]
    else:
        code = _calling_code(default_country)
        if code is None and default_country is not None:
            return None
        if code is None:
            # No country marker and no default: Meta's rule is that the value
            # already includes the country code. A leading 0 is a national
            # trunk prefix, so the country is unknown.
            number = digits
        elif code == _NANP:
            # NANP numbers are 10 digits; a leading 1 is the trunk prefix.
            national = digits[1:] if digits.startswith(_NANP) else digits
            ok = len(national) == _NANP_NATIONAL_DIGITS
            number = _NANP + national if ok else ""
        else:
            national = digits if code in _KEEP_LEADING_ZERO else digits.lstrip("0")
            number = code + national if national else ""
    if not (_PHONE_MIN_DIGITS <= len(number) <= _PHONE_MAX_DIGITS):
        return None
    if number.startswith("0"):
        return None
    return number


def normalize_phone(raw: str, default_country: str | None = None) -> str | None:
    """Normalise a phone number the way Meta expects: digits with country code.

    A number written with ``+`` or a leading international ``00`` carries its
    country code. Otherwise ``default_country`` (a calling code such as ``"1"`` or
    ``"44"``) is prepended after dropping the national trunk ``0``; for NANP
    (``"1"``) the number must have 10 digits after an optional leading ``1``.
    Without a default, the digits are taken to include the country code.

    Args:
        raw: the number as entered, e.g. ``"(650) 555-1212"``.
        default_country: calling code for numbers written without one.

    Returns:
        e.g. ``"16505551212"``, or None if it cannot be a phone number (letters,
        fewer than 7 or more than 15 digits, unknown country).
    """
    return _phone_digits(raw, default_country)


def normalize_phone_e164(raw: str, default_country: str | None = None) -> str | None:
    """Normalise a phone number to E.164 (Google, TikTok): ``+`` and digits.

    Args:
        raw: the number as entered.
        default_country: calling code for numbers written without one.

    Returns:
        e.g. ``"+16505551212"``, or None (see :func:`normalize_phone`).
    """
    digits = _phone_digits(raw, default_country)
    return None if digits is None else f"+{digits}"


def _letters_only(raw: str | None) -> str | None:
    value = "".join(
        ch for ch in _text(raw).lower() if unicodedata.category(ch)[0] in "LM"
    )
    return _nfc(value) or None


def normalize_name(raw: str) -> str | None:
    """Normalise a first or last name: trim, lower-case, strip punctuation.

    Unicode letters are kept (``"João"`` -> ``"joão"``), in NFC form; inner
    whitespace collapses to one space; digits, punctuation and symbols go.

    Args:
        raw: the name as entered.

    Returns:
        The normalised name, or None if nothing is left.
    """
    kept = []
    for ch in _text(raw).lower():
        if unicodedata.category(ch)[0] in "LM":
            kept.append(ch)
        elif ch.isspace():
            kept.append(" ")
    value = " ".join(_nfc("".join(kept)).split())
    return value or None


def normalize_city(raw: str) -> str | None:
    """Normalise a city (Meta ``ct``): lower-case, letters only.

    Args:
        raw: e.g. ``"San Francisco"``.

    Returns:
        e.g. ``"sanfrancisco"``, or None if no letters are left.
    """
    return _letters_only(raw)


def normalize_region(raw: str) -> str | None:
    """Normalise a state or region (Meta ``st``): lower-case, letters only.

    Args:
        raw: e.g. ``"CA"``.

    Returns:
        e.g. ``"ca"``, or None if no letters are left.
    """
    return _letters_only(raw)


def normalize_postal_code(raw: str) -> str | None:
    """Normalise a postal code (Meta ``zp``).

    Lower-case, whitespace and punctuation removed, only the part before a ``-``
    kept (``"94035-1234"`` -> ``"94035"``, ``"M1 1AE"`` -> ``"m11ae"``).

    Args:
        raw: the postal code as entered.

    Returns:
        The normalised code, or None if nothing is left.
    """
    head = _text(raw).split("-", 1)[0].lower()
    value = _nfc("".join(ch for ch in head if ch.isalnum()))
    return value or None


def normalize_country(raw: str) -> str | None:
    """Normalise a country to a lower-case ISO 3166-1 alpha-2 code.

    Args:
        raw: e.g. ``" US "``.

    Returns:
        e.g. ``"us"``, or None unless exactly two ASCII letters remain.
    """
    value = "".join(ch for ch in _text(raw).lower() if "a" <= ch <= "z")
    return value if len(value) == 2 else None


def normalize_external_id(raw: str) -> str | None:
    """Normalise your own user or customer id: trimmed, case kept.

    Args:
        raw: the id.

    Returns:
        The trimmed id, or None if empty.
    """
    value = _text(raw)
    return value or None


class RawIdentity(BaseModel):
    """Raw identifiers as an edge receives them. Never published or logged."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    city: str | None = None
    region: str | None = None
    postal_code: str | None = None
    country: str | None = None
    external_id: str | None = None
    lead_id: str | None = None
    phone_default_country: str | None = None


def _hashed(raw: str | None, normalize: _Normalizer) -> str | None:
    """Pass a 64-hex digest through (lower-cased), else normalise and hash."""
    if raw is None:
        return None
    if is_sha256(raw):
        return raw.strip().lower()
    value = normalize(raw)
    return None if value is None else sha256_hex(value)


def hash_identity(raw: RawIdentity) -> Identity:
    """Normalise and hash every raw identifier into the canonical ``Identity``.

    A value that is already a SHA-256 digest passes through lower-cased, so a
    sender may hash on its side. A hashed email fills both email fields and a
    hashed phone both phone fields: which variant the sender hashed cannot be
    told, and for most addresses the two agree. Values that do not normalise
    (junk, an invalid email) are dropped, never hashed. ``lead_id`` is a CRM id,
    not PII, and is kept as is (trimmed).

    Args:
        raw: raw identifiers from a request or webhook.

    Returns:
        The hashed identity.

    Raises:
        InvalidPayload: ``lead_id`` is longer than 128 characters.
    """
    country = raw.phone_default_country

    def phone(value: str) -> str | None:
        return normalize_phone(value, country)

    def phone_e164(value: str) -> str | None:
        return normalize_phone_e164(value, country)

    lead_id = _text(raw.lead_id) or None
    if lead_id is not None and len(lead_id) > _LEAD_ID_MAX:
        message = f"lead_id is longer than {_LEAD_ID_MAX} characters"
        raise InvalidPayload(message, [{"path": "lead_id", "message": message}])
    return Identity(
        email_sha256=_hashed(raw.email, normalize_email),
        email_sha256_google=_hashed(raw.email, normalize_email_google),
        phone_sha256=_hashed(raw.phone, phone),
        phone_sha256_e164=_hashed(raw.phone, phone_e164),
        first_name_sha256=_hashed(raw.first_name, normalize_name),
        last_name_sha256=_hashed(raw.last_name, normalize_name),
        city_sha256=_hashed(raw.city, normalize_city),
        region_sha256=_hashed(raw.region, normalize_region),
        postal_code_sha256=_hashed(raw.postal_code, normalize_postal_code),
        country_sha256=_hashed(raw.country, normalize_country),
        external_id=_hashed(raw.external_id, normalize_external_id),
        lead_id=lead_id,
    )


def looks_like_email(value: str) -> bool:
    """Tell whether a text contains an email address, also URL-encoded (``%40``).

    Args:
        value: any text, e.g. a parameter value or a URL.

    Returns:
        True if an email address appears anywhere in it.
    """
    return find_email(value) is not None


def find_email(value: str) -> str | None:
    """Return the first email address inside a text, or None.

    Args:
        value: any text; URL-encoded forms are decoded first.

    Returns:
        The address as written (not normalised).
    """
    if "@" not in value and "%40" not in value.lower():
        return None
    for text in (value, unquote(value)):
        match = _EMAIL_IN_TEXT.search(text)
        if match:
            return match.group(0)
    return None


def scrub_params(
    params: dict[str, str | int | float],
) -> tuple[dict[str, str | int | float], str | None]:
    """Drop every parameter whose value contains an email address.

    Sites put raw emails in event parameters; ingest must not forward them. The
    first address found is returned, so the caller can hash it into ``identity``.

    Args:
        params: event parameters.

    Returns:
        ``(clean_params, first_email_or_None)``; the input is not modified.
    """
    clean: dict[str, str | int | float] = {}
    first: str | None = None
    for key, value in params.items():
        found = find_email(value) if isinstance(value, str) else None
        if found is None:
            clean[key] = value
        elif first is None:
            first = found
    return clean, first


# --- the last line of defence before anything leaves ingest or webhook ---------

_ENCODED_AT = ("%40", "%2540")
#: the sections that hold hashes or fixed vocabularies, not free text
_SWEEP_SKIP = frozenset({"identity", "consent"})


def _has_at(text: str) -> bool:
    if "@" in text:
        return True
    lower = text.lower()
    return any(mark in lower for mark in _ENCODED_AT)


def _email_token(address: str) -> str:
    normal = normalize_email(address) or address.strip().lower()
    return "em_" + sha256_hex(normal)[:16]


def redact_emails(text: str) -> tuple[str, str | None]:
    """Replace every email address in a text with a stable token.

    Addresses written plainly or URL-encoded (once or twice) are found; the text
    is decoded only when it holds one. The token is ``em_`` and 16 hex digits of
    the SHA-256 of the normalised address, so the same address always gives the
    same token: an order id that is an email still dedups across sources.

    Args:
        text: any text.

    Returns:
        ``(text without addresses, first address found or None)``.
    """
    if not _has_at(text):
        return text, None
    decoded = text
    for _ in range(3):
        if "%" not in decoded:
            break
        decoded = unquote(decoded)
    found: list[str] = []

    def token(match: re.Match[str]) -> str:
        found.append(match.group(0))
        return _email_token(match.group(0))

    cleaned = _EMAIL_IN_TEXT.sub(token, decoded)
    if not found:
        return text, None
    return cleaned, found[0]


def _sweep(value: Any, found: list[str]) -> Any:
    if isinstance(value, str):
        cleaned, first = redact_emails(value)
        if first is not None:
            found.append(first)
        return cleaned
    if isinstance(value, dict):
        return {key: _sweep(item, found) for key, item in value.items()}
    if isinstance(value, list):
        return [_sweep(item, found) for item in value]
    return value


def sweep_event(event: Event) -> Event:
    """Remove every raw email address left anywhere in a canonical event.

    Sources hash the fields they know (``user_data``, params that hold an
    address). This catches the rest before a message leaves the function: an
    address in a transaction id, a page URL, a cookie value, an item name or the
    dedup key is replaced by a stable token (:func:`redact_emails`), and the first
    one found is hashed into ``identity`` when the event has no email hash yet.

    Args:
        event: a canonical event.

    Returns:
        The same event when it holds no address, else a cleaned copy.
    """
    raw = event.model_dump()
    found: list[str] = []
    cleaned = {
        key: value if key in _SWEEP_SKIP else _sweep(value, found)
        for key, value in raw.items()
    }
    lead_id = event.identity.lead_id
    if lead_id is not None:
        cleaned["identity"]["lead_id"] = _sweep(lead_id, found)
    if not found:
        return event
    hashed = hash_identity(RawIdentity(email=found[0]))
    identity = cleaned["identity"]
    for name in ("email_sha256", "email_sha256_google"):
        if identity.get(name) is None:
            identity[name] = getattr(hashed, name)
    try:
        return Event.model_validate(cleaned)
    except ValidationError as exc:  # a token longer than the address it replaced
        raise InvalidPayload(
            "a field holding an email address is too long once the address is removed",
            error_fields(exc.errors()),
        ) from None
