"""Consent gating per destination."""

from __future__ import annotations

from truecount.core.consent import consent_block_reason
from truecount.models.event import Consent


def test_granted_consent_lets_the_event_through() -> None:
    """Every required type granted: no reason to block."""
    consent = Consent(ad_storage="granted", ad_user_data="granted")

    assert consent_block_reason(consent, ("ad_storage", "ad_user_data")) is None


def test_denied_consent_names_the_type_and_value() -> None:
    """A denied type blocks with ``consent:<type>=denied``."""
    consent = Consent(ad_storage="granted", ad_user_data="denied")

    reason = consent_block_reason(consent, ("ad_storage", "ad_user_data"))

    assert reason == "consent:ad_user_data=denied"


def test_unknown_consent_blocks_by_default() -> None:
    """Unknown counts as deny unless the destination allows it."""
    consent = Consent()

    assert (
        consent_block_reason(consent, ("ad_storage",)) == "consent:ad_storage=unknown"
    )


def test_unknown_consent_passes_when_the_destination_allows_it() -> None:
    """``unknown_consent = "allow"`` lets unknown through, but never denied."""
    consent = Consent(ad_storage="unknown", ad_user_data="denied")

    assert consent_block_reason(consent, ("ad_storage",), "allow") is None
    assert (
        consent_block_reason(consent, ("ad_storage", "ad_user_data"), "allow")
        == "consent:ad_user_data=denied"
    )


def test_every_blocking_type_is_listed_in_order() -> None:
    """Several blocking types are all named, in the destination's order."""
    consent = Consent(ad_storage="denied", analytics_storage="granted")

    reason = consent_block_reason(
        consent, ("ad_storage", "analytics_storage", "ad_user_data")
    )

    assert reason == "consent:ad_storage=denied,ad_user_data=unknown"


def test_no_requirement_never_blocks() -> None:
    """A destination that needs nothing accepts everything."""
    assert consent_block_reason(Consent(ad_storage="denied"), ()) is None
