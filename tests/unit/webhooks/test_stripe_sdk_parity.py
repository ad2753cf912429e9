"""Our Stripe verifier agrees with ``stripe.WebhookSignature.verify_header``.

Needs the ``stripe`` package (a dev dependency, used only here).
"""

from __future__ import annotations

import time

import pytest

from truecount.errors import SignatureVerificationError
from truecount.webhooks.signatures import stripe_signature, verify_stripe

stripe = pytest.importorskip("stripe")

SECRET = "whsec_parity_secret"
OTHER = "whsec_parity_other"
BODY = b'{\n  "id": "evt_parity",\n  "object": "event",\n  "data": {"x": "\xc3\xa9"}\n}'


def _sdk_accepts(body: bytes, header: str, secret: str, tolerance: int) -> bool:
    try:
        stripe.WebhookSignature.verify_header(body, header, secret, tolerance)
    except stripe.SignatureVerificationError:
        return False
    return True


def _ours_accepts(body: bytes, header: str, secrets: list[str], tolerance: int) -> bool:
    try:
        verify_stripe(body, header, secrets, time.time(), tolerance)
    except SignatureVerificationError:
        return False
    return True


def _cases(now: int) -> list[tuple[str, bytes, str, str]]:
    good = stripe_signature(BODY, SECRET, now)
    other = stripe_signature(BODY, OTHER, now)
    old = stripe_signature(BODY, SECRET, now - 3600)
    future = stripe_signature(BODY, SECRET, now + 3600)
    return [
        ("valid", BODY, f"t={now},v1={good}", SECRET),
        ("tampered", BODY.replace(b"parity", b"parit7"), f"t={now},v1={good}", SECRET),
        ("wrong-secret", BODY, f"t={now},v1={other}", SECRET),
        ("stale", BODY, f"t={now - 3600},v1={old}", SECRET),
        ("future", BODY, f"t={now + 3600},v1={future}", SECRET),
        ("multi-v1", BODY, f"t={now},v1={other},v1={good},v0={good}", SECRET),
        ("multi-v1-none", BODY, f"t={now},v1={other},v1={'0' * 64}", SECRET),
        ("v0-only", BODY, f"t={now},v0={good}", SECRET),
        ("no-t", BODY, f"v1={good}", SECRET),
        ("t-mismatch", BODY, f"t={now + 1},v1={good}", SECRET),
        ("bad-t", BODY, f"t=abc,v1={good}", SECRET),
        ("empty", BODY, "", SECRET),
    ]


@pytest.mark.parametrize("tolerance", [300, 0])
def test_verifier_agrees_with_stripe_sdk_on_each_case(tolerance: int) -> None:
    """Valid, tampered, wrong secret, stale, future and multi-v1 headers get the
    same verdict from our verifier and from the stripe SDK."""
    now = int(time.time())
    verdicts = {
        name: (
            _ours_accepts(body, header, [secret], tolerance),
            _sdk_accepts(body, header, secret, tolerance),
        )
        for name, body, header, secret in _cases(now)
    }
    mismatches = {name: v for name, v in verdicts.items() if v[0] != v[1]}
    assert mismatches == {}
    accepted = sorted(name for name, (ours, _) in verdicts.items() if ours)
    expected = ["future", "multi-v1", "valid"] + (["stale"] if tolerance == 0 else [])
    assert accepted == sorted(expected)


def test_rotation_accepts_what_the_sdk_accepts_with_either_secret() -> None:
    """With two secrets, ours accepts exactly when the SDK accepts one of them."""
    now = int(time.time())
    for signer in (SECRET, OTHER, "whsec_third"):
        header = f"t={now},v1={stripe_signature(BODY, signer, now)}"
        sdk = any(_sdk_accepts(BODY, header, s, 300) for s in (SECRET, OTHER))
        assert _ours_accepts(BODY, header, [SECRET, OTHER], 300) is sdk
        assert sdk is (signer != "whsec_third")


def test_sdk_generated_header_verifies_with_ours() -> None:
    """A header made by the SDK's own signer is accepted by our verifier."""
    now = int(time.time())
    header = stripe.WebhookSignature.generate_signature_header(
        BODY.decode("utf-8"), SECRET, now
    )
    assert verify_stripe(BODY, header, [SECRET], time.time()) == now
