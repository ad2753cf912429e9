"""Google Consent Mode v2 on the wire (SPECS §9): ``gcs``, ``gcd`` and friends.

Pure functions that turn the signals into the canonical :class:`Consent`:

* ``gcs`` (``G1`` + ad_storage + analytics_storage, each ``1``/``0``/``-``)
  gives the two storage types as they are on this hit;
* ``gcd`` (version char, then four digit+letter groups for ad_storage,
  analytics_storage, ad_user_data, ad_personalization) gives all four: each
  letter encodes a default and an update, and the effective value is the
  update when set, else the default;
* ``gcs`` wins over ``gcd`` for the storage types when both say something;
* ``npa=1`` (non-personalised ads) makes an otherwise unknown
  ``ad_personalization`` denied;
* no signal at all is ``unknown``, never ``granted``.

Also the plainer forms: the data tag's ``consent_state`` (``granted``,
``denied``, ``true``, ``false``) and the Measurement Protocol's ``GRANTED`` /
``DENIED``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from truecount.models.event import CONSENT_TYPES, Consent, ConsentValue

GCD_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
_GCD_STATE: dict[int, ConsentValue] = {2: "denied", 3: "granted"}
_GCS = re.compile(r"^G1([01-])([01-])$")
_RAW_GCS = re.compile(r"^[A-Za-z0-9-]{1,16}$")
_RAW_GCD = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TRUE = frozenset({"granted", "true", "1", "yes"})
_FALSE = frozenset({"denied", "false", "0", "no"})


def parse_gcs(gcs: str | None) -> dict[str, ConsentValue]:
    """Decode ``gcs``.

    Args:
        gcs: e.g. ``G111``; None or malformed gives no signal.

    Returns:
        ``ad_storage`` and ``analytics_storage``, each granted/denied/unknown.
    """
    match = _GCS.match(gcs.strip()) if gcs else None
    if not match:
        return {"ad_storage": "unknown", "analytics_storage": "unknown"}
    states: dict[str, ConsentValue] = {"1": "granted", "0": "denied", "-": "unknown"}
    return {
        "ad_storage": states[match.group(1)],
        "analytics_storage": states[match.group(2)],
    }


def decode_gcd_letter(letter: str) -> tuple[ConsentValue, ConsentValue]:
    """Decode one ``gcd`` letter into its (default, update) states.

    Args:
        letter: one character of the base-64-url alphabet.

    Returns:
        ``(default, update)``, each granted/denied/unknown ("not set").
    """
    index = GCD_ALPHABET.find(letter) if len(letter) == 1 else -1
    if index < 0:
        return "unknown", "unknown"
    default = _GCD_STATE.get((index >> 2) & 3, "unknown")
    update = _GCD_STATE.get(index & 3, "unknown")
    return default, update


def parse_gcd(gcd: str | None) -> dict[str, ConsentValue]:
    """Decode ``gcd`` into the effective state of the four consent types.

    Args:
        gcd: e.g. ``13t3t3t3t5l1``; None or malformed gives no signal.

    Returns:
        The four types, each granted/denied/unknown (update, else default).
    """
    out: dict[str, ConsentValue] = dict.fromkeys(CONSENT_TYPES, "unknown")
    if not gcd or not _RAW_GCD.match(gcd.strip()):
        return out
    letters = [c for c in gcd.strip()[1:] if c.isascii() and c.isalpha()][:4]
    for name, letter in zip(CONSENT_TYPES, letters, strict=False):
        default, update = decode_gcd_letter(letter)
        out[name] = update if update != "unknown" else default
    return out


def from_consent_mode(
    gcs: str | None, gcd: str | None, npa: str | None = None
) -> Consent:
    """Build the canonical consent from a GA4 hit's consent parameters.

    Args:
        gcs: the raw ``gcs`` parameter.
        gcd: the raw ``gcd`` parameter.
        npa: the raw ``npa`` parameter (``1`` = non-personalised ads).

    Returns:
        The consent, with the raw ``gcs``/``gcd`` kept for audit when well formed.
    """
    state = parse_gcd(gcd)
    for name, value in parse_gcs(gcs).items():
        if value != "unknown":
            state[name] = value
    if (
        npa is not None
        and npa.strip() == "1"
        and state["ad_personalization"] == ("unknown")
    ):
        state["ad_personalization"] = "denied"
    raw_gcs = gcs.strip() if gcs and _RAW_GCS.match(gcs.strip()) else None
    raw_gcd = gcd.strip() if gcd and _RAW_GCD.match(gcd.strip()) else None
    return Consent(
        ad_storage=state["ad_storage"],
        analytics_storage=state["analytics_storage"],
        ad_user_data=state["ad_user_data"],
        ad_personalization=state["ad_personalization"],
        gcs=raw_gcs,
        gcd=raw_gcd,
    )


def consent_value(value: Any) -> ConsentValue:
    """One consent flag from JSON: ``granted``/``denied``, booleans, 1/0.

    Args:
        value: a JSON value (any case for strings).

    Returns:
        granted, denied, or unknown for anything else.
    """
    if isinstance(value, bool):
        return "granted" if value else "denied"
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return "granted"
        if text in _FALSE:
            return "denied"
    return "unknown"


def from_flags(flags: Mapping[str, Any] | None) -> Consent:
    """Build the canonical consent from a flat mapping of consent types.

    Used for the data tag's ``consent_state`` and the Measurement Protocol's
    ``consent`` object. Unknown keys are ignored.

    Args:
        flags: e.g. ``{"ad_storage": "granted", "ad_user_data": false}``.

    Returns:
        The consent; types not named are unknown.
    """
    source = flags or {}
    return Consent(
        ad_storage=consent_value(source.get("ad_storage")),
        analytics_storage=consent_value(source.get("analytics_storage")),
        ad_user_data=consent_value(source.get("ad_user_data")),
        ad_personalization=consent_value(source.get("ad_personalization")),
    )
