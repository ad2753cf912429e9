"""The ``http`` sink destination."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from truecount.destinations import http
from truecount.errors import ConfigError
from truecount.ports import HttpResponse, OutboundRequest

from .conftest import (
    ENV,
    NOW,
    describe,
    dest_config,
    lead_event,
    minimal_event,
    purchase_event,
)


def _sink(env: dict[str, str] | None = None) -> http.HttpDestination:
    return http.create("sink", dest_config("http"), ENV if env is None else env)


@pytest.mark.parametrize(
    ("name", "make"),
    [("purchase", purchase_event), ("lead", lead_event), ("minimal", minimal_event)],
)
def test_http_bodies_match_golden(golden, name, make):
    """The sink gets the canonical event JSON with id and idempotency headers."""
    result = _sink().build(make(), NOW)
    golden(f"http_{name}", describe(result))


def test_http_body_bytes_are_the_canonical_serialisation_of_json():
    """``content`` is exactly sorted, compact UTF-8 JSON of ``json``."""
    req = _sink().build(purchase_event(), NOW)
    assert isinstance(req, OutboundRequest)
    assert (
        req.content
        == json.dumps(
            req.json, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    )
    assert req.json["commerce"]["value"] == "21.00"


def test_http_signature_verifies_over_timestamp_and_body():
    """The receiver can verify ``t=..,v1=..`` with HMAC-SHA256 over '<t>.<body>'."""
    req = _sink().build(purchase_event(), NOW)
    assert isinstance(req, OutboundRequest)
    assert req.content is not None
    parts = dict(
        p.split("=", 1) for p in req.secret_headers["Truecount-Signature"].split(",")
    )
    assert parts["t"] == str(int(NOW.timestamp()))
    expected = hmac.new(
        b"sink-secret-value", parts["t"].encode() + b"." + req.content, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)


def test_http_without_secret_sends_no_signature():
    """No secret in the environment: the body is sent unsigned."""
    req = _sink(env={}).build(purchase_event(), NOW)
    assert isinstance(req, OutboundRequest)
    assert req.secret_headers == {}


def test_http_idempotency_key_is_derived_from_dedup_key():
    """Retries of one business event carry one idempotency key."""
    req = _sink().build(purchase_event(event_id="other-id"), NOW)
    assert isinstance(req, OutboundRequest)
    assert (
        req.headers["Idempotency-Key"] == hashlib.sha256(b"purchase:T-1001").hexdigest()
    )
    assert req.headers["Truecount-Event-Id"] == "other-id"


def test_http_needs_an_endpoint():
    """An http destination without ``endpoint`` names that key."""
    cfg = dest_config("http", endpoint=None)
    with pytest.raises(ConfigError, match=r"destinations\.sink\.endpoint"):
        http.create("sink", cfg, ENV)


def test_http_defaults_send_without_consent_and_allow_unknown():
    """Internal analytics: no consent required by default, unknown allowed."""
    sink = _sink()
    assert sink.required_consent == ()
    assert sink.unknown_consent == "allow"
    assert sink.max_age is None
    assert sink.test_mode is False


def test_http_send_debug_opts_in_to_delivering_debug_events():
    """``send_debug = true`` sends debug events (test_mode); the default does not."""
    sink = http.create("sink", dest_config("http", send_debug=True), ENV)
    assert sink.test_mode is True


def test_http_secret_headers_come_from_the_environment_and_are_never_recorded():
    """``secret_headers_env`` values go in ``secret_headers``, not in ``describe()``."""
    cfg = dest_config(
        "http", secret_headers_env={"Authorization": "SINK_TOKEN"}, headers={"X-A": "1"}
    )
    sink = http.create("sink", cfg, {**ENV, "SINK_TOKEN": "Bearer tok-123"})
    req = sink.build(purchase_event(), NOW)
    assert isinstance(req, OutboundRequest)
    assert req.secret_headers["Authorization"] == "Bearer tok-123"
    assert req.headers["X-A"] == "1"
    assert "tok-123" not in json.dumps(req.describe())


def test_http_secret_header_variable_must_be_set_and_well_named():
    """An unset variable, or a bad variable name, is a ConfigError naming it."""
    cfg = dest_config("http", secret_headers_env={"Authorization": "SINK_TOKEN"})
    with pytest.raises(ConfigError, match="SINK_TOKEN"):
        http.create("sink", cfg, ENV)
    bad = dest_config("http", secret_headers_env={"Authorization": "sink-token"})
    with pytest.raises(ConfigError, match="secret_headers_env"):
        http.create("sink", bad, ENV)


@pytest.mark.parametrize(
    ("status", "expected"), [(200, "delivered"), (400, "failed"), (500, "retry")]
)
def test_http_classifies_by_status(status, expected):
    """2xx delivered, 4xx failed, 5xx retried."""
    result = _sink().classify(HttpResponse(status, {"X-Request-Id": "r1"}, b""))
    assert result.status == expected
    assert result.http_status == status
    assert result.request_id == "r1"
