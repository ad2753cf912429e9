"""Signature schemes: Stripe v1, HubSpot v1/v2/v3, Truecount CRM."""

from __future__ import annotations

import pytest

from truecount.errors import ConfigError, SignatureVerificationError
from truecount.webhooks.signatures import (
    crm_signature,
    crm_signature_header,
    decode_hubspot_uri,
    hubspot_v1_signature,
    hubspot_v2_signature,
    hubspot_v3_signature,
    parse_crm_keys,
    stripe_signature,
    stripe_signature_header,
    verify_crm,
    verify_hubspot_v3,
    verify_stripe,
)

NOW = 1_700_000_100
STRIPE_SECRET = "whsec_test_secret"
BODY = b'{"id":"evt_1","object":"event","type":"checkout.session.completed"}'
HUBSPOT_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
HUBSPOT_V1_BODY = (
    b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
    b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,'
    b'"changeSource":"CRM","changeFlag":"NEW","appId":54321}]'
)
CRM_KEYS = {"k1": "crm-secret-one", "k2": "crm-secret-two"}


# --- Appendix B vectors ----------------------------------------------------------


def test_stripe_v1_matches_appendix_b_vector() -> None:
    """The Stripe v1 signature of the SPECS vector is the published digest."""
    assert (
        stripe_signature(BODY, STRIPE_SECRET, 1700000000)
        == "d1e4aa90551919f198c22ba0a9691b35338d4b631d54ce1f1465e93b1d41c430"
    )


