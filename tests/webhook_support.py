"""Helpers shared by the webhook tests (unit, function and integration).

* :func:`fixture_bytes` / :func:`fixture_json`: provider payloads in
  ``tests/fixtures/<provider>/``.
* :class:`RecordingPublisher`: an ``EventPublisher`` fake that records, or fails.
* :class:`FakeHubSpotApi`: a local HubSpot CRM API on 127.0.0.1 serving the
  contacts and deals batch reads and the deal→contact associations batch read
  from dicts, recording each request, optionally failing or slow.
"""

from __future__ import annotations

import json
import threading
import time
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
    """A HubSpot CRM API stand-in on 127.0.0.1.

    Serves ``POST /crm/v3/objects/{contacts,deals}/batch/read`` (200, or 207 with
    one ``OBJECT_NOT_FOUND`` error listing the missing ids) and ``POST
    /crm/v4/associations/deals/contacts/batch/read`` (built from each deal's
    v3-style ``associations.contacts.results``; deals without contacts come back
    as per-item errors, like HubSpot's). Anything else is a plain 404.

    Args:
        contacts: ``{id: object JSON}`` (as a single-object read answers it).
        deals: ``{id: object JSON}``, optionally with ``associations``.
        token: the Bearer token it accepts (401 otherwise).

    Attributes:
        fail_status: answer every request with this status.
        delay: seconds to wait before answering each request.
        requests: ``{"method", "path", "query", "auth", "body"}`` per request.
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
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @staticmethod
    def _ids(body: Any) -> list[str]:
        inputs = body.get("inputs", []) if isinstance(body, dict) else []
        return [str(i["id"]) for i in inputs]

    def _objects(self, table: dict[str, Any], body: Any) -> tuple[int, Any]:
        ids = self._ids(body)
        wanted = set(body.get("properties") or [])
        results = []
        for ident in ids:
            if ident in table:
                data = dict(table[ident])
                data.pop("associations", None)
                props = data.get("properties", {})
                data["properties"] = {k: v for k, v in props.items() if k in wanted}
                results.append(data)
        missing = [i for i in ids if i not in table]
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if not missing:
            return 200, answer
        answer["numErrors"] = 1
        answer["errors"] = [
            {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some objects, they may be deleted",
                "context": {"ids": missing},
            }
        ]
        return 207, answer

    def _associations(self, body: Any) -> tuple[int, Any]:
        results, errors = [], []
        for ident in self._ids(body):
            links = (self.deals.get(ident) or {}).get("associations", {})
            contacts = links.get("contacts", {}).get("results", [])
            if contacts:
                to = [
                    {
                        "toObjectId": int(c["id"]),
                        "associationTypes": [
                            {"category": "HUBSPOT_DEFINED", "typeId": 3}
                        ],
                    }
                    for c in contacts
                ]
                results.append({"from": {"id": ident}, "to": to})
            else:
                errors.append(
                    {
                        "status": "error",
                        "category": "VALIDATION_ERROR",
                        "message": f"No contacts is associated with deal {ident}",
                    }
                )
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            answer |= {"errors": errors, "numErrors": len(errors)}
        return (207 if errors else 200), answer

    def _answer(self, method: str, path: str, auth: str | None, body: Any) -> Any:
        if self.fail_status is not None:
            return self.fail_status, {"status": "error", "message": "fake failure"}
        if auth != f"Bearer {self.token}":
            return 401, {"status": "error", "category": "INVALID_AUTHENTICATION"}
        if method == "POST" and path == "/crm/v3/objects/contacts/batch/read":
            return self._objects(self.contacts, body)
        if method == "POST" and path == "/crm/v3/objects/deals/batch/read":
            return self._objects(self.deals, body)
        if (
            method == "POST"
            and path == "/crm/v4/associations/deals/contacts/batch/read"
        ):
            return self._associations(body)
        return 404, {"status": "error", "message": "no such endpoint (fake)"}

    @contextmanager
    def running(self) -> Iterator[FakeHubSpotApi]:
        """Serve on a free port for the duration of the block."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self, method: str) -> None:
                url = urlsplit(self.path)
                auth = self.headers.get("Authorization")
                size = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(size) if size else b""
                body = json.loads(raw) if raw else None
                fake.requests.append(
                    {
                        "method": method,
                        "path": url.path,
                        "query": parse_qs(url.query),
                        "auth": auth,
                        "body": body,
                    }
                )
                status, answer = fake._answer(method, url.path, auth, body)
                if fake.delay:
                    time.sleep(fake.delay)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout test)
                    return

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

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
