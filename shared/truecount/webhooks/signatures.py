"""Webhook signature schemes: Stripe v1, HubSpot v1/v2/v3, Truecount CRM.

Pure functions over the raw request bytes: no clock (``now`` is an argument), no
environment, no SDK. Every comparison uses :func:`hmac.compare_digest`, and every
failure raises :class:`~truecount.errors.SignatureVerificationError` with a short
reason for the log (never echoed to the caller).

Stripe (``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]``) follows the
stripe-python algorithm: HMAC-SHA256 of ``"<t>.<body>"`` with the endpoint
secret, any ``v1`` may match, and only timestamps *older* than the tolerance are
rejected (the SDK accepts future ones). Several secrets are tried in turn, so a
rotation can hold the old and the new one.

HubSpot v3 (``X-HubSpot-Signature-v3``, ``X-HubSpot-Request-Timestamp`` in ms):
base64 HMAC-SHA256 of ``method + uri + body + timestamp``, where ``uri`` has the
percent-escapes of :data:`HUBSPOT_URI_DECODE` turned back into characters; the
timestamp must be within the window on both sides. v1 and v2 (hex SHA-256 of
the secret followed by the content) are provided for completeness.

Truecount CRM (``Truecount-Signature: t=<unix>,v1=<hex>`` and
``Truecount-Key-Id: <key id>``): hex HMAC-SHA256 of ``"<t>.<body>"`` with the
secret of the named key; the timestamp must be within the tolerance on both
sides.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence

from truecount.errors import ConfigError, SignatureVerificationError

STRIPE_SCHEME = "v1"
STRIPE_DEFAULT_TOLERANCE = 300
HUBSPOT_DEFAULT_TOLERANCE = 300
CRM_SCHEME = "v1"
CRM_DEFAULT_TOLERANCE = 300

#: Percent-escapes HubSpot decodes in the URI before signing (v3), lower-case keys.
HUBSPOT_URI_DECODE: Mapping[str, str] = {
    "%3a": ":",
    "%2f": "/",
    "%3f": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2a": "*",
    "%2c": ",",
    "%3b": ";",
}
_HUBSPOT_ESCAPE = re.compile("|".join(HUBSPOT_URI_DECODE), re.IGNORECASE)
_DIGITS = re.compile(r"^[1-9]\d{0,14}$")  # no leading zeros: str(int(t)) == t
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _hmac_sha256(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()


def _matches(expected: str, candidates: Iterable[str]) -> bool:
    """Constant-time check of every candidate (no early exit on the first hit)."""
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(expected.encode(), candidate.encode())
    return found


# --- Stripe -------------------------------------------------------------------


def _stripe_items(header: str) -> tuple[int, list[str]]:
    """Parse ``t`` and the ``v1`` values the way stripe-python does."""
    items = [part.split("=", 2) for part in header.split(",")]
    try:
        timestamp = int(next(item[1] for item in items if item[0] == "t"))
        signatures = [item[1] for item in items if item[0] == STRIPE_SCHEME]
    except (StopIteration, IndexError, ValueError):
        raise SignatureVerificationError("malformed Stripe-Signature") from None
    if not signatures:
        raise SignatureVerificationError("no v1 signature in Stripe-Signature")
    return timestamp, signatures


def stripe_signature(payload: bytes, secret: str, timestamp: int) -> str:
    """Compute the hex ``v1`` signature Stripe sends for a body.

    Args:
        payload: the raw body bytes.
        secret: the endpoint secret (``whsec_...``).
        timestamp: unix seconds (``t``).

    Returns:
        Lower-case hex HMAC-SHA256 of ``"<t>.<body>"``.
    """
    return _hmac_sha256(secret, b"%d." % timestamp + payload).hex()


def stripe_signature_header(payload: bytes, secret: str, timestamp: int) -> str:
    """Build a ``Stripe-Signature`` header (tests, the local stack).

    Args:
        payload: the raw body bytes.
        secret: the endpoint secret.
        timestamp: unix seconds.

    Returns:
        ``t=<timestamp>,v1=<hex>``.
    """
    return f"t={timestamp},v1={stripe_signature(payload, secret, timestamp)}"


def verify_stripe(
    payload: bytes,
    header: str | None,
    secrets: Iterable[str],
    now: float,
    tolerance: int = STRIPE_DEFAULT_TOLERANCE,
) -> int:
    """Verify a ``Stripe-Signature`` header against the raw body.

    Equivalent to ``stripe.WebhookSignature.verify_header`` for each secret: the
    signature is checked first, then the age (``t < now - tolerance`` fails;
    a future ``t`` is accepted, as the SDK does; ``tolerance=0`` turns the age
    check off).

    Args:
        payload: the raw body bytes, exactly as received.
        header: the ``Stripe-Signature`` value, or None when absent.
        secrets: the endpoint secrets in force (several during a rotation).
        now: the current unix time in seconds.
        tolerance: the maximum age in seconds.

    Returns:
        The signed timestamp ``t``.

    Raises:
        SignatureVerificationError: missing, malformed, wrong or stale.
    """
    if not header:
        raise SignatureVerificationError("missing Stripe-Signature")
    keys = [s for s in secrets if s.strip()]
    if not keys:
        raise SignatureVerificationError("no Stripe signing secret configured")
    timestamp, signatures = _stripe_items(header)
    ok = False
    for secret in keys:
        ok |= _matches(stripe_signature(payload, secret, timestamp), signatures)
    if not ok:
        raise SignatureVerificationError("no matching v1 signature")
    if tolerance and timestamp < now - tolerance:
        raise SignatureVerificationError("Stripe-Signature timestamp too old")
    return timestamp


# --- HubSpot ------------------------------------------------------------------


def decode_hubspot_uri(uri: str) -> str:
    """Turn the percent-escapes HubSpot decodes back into characters.

    Args:
        uri: the full URL HubSpot called, as sent.

    Returns:
        The URL with ``%3A``, ``%2F``, ... (either case) decoded; any other
        escape is kept.
    """
    return _HUBSPOT_ESCAPE.sub(lambda m: HUBSPOT_URI_DECODE[m.group(0).lower()], uri)


def hubspot_v1_signature(secret: str, payload: bytes) -> str:
    """HubSpot v1: hex SHA-256 of ``secret + body`` (no timestamp, legacy).

    Args:
        secret: the app's client secret.
        payload: the raw body bytes.

    Returns:
        Lower-case hex digest.
    """
    return hashlib.sha256(secret.encode("utf-8") + payload).hexdigest()


def hubspot_v2_signature(secret: str, method: str, uri: str, payload: bytes) -> str:
    """HubSpot v2: hex SHA-256 of ``secret + method + uri + body`` (legacy).

    Args:
        secret: the app's client secret.
        method: the HTTP method, e.g. ``GET``.
        uri: the full URL, exactly as called.
        payload: the raw body bytes (empty for GET).

    Returns:
        Lower-case hex digest.
    """
    head = (secret + method.upper() + uri).encode("utf-8")
    return hashlib.sha256(head + payload).hexdigest()


def hubspot_v3_signature(
    secret: str, method: str, uri: str, payload: bytes, timestamp: str
) -> str:
    """HubSpot v3: base64 HMAC-SHA256 of ``method + uri + body + timestamp``.

    Args:
        secret: the app's client secret.
        method: the HTTP method, e.g. ``POST``.
        uri: the full URL HubSpot called; the decode table is applied here.
        payload: the raw body bytes.
        timestamp: the ``X-HubSpot-Request-Timestamp`` value, as sent.

    Returns:
        The base64 signature.
    """
    head = (method.upper() + decode_hubspot_uri(uri)).encode("utf-8")
    message = head + payload + timestamp.encode("utf-8")
    return base64.b64encode(_hmac_sha256(secret, message)).decode("ascii")


def verify_hubspot_v3(
    *,
    method: str,
    uri: str,
    payload: bytes,
    signature: str | None,
    timestamp: str | None,
    secret: str | Sequence[str],
    now: float,
    tolerance: int = HUBSPOT_DEFAULT_TOLERANCE,
) -> int:
    """Verify ``X-HubSpot-Signature-v3``.

    Args:
        method: the HTTP method.
        uri: the public URL HubSpot called (scheme, host, path, query).
        payload: the raw body bytes.
        signature: the ``X-HubSpot-Signature-v3`` value, or None.
        timestamp: the ``X-HubSpot-Request-Timestamp`` value (ms), or None.
        secret: the app's client secret, or several while one is rotated (the
            signature must match one of them).
        now: the current unix time in seconds.
        tolerance: the window in seconds, applied on both sides.

    Returns:
        The timestamp in milliseconds.

    Raises:
        SignatureVerificationError: missing, malformed, wrong, stale or future.
    """
    if not signature or not timestamp:
        raise SignatureVerificationError("missing HubSpot v3 signature headers")
    secrets = [secret] if isinstance(secret, str) else [s for s in secret if s]
    if not any(secrets):
        raise SignatureVerificationError("no HubSpot client secret configured")
    if not _DIGITS.match(timestamp):
        raise SignatureVerificationError("malformed X-HubSpot-Request-Timestamp")
    millis = int(timestamp)
    if abs(now * 1000 - millis) > tolerance * 1000:
        raise SignatureVerificationError("HubSpot timestamp outside the window")
    given = [signature.strip()]
    if not any(
        _matches(hubspot_v3_signature(key, method, uri, payload, timestamp), given)
        for key in secrets
    ):
        raise SignatureVerificationError("HubSpot v3 signature mismatch")
    return millis


# --- Truecount CRM --------------------------------------------------------------


def parse_crm_keys(raw: Iterable[str]) -> dict[str, str]:
    """Parse ``key_id:secret`` entries (``TRUECOUNT_CRM_KEYS``, comma-separated).

    Args:
        raw: the entries, already split on commas and trimmed.

    Returns:
        ``{key_id: secret}``.

    Raises:
        ConfigError: an entry is not ``key_id:secret`` or a key id repeats. The
            message names the entry's position, never the secret.
    """
    keys: dict[str, str] = {}
    for index, entry in enumerate(raw):
        key_id, sep, secret = entry.partition(":")
        key_id, secret = key_id.strip(), secret.strip()
        if not sep or not _KEY_ID.match(key_id) or not secret:
            raise ConfigError(f"CRM key #{index + 1}: expected key_id:secret")
        if key_id in keys:
            raise ConfigError(f"CRM key #{index + 1}: duplicate key id {key_id!r}")
        keys[key_id] = secret
    return keys


def crm_signature(payload: bytes, secret: str, timestamp: int) -> str:
    """Compute the hex ``v1`` CRM signature.

    Args:
        payload: the raw body bytes.
        secret: the key's secret.
        timestamp: unix seconds.

    Returns:
        Lower-case hex HMAC-SHA256 of ``"<t>.<body>"``.
    """
    return _hmac_sha256(secret, b"%d." % timestamp + payload).hex()


def crm_signature_header(payload: bytes, secret: str, timestamp: int) -> str:
    """Build a ``Truecount-Signature`` header for a body.

    Args:
        payload: the raw body bytes.
        secret: the key's secret.
        timestamp: unix seconds.

    Returns:
        ``t=<timestamp>,v1=<hex>``.
    """
    return f"t={timestamp},v1={crm_signature(payload, secret, timestamp)}"


def verify_crm(
    payload: bytes,
    header: str | None,
    *,
    key_id: str | None,
    keys: Mapping[str, str],
    now: float,
    tolerance: int = CRM_DEFAULT_TOLERANCE,
) -> int:
    """Verify ``Truecount-Signature`` with the key named by ``Truecount-Key-Id``.

    Args:
        payload: the raw body bytes.
        header: ``t=<unix>,v1=<hex>[,v1=<hex>]``, or None.
        key_id: the ``Truecount-Key-Id`` value, or None.
        keys: ``{key_id: secret}``.
        now: the current unix time in seconds.
        tolerance: the window in seconds, applied on both sides.

    Returns:
        The signed timestamp.

    Raises:
        SignatureVerificationError: missing, unknown key, malformed, wrong,
            stale or future.
    """
    if not header or not key_id:
        raise SignatureVerificationError("missing Truecount-Signature or key id")
    secret = keys.get(key_id.strip())
    if secret is None:
        raise SignatureVerificationError("unknown Truecount-Key-Id")
    stamps: list[str] = []
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureVerificationError("malformed Truecount-Signature")
        if name == "t":
            stamps.append(value.strip())
        elif name == CRM_SCHEME:
            signatures.append(value.strip())
    if len(stamps) != 1 or not _DIGITS.match(stamps[0]) or not signatures:
        raise SignatureVerificationError("malformed Truecount-Signature")
    timestamp = int(stamps[0])
    if abs(now - timestamp) > tolerance:
        raise SignatureVerificationError("Truecount-Signature outside the window")
    if not _matches(crm_signature(payload, secret, timestamp), signatures):
        raise SignatureVerificationError("Truecount-Signature mismatch")
    return timestamp