def test_hubspot_v1_matches_appendix_b_vector() -> None:
    """HubSpot v1 (secret + body) reproduces the official doc example."""
    assert (
        hubspot_v1_signature(HUBSPOT_SECRET, HUBSPOT_V1_BODY)
        == "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    )


def test_hubspot_v2_matches_appendix_b_vector() -> None:
    """HubSpot v2 (secret + method + uri + body) reproduces the doc example."""
    digest = hubspot_v2_signature(
        HUBSPOT_SECRET, "GET", "https://www.example.com/webhook_uri", b""
    )
    assert digest == "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"


def test_hubspot_v3_matches_appendix_b_vector() -> None:
    """HubSpot v3 reproduces the SPECS vector, and verify accepts it in the window."""
    uri = "https://example.com/webhooks/hubspot"
    expected = "v2xf0TxPJQEDgLAv/7oGPMHTkgq0XS6SxTzrpViUgtY="
    signature = hubspot_v3_signature(
        HUBSPOT_SECRET, "POST", uri, b'[{"eventId":1}]', "1700000000000"
    )
    millis = verify_hubspot_v3(
        method="POST",
        uri=uri,
        payload=b'[{"eventId":1}]',
        signature=expected,
        timestamp="1700000000000",
        secret=HUBSPOT_SECRET,
        now=1700000000.0 + 299,
    )
    assert signature == expected
    assert millis == 1700000000000


# --- Stripe ------------------------------------------------------------------


def test_stripe_valid_signature_returns_timestamp() -> None:
    """A correct header within the tolerance is accepted."""
    header = stripe_signature_header(BODY, STRIPE_SECRET, NOW - 10)
    assert verify_stripe(BODY, header, [STRIPE_SECRET], NOW) == NOW - 10


@pytest.mark.parametrize(
    ("body", "secrets", "t"),
    [
        pytest.param(BODY + b" ", [STRIPE_SECRET], NOW, id="tampered-body"),
        pytest.param(BODY, ["whsec_other"], NOW, id="wrong-secret"),
        pytest.param(BODY, [STRIPE_SECRET], NOW - 301, id="stale"),
    ],
)
def test_stripe_rejects_tampered_wrong_secret_and_stale(
    body: bytes, secrets: list[str], t: int
) -> None:
    """A changed body, another secret or an old timestamp fail verification."""
    header = stripe_signature_header(BODY, STRIPE_SECRET, t)
    with pytest.raises(SignatureVerificationError):
        verify_stripe(body, header, secrets, NOW, tolerance=300)


def test_stripe_accepts_future_timestamp_like_the_sdk() -> None:
    """The SDK only rejects old timestamps, so a future one passes."""
    header = stripe_signature_header(BODY, STRIPE_SECRET, NOW + 3600)
    assert verify_stripe(BODY, header, [STRIPE_SECRET], NOW) == NOW + 3600


def test_stripe_tolerance_zero_disables_age_check() -> None:
    """``tolerance=0`` accepts any age, as in the SDK."""
    header = stripe_signature_header(BODY, STRIPE_SECRET, 1000)
    assert verify_stripe(BODY, header, [STRIPE_SECRET], NOW, tolerance=0) == 1000


def test_stripe_accepts_when_one_of_several_v1_values_matches() -> None:
    """During a roll Stripe sends several v1 values; one correct is enough."""
    good = stripe_signature(BODY, STRIPE_SECRET, NOW)
    header = f"t={NOW},v1={'0' * 64},v1={good},v0={'1' * 64}"
    assert verify_stripe(BODY, header, [STRIPE_SECRET], NOW) == NOW


def test_stripe_rotation_accepts_either_configured_secret() -> None:
    """With two secrets configured, a header signed by either one passes."""
    for secret in ("whsec_old", "whsec_new"):
        header = stripe_signature_header(BODY, secret, NOW)
        assert verify_stripe(BODY, header, ["whsec_old", "whsec_new"], NOW) == NOW


@pytest.mark.parametrize(
    "header",
    [None, "", "v1=abc", f"t={NOW}", f"t=notanumber,v1={'0' * 64}", f"t={NOW},v0=ab"],
)
def test_stripe_rejects_missing_or_malformed_header(header: str | None) -> None:
    """No header, no t, no v1 or a non-numeric t all fail."""
    with pytest.raises(SignatureVerificationError):
        verify_stripe(BODY, header, [STRIPE_SECRET], NOW)


def test_stripe_rejects_when_no_secret_is_configured() -> None:
    """An empty secret list never verifies anything."""
    header = stripe_signature_header(BODY, "", NOW)
    with pytest.raises(SignatureVerificationError):
        verify_stripe(BODY, header, ["", " "], NOW)


# --- HubSpot v3 ----------------------------------------------------------------

URI = "https://hooks.example.com/hubspot?src=prod"
HS_BODY = b'[{"eventId":100,"subscriptionId":2001,"portalId":62515}]'


def _hs_verify(
    *,
    payload: bytes = HS_BODY,
    uri: str = URI,
    signed_uri: str = URI,
    secret: str | tuple[str, ...] = HUBSPOT_SECRET,
    ts_ms: int = NOW * 1000,
    now: float = NOW,
    method: str = "POST",
) -> int:
    signature = hubspot_v3_signature(
        HUBSPOT_SECRET, "POST", signed_uri, HS_BODY, str(ts_ms)
    )
    return verify_hubspot_v3(
        method=method,
        uri=uri,
        payload=payload,
        signature=signature,
        timestamp=str(ts_ms),
        secret=secret,
        now=now,
    )


def test_hubspot_v3_valid_signature_is_accepted() -> None:
    """The same method, URI, body and timestamp verify."""
    assert _hs_verify() == NOW * 1000


def test_hubspot_v3_rotation_accepts_either_configured_secret() -> None:
    """While the client secret is rotated, both the old and the new verify; a
    third does not."""
    assert _hs_verify(secret=("new-secret", HUBSPOT_SECRET)) == NOW * 1000
    assert _hs_verify(secret=(HUBSPOT_SECRET, "new-secret")) == NOW * 1000
    with pytest.raises(SignatureVerificationError):
        _hs_verify(secret=("new-secret", "other-secret"))


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"payload": HS_BODY + b" "}, id="tampered-body"),
        pytest.param({"secret": "another-secret"}, id="wrong-secret"),
        pytest.param({"uri": "https://hooks.example.com/hubspot"}, id="other-uri"),
        pytest.param({"method": "PUT"}, id="other-method"),
        pytest.param({"ts_ms": (NOW - 301) * 1000}, id="stale"),
        pytest.param({"ts_ms": (NOW + 301) * 1000}, id="future"),
    ],
)
def test_hubspot_v3_rejects_changes_and_both_sides_of_window(
    kwargs: dict[str, object],
) -> None:
    """Any change, or a timestamp more than 5 minutes off either way, fails."""
    with pytest.raises(SignatureVerificationError):
        _hs_verify(**kwargs)  # type: ignore[arg-type]


def test_hubspot_v3_accepts_edges_of_window() -> None:
    """Exactly 300 s old or ahead is still inside the window."""
    assert _hs_verify(ts_ms=(NOW - 300) * 1000) == (NOW - 300) * 1000
    assert _hs_verify(ts_ms=(NOW + 300) * 1000) == (NOW + 300) * 1000


def test_hubspot_uri_decoding_table_is_applied_case_insensitively() -> None:
    """The listed escapes decode in either case; other escapes stay encoded."""
    raw = "https://h.example/p%3Aa%2fb%3F%40%21%24%27%28%29%2A%2c%3B?q=a%20b%40c"
    assert decode_hubspot_uri(raw) == "https://h.example/p:a/b?@!$'()*,;?q=a%20b@c"


def test_hubspot_v3_signs_the_decoded_uri() -> None:
    """A URI sent with %40 verifies against a signature made over '@'."""
    sent = "https://hooks.example.com/hubspot?owner=ops%40example.com"
    signed = "https://hooks.example.com/hubspot?owner=ops@example.com"
    assert _hs_verify(uri=sent, signed_uri=signed) == NOW * 1000


