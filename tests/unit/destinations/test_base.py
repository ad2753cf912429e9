"""Shared destination helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from truecount.destinations import base
from truecount.errors import ConfigError
from truecount.ports import HttpResponse, Skip


def test_accepts_star_and_listed_names():
    """'*' routes every event; otherwise only the listed names."""
    assert base.accepts(["*"], "anything")
    assert base.accepts(["purchase"], "purchase")
    assert not base.accepts(["purchase"], "page_view")


def test_map_name_overrides_defaults_and_skips_unmapped():
    """names wins over defaults; unmapped is Skip; None defaults pass through."""
    defaults = {"purchase": "Purchase"}
    assert base.map_name("purchase", {}, defaults) == "Purchase"
    assert base.map_name("purchase", {"purchase": "Buy"}, defaults) == "Buy"
    assert base.map_name("page_view", {}, defaults) == Skip("unmapped_event")
    assert base.map_name("page_view", {}, None) == "page_view"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("21.00", 21), ("21.5", 21.5), ("0.10", 0.1), ("1234567.89", 1234567.89)],
)
def test_money_is_int_when_integral_else_float(value, expected):
    """Decimals become JSON numbers without binary-float surprises in the text."""
    result = base.money(Decimal(value))
    assert result == expected
    assert type(result) is type(expected)


def test_money_text_never_uses_exponents():
    """LinkedIn amounts are plain decimal text."""
    assert base.money_text(Decimal("1E+2")) == "100"
    assert base.money_text(Decimal("21.00")) == "21.00"


def test_epoch_helpers_are_exact():
    """Seconds floor, ms and µs are exact integers."""
    moment = datetime(2026, 4, 5, 14, 30, 0, 123456, tzinfo=UTC)
    assert base.epoch_seconds(moment) == 1775399400
    assert base.epoch_millis(moment) == 1775399400123
    assert base.epoch_micros(moment) == 1775399400123456


def test_event_time_is_clamped_to_now():
    """Future event times are sent as now."""
    now = datetime(2026, 4, 5, tzinfo=UTC)
    assert base.event_time(now + timedelta(seconds=5), now) == now
    assert base.event_time(now - timedelta(seconds=5), now) == now - timedelta(
        seconds=5
    )


def test_resolve_endpoint_keeps_override_path():
    """The override replaces the base and keeps its own path."""
    assert (
        base.resolve_endpoint(None, "https://a.example", "/x") == "https://a.example/x"
    )
    assert (
        base.resolve_endpoint("http://127.0.0.1:9/cap/", "https://a.example", "/x")
        == "http://127.0.0.1:9/cap/x"
    )


def test_browser_event_id_convention():
    """params.truecount_browser_event_id wins when it is a non-empty string."""
    assert base.browser_event_id({"truecount_browser_event_id": "b1"}, "e1") == "b1"
    assert base.browser_event_id({"truecount_browser_event_id": ""}, "e1") == "e1"
    assert base.browser_event_id({}, "e1") == "e1"


def test_parse_retry_after_seconds_and_dates():
    """Delta seconds, an HTTP date against the Date header, or None."""
    assert base.parse_retry_after({"retry-after": "12"}) == 12.0
    headers = {
        "Retry-After": "Sun, 05 Apr 2026 15:01:00 GMT",
        "Date": "Sun, 05 Apr 2026 15:00:00 GMT",
    }
    assert base.parse_retry_after(headers) == 60.0
    assert (
        base.parse_retry_after({"Retry-After": "Sun, 05 Apr 2026 15:01:00 GMT"}) is None
    )
    assert base.parse_retry_after({"Retry-After": "soon"}) is None
    assert base.parse_retry_after({}) is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (400, "failed"),
        (404, "failed"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
    ],
)
def test_classify_http(status, expected):
    """2xx delivered; 408/429/5xx retried; other 4xx failed."""
    result = base.classify_http(HttpResponse(status, {"Retry-After": "3"}, b""))
    assert result.status == expected
    assert result.http_status == status
    if expected == "retry":
        assert result.retry_after == 3.0
        assert result.error == f"http {status}"


def test_require_secret_names_the_variable_not_the_value():
    """A missing secret names its env var; a present one is returned stripped."""
    with pytest.raises(ConfigError, match="MY_SECRET is not set") as info:
        base.require_secret({"OTHER": "value-x"}, "MY_SECRET", "d")
    assert "value-x" not in str(info.value)
    assert base.require_secret({"MY_SECRET": " s \n"}, "MY_SECRET", "d") == "s"
    assert base.optional_secret({"MY_SECRET": ""}, "MY_SECRET") is None
