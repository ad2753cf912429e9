"""The HTTP edge glue shared by ingest and webhook."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from flask import Flask, Request, request

from truecount.models.event import Event
from truecount.web import Reply, Route, dispatch


class _Publisher:
    def __init__(self) -> None:
        self.published: list[Event] = []

    def publish(self, events: Sequence[Event]) -> list[str]:
        self.published.extend(events)
        return ["1"] * len(events)


def _boom(_: Request) -> Reply:
    raise RuntimeError("secret-looking detail jane@example.com")


def test_an_unexpected_error_is_a_json_500_that_leaks_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bug answers the CONTRACT error body with code internal; the log line
    names the exception type only, never its message."""
    publisher = _Publisher()
    routes = [Route("/x", frozenset({"POST"}), _boom)]

    with Flask(__name__).test_request_context("/x", method="POST"):
        resp = dispatch(request, routes, lambda: publisher)

    assert resp.status_code == 500
    assert resp.get_json() == {
        "error": {
            "code": "internal",
            "message": "unexpected error, retry later",
            "fields": [],
        }
    }
    assert publisher.published == []
    out = capsys.readouterr()
    logged = out.out + out.err
    assert "RuntimeError" in logged
    assert "jane@example.com" not in logged
    assert "secret-looking" not in logged