@pytest.mark.parametrize(
    ("signature", "timestamp"),
    [(None, "1700000100000"), ("abc=", None), ("abc=", "17e11"), ("abc=", "-5")],
)
def test_hubspot_v3_rejects_missing_or_malformed_headers(
    signature: str | None, timestamp: str | None
) -> None:
    """Missing headers and non-numeric timestamps fail without computing."""
    with pytest.raises(SignatureVerificationError):
        verify_hubspot_v3(
            method="POST",
            uri=URI,
            payload=HS_BODY,
            signature=signature,
            timestamp=timestamp,
            secret=HUBSPOT_SECRET,
            now=NOW,
        )


# --- Truecount CRM ----------------------------------------------------------------

CRM_BODY = b'{"name":"qualify_lead","event_id":"crm-1"}'


def test_crm_valid_signature_with_key_id_is_accepted() -> None:
    """The header signed with the named key's secret verifies."""
    header = crm_signature_header(CRM_BODY, CRM_KEYS["k1"], NOW)
    assert verify_crm(CRM_BODY, header, key_id="k1", keys=CRM_KEYS, now=NOW) == NOW


@pytest.mark.parametrize(
    ("body", "key_id", "t", "secret"),
    [
        pytest.param(CRM_BODY + b"\n", "k1", NOW, CRM_KEYS["k1"], id="tampered-body"),
        pytest.param(CRM_BODY, "k1", NOW, "not-the-secret", id="wrong-secret"),
        pytest.param(CRM_BODY, "k2", NOW, CRM_KEYS["k1"], id="other-key-id"),
        pytest.param(CRM_BODY, "k9", NOW, CRM_KEYS["k1"], id="unknown-key-id"),
        pytest.param(CRM_BODY, "k1", NOW - 301, CRM_KEYS["k1"], id="stale"),
        pytest.param(CRM_BODY, "k1", NOW + 301, CRM_KEYS["k1"], id="future"),
    ],
)
def test_crm_rejects_tampering_wrong_keys_and_both_sides_of_window(
    body: bytes, key_id: str, t: int, secret: str
) -> None:
    """Any mismatch, an unknown key id, or a timestamp off by > 300 s fails."""
    header = crm_signature_header(CRM_BODY, secret, t)
    with pytest.raises(SignatureVerificationError):
        verify_crm(body, header, key_id=key_id, keys=CRM_KEYS, now=NOW)


def test_crm_accepts_one_correct_v1_among_several() -> None:
    """A sender rolling its key may send two v1 values; one correct passes."""
    good = crm_signature(CRM_BODY, CRM_KEYS["k2"], NOW)
    header = f"t={NOW},v1={'f' * 64},v1={good}"
    assert verify_crm(CRM_BODY, header, key_id="k2", keys=CRM_KEYS, now=NOW) == NOW


def test_crm_rotation_accepts_both_key_ids() -> None:
    """Two configured keys: requests signed with either, named by id, pass."""
    for key_id, secret in CRM_KEYS.items():
        header = crm_signature_header(CRM_BODY, secret, NOW)
        assert verify_crm(CRM_BODY, header, key_id=key_id, keys=CRM_KEYS, now=NOW)


@pytest.mark.parametrize(
    ("header", "key_id"),
    [
        (None, "k1"),
        ("t=1,v1=ab", None),
        (f"t={NOW}", "k1"),
        (f"v1={'0' * 64}", "k1"),
        (f"t={NOW},t={NOW},v1={'0' * 64}", "k1"),
        (f"t=0{NOW},v1={'0' * 64}", "k1"),
        ("garbage", "k1"),
    ],
)
def test_crm_rejects_missing_or_malformed_header(
    header: str | None, key_id: str | None
) -> None:
    """Missing header or key id, missing parts, repeated t, padded t all fail."""
    with pytest.raises(SignatureVerificationError):
        verify_crm(CRM_BODY, header, key_id=key_id, keys=CRM_KEYS, now=NOW)


def test_parse_crm_keys_reads_key_id_secret_pairs() -> None:
    """``key_id:secret`` entries become a dict; a secret may contain ':'."""
    assert parse_crm_keys(["k1:abc", " k2 : d:e "]) == {"k1": "abc", "k2": "d:e"}


@pytest.mark.parametrize(
    "entries",
    [["S3CR3T"], [":S3CR3T"], ["k1:"], ["bad id:S3CR3T"], ["a:S3CR3T1", "a:S3CR3T2"]],
)
def test_parse_crm_keys_rejects_malformed_entries_without_leaking(
    entries: list[str],
) -> None:
    """Malformed or duplicate entries raise ConfigError that omits the secret."""
    with pytest.raises(ConfigError) as info:
        parse_crm_keys(entries)
    assert "CRM key #" in str(info.value)
    assert "S3CR3T" not in str(info.value)
