"""Helpers shared by the webhook tests (unit, function and integration).

* :func:`fixture_bytes` / :func:`fixture_json`: provider payloads in
  ``tests/fixtures/<provider>/``.
* :class:`RecordingPublisher`: an ``EventPublisher`` fake that records, or fails.
* :class:`FakeHubSpotApi`: a local HubSpot CRM v3 API on 127.0.0.1 serving
  contacts and deals from dicts, recording each request, optionally failing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from truecount.errors import PublishError
from truecount.models.event import Event

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_bytes(provider: str, name: str) -> bytes:
    """The raw bytes of ``tests/fixtures/<provider>/<name>.json``."""
    return (FIXTURES / provider / f"{name}.json").read_bytes()


def fixture_json(provider: str, name: str) -> Any:
    """The parsed JSON of ``tests/fixtures/<provider>/<name>.json``."""
    return json.loads(fixture_bytes(provider, name))


class RecordingPublisher:
    """Records published events; ``fail=True`` raises ``PublishError``."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.events: list[Event] = []
        self.calls = 0

    def publish(self, events: Sequence[Event]) -> list[str]:
        """Record ``events`` (or fail) and return fake message ids."""
        self.calls += 1
        if self.fail:
            raise PublishError("broker unavailable (fake)")
        self.events.extend(events)
        return [str(len(self.events) - i) for i in range(len(events))]


class FakeHubSpotApi:
    """A HubSpot CRM v3 API stand-in on 127.0.0.1.

    Args:
        contacts: ``{id: response JSON}`` for ``/crm/v3/objects/contacts/{id}``.
        deals: ``{id: response JSON}`` for ``/crm/v3/objects/deals/{id}``.
        token: the Bearer token it accepts (401 otherwise).
    """

    def __init__(
        self,
        contacts: dict[str, Any],
        deals: dict[str, Any],
        token: str = "pat-test-token",  # noqa: S107 (a test token)
    ) -> None:
        self.contacts = contacts
        self.deals = deals
        self.token = token
        self.fail_status: int | None = None
        self.requests: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _answer(self, path: str, auth: str | None) -> tuple[int, Any]:
        if self.fail_status is not None:
            return self.fail_status, {"status": "error", "message": "fake failure"}
        if auth != f"Bearer {self.token}":
            return 401, {"status": "error", "category": "INVALID_AUTHENTICATION"}
        parts = path.strip("/").split("/")
        if len(parts) == 5 and parts[:3] == ["crm", "v3", "objects"]:
            table = {"contacts": self.contacts, "deals": self.deals}.get(parts[3])
            if table is not None and parts[4] in table:
                return 200, table[parts[4]]
        return 404, {"status": "error", "category": "OBJECT_NOT_FOUND"}

    @contextmanager
    def running(self) -> Iterator[FakeHubSpotApi]:
        """Serve on a free port for the duration of the block."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                auth = self.headers.get("Authorization")
                fake.requests.append(
                    {"path": url.path, "query": parse_qs(url.query), "auth": auth}
                )
                status, body = fake._answer(url.path, auth)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            daemon=True,
        )
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=5)


def default_fake_hubspot() -> FakeHubSpotApi:
    """The fake API with the fixtures' contact 201 and deal 9876."""
    return FakeHubSpotApi(
        contacts={"201": fixture_json("hubspot", "contact_201")},
        deals={"9876": fixture_json("hubspot", "deal_9876")},
    )
