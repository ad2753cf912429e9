"""Retry decisions: pure.

HTTP status classification lives with the destinations
(``truecount.destinations.base.classify_http``): 2xx delivered; 408, 429 and 5xx
retryable; anything else permanent.

Per destination, stop retrying once the event is older than the destination
accepts (``expired``) or after the configured number of attempts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from truecount.ports import SendResult


def is_expired(occurred_at: datetime, max_age: timedelta | None, now: datetime) -> bool:
    """Whether an event is older than a destination accepts.

    Args:
        occurred_at: when the event happened.
        max_age: the destination's window, or None for no limit.
        now: the current time.

    Returns:
        True when ``now - occurred_at`` exceeds ``max_age``.
    """
    return max_age is not None and now - occurred_at > max_age


def settle(result: SendResult, attempts: int, max_attempts: int) -> SendResult:
    """Turn a ``retry`` into ``failed`` once the attempts are used up.

    Args:
        result: the classified outcome of the attempt just made.
        attempts: attempts made so far, including this one.
        max_attempts: the limit for this destination.

    Returns:
        ``result`` unchanged, or a ``failed`` result whose error starts with
        ``max_attempts:``.
    """
    if result.status != "retry" or attempts < max_attempts:
        return result
    return SendResult(
        status="failed",
        http_status=result.http_status,
        error=f"max_attempts: {result.error or 'retryable failure'}",
        request_id=result.request_id,
        detail=result.detail,
    )


def max_attempts_for(destination: object, default: int) -> int:
    """The attempt limit of a destination: its own ``max_attempts`` or ``default``.

    Args:
        destination: a destination; ``max_attempts`` is optional on it.
        default: ``fanout.max_attempts`` from the config.

    Returns:
        A positive limit.
    """
    own = getattr(destination, "max_attempts", None)
    return own if isinstance(own, int) and own > 0 else default
