"""The ``webhook`` function in-process, through functions-framework's test client.

Fakes come in through the documented seam ``truecount.apps.webhook.override``;
the HubSpot API is a local stand-in on 127.0.0.1. No SDK is patched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient
from webhook_support import (
    FakeHubSpotApi,
    RecordingPublisher,
    default_fake_hubspot,
    fixture_bytes,
)

from truecount.apps import webhook as webhook_app
from truecount.log import clear_secrets
from truecount.settings import get_settings
from truecount.webhooks.signatures import (
    crm_signature_header,
    hubspot_v3_signature,
    stripe_signature_header,
)

SOURCE = Path(__file__).parents[3] / "functions" / "webhook" / "main.py"
STRIPE_OLD, STRIPE_NEW = "whsec_old_secret", "whsec_new_secret"
HUBSPOT_SECRET = "hubspot-client-secret-1"
CRM_KEYS = {"k1": "crm-secret-one", "k2": "crm-secret-two"}
PII = ("John_Smith", "john_smith", "Smith", "555 1212", "San Francisco", "Jane", "Doe")

CONFIG = """
[sources]
max_body_bytes = 4096

[sources.stripe]
test_mode = "drop"

[sources.hubspot]
api_base_url = "{hubspot}"
{hubspot_extra}

[sources.crm]
"""


@pytest.fixture
def fake_hubspot() -> Iterator[FakeHubSpotApi]:
    """The local HubSpot API with contact 201 and deal 9876."""
    with default_fake_hubspot().running() as fake:
        yield fake


@pytest.fixture
def publisher() -> RecordingPublisher:
    """A recording publisher."""
    return RecordingPublisher()


MakeClient = Callable[..., FlaskClient]


@pytest.fixture
def make_client(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_hubspot: FakeHubSpotApi,
    publisher: RecordingPublisher,
) -> Iterator[MakeClient]:
    """Build the function from main.py with a config, secrets and fakes."""
    monkeypatch.setenv("FUNCTION_TARGET", "webhook")
    monkeypatch.setenv("FUNCTION_SIGNATURE_TYPE", "http")

    def make(config: str | None = None, hubspot_extra: str = "", **env: str) -> Any:
        text = config if config is not None else CONFIG
        path = tmp_path / "truecount.toml"
        path.write_text(
            text.format(hubspot=fake_hubspot.base_url, hubspot_extra=hubspot_extra)
        )
        defaults = {
            "TRUECOUNT_CONFIG": str(path),
            "TRUECOUNT_STRIPE_SIGNING_SECRETS": f"{STRIPE_OLD},{STRIPE_NEW}",
            "TRUECOUNT_HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET,
            "TRUECOUNT_HUBSPOT_TOKEN": fake_hubspot.token,
            "TRUECOUNT_CRM_KEYS": ",".join(f"{k}:{v}" for k, v in CRM_KEYS.items()),
        }
        for name, value in (defaults | env).items():
            if value:
                monkeypatch.setenv(name, value)
            else:
                monkeypatch.delenv(name, raising=False)
        get_settings.cache_clear()
        app = functions_framework.create_app(target="webhook", source=str(SOURCE))
        return app.test_client()

    with webhook_app.override(publisher=publisher):
        yield make
    clear_secrets()


def post_stripe(
    client: FlaskClient,
    body: bytes,
    secret: str = STRIPE_NEW,
    t: int | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    signature = stripe_signature_header(body, secret, t or int(time.time()))
    return client.post(
        "/stripe",
        data=body,
        headers={
            "Stripe-Signature": signature,
            "Content-Type": "application/json",
            **(headers or {}),
        },
    )


def post_hubspot(
    client: FlaskClient,
    body: bytes,
    *,
    uri: str = "http://localhost/hubspot",
    path: str = "/hubspot",
    ts_ms: int | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    ts = str(ts_ms or int(time.time() * 1000))
    signature = hubspot_v3_signature(HUBSPOT_SECRET, "POST", uri, body, ts)
    return client.post(
        path,
        data=body,
        headers={
            "X-HubSpot-Signature-v3": signature,
            "X-HubSpot-Request-Timestamp": ts,
            "Content-Type": "application/json",
            **(headers or {}),
        },
    )


def crm_body(**changes: Any) -> bytes:
    data = {
        "name": "close_convert_lead",
        "event_id": "crm-deal-7-won",
        "occurred_at": "2024-05-01T12:00:00Z",
        "lead": {"lead_id": "42", "value": "900", "currency": "EUR"},
        "identity": {"email": "Jane.Doe@example.com", "last_name": "Doe"},
    }
    return json.dumps(data | changes).encode()


def post_crm(
    client: FlaskClient, body: bytes, key_id: str = "k2", secret: str | None = None
) -> Any:
    signature = crm_signature_header(body, secret or CRM_KEYS[key_id], int(time.time()))
    return client.post(
        "/crm",
        data=body,
        headers={"Truecount-Signature": signature, "Truecount-Key-Id": key_id},
    )


def error_code(response: Any) -> str:
    return str(response.get_json()["error"]["code"])


# --- routing and health ------------------------------------------------------------


def test_main_only_wires_in_at_most_60_lines() -> None:
    """functions/webhook/main.py stays a thin wiring module."""
    assert len(SOURCE.read_text().splitlines()) <= 60


def test_healthz_answers_200(make_client: MakeClient) -> None:
    """GET /healthz is 200 {"status": "ok"}."""
    response = make_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_unknown_route_is_404_and_wrong_method_is_405(make_client: MakeClient) -> None:
    """Routing errors use the CONTRACT error body."""
    client = make_client()
    missing = client.post("/nope", data=b"{}")
    wrong = client.get("/stripe")
    assert (missing.status_code, error_code(missing)) == (404, "not_found")
    assert (wrong.status_code, error_code(wrong)) == (405, "method_not_allowed")
    assert wrong.headers["Allow"] == "POST"


# --- Stripe ---------------------------------------------------------------------


def test_stripe_event_is_published_then_answered_200(
    make_client: MakeClient, publisher: RecordingPublisher
) -> None:
    """A signed checkout.session.completed is published with its dedup key."""
    response = post_stripe(
        make_client(), fixture_bytes("stripe", "checkout_session_completed")
    )
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "published": 1, "ignored": 0}
    [event] = publisher.events
    assert (event.event_id, event.name, event.source) == (
        "evt_1PcsCompleted0001",
        "purchase",
        "stripe",
    )
    assert event.dedup_key == "purchase:1001"


def test_stripe_rotation_accepts_the_old_secret(
    make_client: MakeClient, publisher: RecordingPublisher
) -> None:
    """Both comma-separated signing secrets verify."""
    body = fixture_bytes("stripe", "charge_refunded")
    response = post_stripe(make_client(), body, secret=STRIPE_OLD)
    assert response.status_code == 200
    assert publisher.events[0].dedup_key == "refund:pi_3P0abcdEFGH"


@pytest.mark.parametrize(
    ("secret", "age", "tamper"),
    [
        pytest.param("whsec_wrong", 0, False, id="wrong-secret"),
        pytest.param(STRIPE_NEW, 301, False, id="stale"),
        pytest.param(STRIPE_NEW, 0, True, id="tampered"),
    ],
)
def test_stripe_bad_signature_is_400_without_detail(
    make_client: MakeClient,
    publisher: RecordingPublisher,
    secret: str,
    age: int,
    tamper: bool,
) -> None:
    """Wrong secret, stale timestamp or changed body: 400, nothing published."""
    body = fixture_bytes("stripe", "payment_intent_succeeded")
    t = int(time.time()) - age
    header = stripe_signature_header(body, secret, t)
    sent = body.replace(b"2350", b"9999") if tamper else body
    response = make_client().post(
        "/stripe", data=sent, headers={"Stripe-Signature": header}
    )
    assert response.status_code == 400
    assert response.get_json() == {
        "error": {
            "code": "invalid_signature",
            "message": "signature verification failed",
            "fields": [],
        }
    }
    assert publisher.calls == 0


def test_stripe_missing_signature_is_400(
    make_client: MakeClient, publisher: RecordingPublisher
) -> None:
    """No Stripe-Signature header at all: 400."""
    response = make_client().post(
        "/stripe", data=fixture_bytes("stripe", "charge_refunded")
    )
    assert (response.status_code, error_code(response)) == (400, "invalid_signature")
    assert publisher.calls == 0


def test_stripe_unhandled_type_is_200_and_not_published(
    make_client: MakeClient, publisher: RecordingPublisher
) -> None:
    """A verified event of another type is acknowledged and ignored."""
    body = fixture_bytes("stripe", "payment_intent_succeeded").replace(
        b'"payment_intent.succeeded"', b'"payment_intent.created"'
    )
    response = post_stripe(make_client(), body)
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "published": 0, "ignored": 1}
    assert publisher.calls == 0


def test_stripe_test_mode_drop_is_200_and_not_published(
    make_client: MakeClient, publisher: RecordingPublisher
) -> None:
    """test_mode = "drop": a livemode=false event is acknowledged, not published."""
    body = fixture_bytes("stripe", "payment_intent_succeeded").replace(
        b'"livemode": true,\n  "pending', b'"livemode": false,\n  "pending'
    )
    assert b'"livemode": false' in body
    response = post_stripe(make_client(), body)
    assert response.get_json()["ignored"] == 1
    assert publisher.calls == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"\xff\xfe{}", 400, "invalid_encoding"),
        (b'{"id": "evt_1", "type": "x"}', 400, "invalid_event"),
        (b"[]", 400, "invalid_event"),
    ],
)
def test_stripe_bad_input_is_json_4xx(
    make_client: MakeClient,
    publisher: RecordingPublisher,
    body: bytes,
    status: int,
    code: str,
) -> None:
    """Signed but unusable bodies get a 4xx JSON error, never a 5xx."""
    response = post_stripe(make_client(), body)
    assert (response.status_code, error_code(response)) == (status, code)
    assert publisher.calls == 0


def test_stripe_unknown_currency_names_the_field(make_client: MakeClient) -> None:
    """A currency that is not ISO 4217 is a 400 naming data.object.currency."""
    body = fixture_bytes("stripe", "payment_intent_succeeded").replace(
        b'"currency": "eur"', b'"currency": "xyz"'
    )
    response = post_stripe(make_client(), body)
    assert response.status_code == 400
    assert response.get_json()["error"]["fields"] == [
        {"path": "data.object.currency", "message": "not an ISO 4217 currency"}
    ]


def test_body_over_the_limit_is_413(
    make_client: MakeClient, publisher: RecordingPublisher
) -> None:
    """More than sources.max_body_bytes is refused before verification."""
    response = post_stripe(make_client(), b"{" + b" " * 5000 + b"}")
    assert (response.status_code, error_code(response)) == (413, "payload_too_large")
    assert publisher.calls == 0


def test_failed_publish_is_503_with_retry_after(
    make_client: MakeClient, publisher: RecordingPublisher
) -> None:
    """When Pub/Sub does not ack, the provider is told to retry."""
    publisher.fail = True
    response = post_stripe(make_client(), fixture_bytes("stripe", "charge_refunded"))
    assert (response.status_code, error_code(response)) == (503, "unavailable")
    assert response.headers["Retry-After"] == "5"
    assert publisher.events == []


def test_same_stripe_delivery_twice_has_the_same_event_id(
    make_client: MakeClient, publisher: RecordingPublisher
) -> None:
    """A redelivery (re-signed, later t) publishes the same canonical event id."""
    client = make_client()
    body = fixture_bytes("stripe", "invoice_paid_renewal")
    post_stripe(client, body, t=int(time.time()) - 60)
    post_stripe(client, body)
    first, second = publisher.events
    assert first.event_id == second.event_id == "evt_1InvRenewal0005"
    assert first.dedup_key == second.dedup_key


def test_debug_header_answers_with_the_events(
    make_client: MakeClient, publisher: RecordingPublisher
) -> None:
    """X-Truecount-Debug: 1 answers the events and publishes them marked debug."""
    response = post_stripe(
        make_client(),
        fixture_bytes("stripe", "customer_subscription_created"),
        headers={"X-Truecount-Debug": "1"},
    )
    assert response.status_code == 200
    [event] = response.get_json()["events"]
    assert (event["name"], event["debug"]) == ("subscription_started", True)
    assert event["commerce"]["value"] == "38.00"
    assert publisher.events[0].debug is True


# --- HubSpot ----------------------------------------------------------------------


def test_hubspot_mixed_batch_is_enriched_and_published(
    make_client: MakeClient,
    publisher: RecordingPublisher,
    fake_hubspot: FakeHubSpotApi,
) -> None:
    """A signed mixed batch: three events with hashed email and click ids, four
    ignored, three batch requests on the local HubSpot API (deals, their
    contacts, contacts)."""
    response = post_hubspot(
        make_client(), fixture_bytes("hubspot", "webhook_batch_mixed")
    )
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "published": 3, "ignored": 4}
    assert [e.name for e in publisher.events] == [
        "generate_lead",
        "qualify_lead",
        "close_convert_lead",
    ]
    won = publisher.events[2]
    assert won.identity.email_sha256 == (
        "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    )
    assert won.click_ids.gclid == "Cj0KCQjw-hubspot-gclid"
    assert won.click_ids.fbclid == "IwAR2F4-dbP0l7Mn1IawQQ-hubspot"
    assert won.dedup_key == "close_convert_lead:deal-9876"
    assert [r["path"] for r in fake_hubspot.requests] == [
        "/crm/v3/objects/deals/batch/read",
        "/crm/v4/associations/deals/contacts/batch/read",
        "/crm/v3/objects/contacts/batch/read",
    ]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_hubspot_failed_lookup_is_503_and_publishes_nothing(
    make_client: MakeClient,
    publisher: RecordingPublisher,
    fake_hubspot: FakeHubSpotApi,
    capsys: pytest.CaptureFixture[str],
    status: int,
) -> None:
    """When the HubSpot API fails or rate-limits, answer 503 with Retry-After so
    HubSpot retries the batch; the token appears in no log line."""
    fake_hubspot.fail_status = status
    response = post_hubspot(
        make_client(), fixture_bytes("hubspot", "webhook_batch_mixed")
    )
    assert (response.status_code, error_code(response)) == (503, "unavailable")
    assert response.headers["Retry-After"].isdigit()
    assert publisher.calls == 0
    assert len(fake_hubspot.requests) == 1
    out = capsys.readouterr().out
    assert "UpstreamError" in out
    assert fake_hubspot.token not in out


def test_hubspot_deleted_objects_are_published_unenriched(
    make_client: MakeClient,
    publisher: RecordingPublisher,
    fake_hubspot: FakeHubSpotApi,
) -> None:
    """Contacts and deals reported OBJECT_NOT_FOUND still give their events."""
    fake_hubspot.contacts.clear()
    fake_hubspot.deals.clear()
    response = post_hubspot(
        make_client(), fixture_bytes("hubspot", "webhook_batch_mixed")
    )
    assert response.get_json() == {"status": "ok", "published": 3, "ignored": 4}
    assert [e.identity.email_sha256 for e in publisher.events] == [None] * 3
    assert len(fake_hubspot.requests) == 2  # no associations read: no deal found


def test_hubspot_slow_api_beyond_the_budget_is_503(
    make_client: MakeClient,
    publisher: RecordingPublisher,
    fake_hubspot: FakeHubSpotApi,
) -> None:
    """lookup_budget_seconds bounds the whole enrichment: a HubSpot API slower
    than the budget gets a 503 well before the per-request timeout."""
    fake_hubspot.delay = 1.0
    client = make_client(hubspot_extra="lookup_budget_seconds = 0.2")
    started = time.monotonic()
    response = post_hubspot(client, fixture_bytes("hubspot", "webhook_batch_mixed"))
    elapsed = time.monotonic() - started
    assert (response.status_code, error_code(response)) == (503, "unavailable")
    assert publisher.calls == 0
    assert elapsed < 0.9


@pytest.mark.parametrize(
    ("uri", "age_ms"),
    [
        pytest.param("http://localhost/hubspot", 301_000, id="stale"),
        pytest.param("http://localhost/hubspot", -301_000, id="future"),
        pytest.param("https://elsewhere.example/hubspot", 0, id="other-url"),
    ],
)
def test_hubspot_bad_signature_is_400(
    make_client: MakeClient, publisher: RecordingPublisher, uri: str, age_ms: int
) -> None:
    """Outside the 5-minute window (either side) or another URL: 400."""
    ts = int(time.time() * 1000) - age_ms
    response = post_hubspot(
        make_client(),
        fixture_bytes("hubspot", "webhook_batch_mixed"),
        uri=uri,
        ts_ms=ts,
    )
    assert (response.status_code, error_code(response)) == (400, "invalid_signature")
    assert publisher.calls == 0


def test_hubspot_uri_is_rebuilt_from_forwarded_headers(
    make_client: MakeClient, publisher: RecordingPublisher
) -> None:
    """Behind a proxy the signed URL uses X-Forwarded-Proto/Host and the raw query."""
    body = b'[{"eventId":9,"subscriptionId":1,"portalId":2,"occurredAt":1712345678000,"subscriptionType":"company.creation","objectId":3}]'
    response = post_hubspot(
        make_client(),
        body,
        uri="https://hooks.example.com/hubspot?src=prod&owner=ops@example.com",
        path="/hubspot?src=prod&owner=ops%40example.com",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hooks.example.com"},
    )
    assert response.status_code == 200
    assert response.get_json()["ignored"] == 1


def test_hubspot_uri_uses_public_url_when_configured(make_client: MakeClient) -> None:
    """sources.hubspot.public_url replaces the scheme, host and any prefix."""
    client = make_client(hubspot_extra='public_url = "https://fn.example.net/webhook/"')
    body = b"[]"
    good = post_hubspot(client, body, uri="https://fn.example.net/webhook/hubspot")
    bad = post_hubspot(client, body, uri="http://localhost/hubspot")
    assert good.status_code == 200
    assert bad.status_code == 400


def test_hubspot_malformed_batch_is_400_with_paths(make_client: MakeClient) -> None:
    """A signed body that is not a batch names the bad element fields."""
    response = post_hubspot(make_client(), b'[{"eventId": 1}]')
    assert (response.status_code, error_code(response)) == (400, "invalid_event")
    paths = {f["path"] for f in response.get_json()["error"]["fields"]}
    assert "[0].portalId" in paths


# --- CRM --------------------------------------------------------------------------


def test_crm_event_is_published(
    make_client: MakeClient, publisher: RecordingPublisher
) -> None:
    """A signed CRM event is published with hashed identity."""
    response = post_crm(make_client(), crm_body())
    assert response.status_code == 200
    [event] = publisher.events
    assert (event.event_id, event.source, event.dedup_key) == (
        "crm-deal-7-won",
        "crm",
        "close_convert_lead:42",
    )
    assert event.identity.email_sha256 is not None
    assert b"Jane" not in event.to_json_bytes()


@pytest.mark.parametrize(
    ("key_id", "secret"),
    [("k9", CRM_KEYS["k1"]), ("k1", CRM_KEYS["k2"]), ("k1", "guess")],
)
def test_crm_bad_key_or_signature_is_400(
    make_client: MakeClient, publisher: RecordingPublisher, key_id: str, secret: str
) -> None:
    """Unknown key id or a signature by another secret: 400, nothing published."""
    response = post_crm(make_client(), crm_body(), key_id, secret)
    assert (response.status_code, error_code(response)) == (400, "invalid_signature")
    assert publisher.calls == 0


def test_crm_validation_error_is_400_with_field_paths(make_client: MakeClient) -> None:
    """Bad fields are listed by path."""
    response = post_crm(make_client(), crm_body(name="bad name", lead={"value": 1}))
    assert (response.status_code, error_code(response)) == (400, "invalid_event")
    paths = sorted({f["path"] for f in response.get_json()["error"]["fields"]})
    assert paths == ["lead", "name"]


# --- configuration ----------------------------------------------------------------


@pytest.mark.parametrize("route", ["/stripe", "/hubspot", "/crm"])
def test_unconfigured_source_is_404(
    make_client: MakeClient, publisher: RecordingPublisher, route: str
) -> None:
    """No [sources.*] section: 404 source_not_configured, nothing accepted."""
    response = make_client(config="").post(route, data=b"{}")
    assert (response.status_code, error_code(response)) == (
        404,
        "source_not_configured",
    )
    assert publisher.calls == 0


@pytest.mark.parametrize(
    ("route", "unset"),
    [
        ("/stripe", "TRUECOUNT_STRIPE_SIGNING_SECRETS"),
        ("/hubspot", "TRUECOUNT_HUBSPOT_CLIENT_SECRET"),
        ("/hubspot", "TRUECOUNT_HUBSPOT_TOKEN"),
        ("/crm", "TRUECOUNT_CRM_KEYS"),
    ],
)
def test_source_without_its_secret_is_404(
    make_client: MakeClient, route: str, unset: str
) -> None:
    """A configured source whose secret is not set accepts nothing."""
    response = make_client(**{unset: ""}).post(route, data=b"{}")
    assert (response.status_code, error_code(response)) == (
        404,
        "source_not_configured",
    )


# --- logging ----------------------------------------------------------------------


def test_logs_carry_no_raw_pii_or_secret(
    make_client: MakeClient,
    fake_hubspot: FakeHubSpotApi,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every request's log lines are free of raw PII and secrets."""
    client = make_client()
    post_stripe(client, fixture_bytes("stripe", "checkout_session_completed"))
    post_stripe(client, fixture_bytes("stripe", "charge_refunded"), secret="whsec_bad")
    post_hubspot(client, fixture_bytes("hubspot", "webhook_batch_mixed"))
    post_crm(client, crm_body())
    out = capsys.readouterr().out
    assert "webhook event mapped" in out
    assert "webhook signature rejected" in out
    secrets = (STRIPE_NEW, STRIPE_OLD, HUBSPOT_SECRET, fake_hubspot.token)
    for raw in (*PII, *secrets, *CRM_KEYS.values()):
        assert raw not in out
