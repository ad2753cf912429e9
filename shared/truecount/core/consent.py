"""Consent gating per destination: pure.

Each destination declares the consent types it needs (``required_consent``) and
what an ``unknown`` value counts as (``unknown_consent``). An event that lacks a
needed grant is not sent there; it is recorded as skipped with a reason such as
``consent:ad_user_data=denied``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from truecount.models.event import Consent


def consent_block_reason(
    consent: Consent,
    required: Iterable[str],
    unknown: Literal["deny", "allow"] = "deny",
) -> str | None:
    """Say why an event may not go to a destination, or None when it may.

    Args:
        consent: the event's consent state.
        required: the consent types the destination needs granted.
        unknown: what an ``unknown`` value counts as for this destination.

    Returns:
        ``None`` when every required type is granted (or unknown and allowed);
        otherwise ``consent:<type>=<value>[,<type>=<value>...]`` listing each
        type that blocks, in the order given.
    """
    blocked: list[str] = []
    for kind in required:
        value = getattr(consent, kind)
        if value == "granted" or (value == "unknown" and unknown == "allow"):
            continue
        blocked.append(f"{kind}={value}")
    if not blocked:
        return None
    return "consent:" + ",".join(blocked)
