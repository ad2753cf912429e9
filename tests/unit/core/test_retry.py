"""Retry decisions: age windows and attempt limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from truecount.core.retry import is_expired, max_attempts_for, settle
from truecount.ports import SendResult

NOW = datetime(2026, 4, 5, 12, 0, tzinfo=UTC)


def test_event_inside_the_window_is_not_expired() -> None:
    """An event 6 days old is fine for a 7-day window."""
    assert not is_expired(NOW - timedelta(days=6), timedelta(days=7), NOW)


def test_event_past_the_window_is_expired() -> None:
    """An event 8 days old is too old for a 7-day window."""
    assert is_expired(NOW - timedelta(days=8), timedelta(days=7), NOW)


def test_no_window_never_expires() -> None:
    """``max_age = None`` accepts any age."""
    assert not is_expired(NOW - timedelta(days=3650), None, NOW)


def test_retry_below_the_limit_stays_a_retry() -> None:
    """Attempts left: the retry is kept."""
    result = SendResult("retry", http_status=503, error="http 503")

    assert settle(result, attempts=2, max_attempts=3) == result


def test_retry_at_the_limit_becomes_a_failure() -> None:
    """The last allowed attempt failing retryably is a permanent failure."""
    result = SendResult("retry", http_status=503, error="http 503")

    settled = settle(result, attempts=3, max_attempts=3)

    assert settled.status == "failed"
    assert settled.error == "max_attempts: http 503"
    assert settled.http_status == 503


def test_delivered_and_failed_are_never_changed() -> None:
    """Only retries are settled."""
    delivered = SendResult("delivered", http_status=200)
    failed = SendResult("failed", http_status=400, error="http 400")

    assert settle(delivered, 9, 1) == delivered
    assert settle(failed, 9, 1) == failed


def test_destination_limit_wins_over_the_default() -> None:
    """A destination's own ``max_attempts`` replaces ``fanout.max_attempts``."""
    assert max_attempts_for(SimpleNamespace(max_attempts=3), 8) == 3
    assert max_attempts_for(SimpleNamespace(max_attempts=None), 8) == 8
    assert max_attempts_for(object(), 5) == 5
