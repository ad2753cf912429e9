"""A capture server: stands in for every destination in tests and the local stack.

It listens on 127.0.0.1, records every request (method, path, query, headers,
JSON body) and answers from a script per path prefix, e.g. ``500, 500`` and then
the default 200. Control routes:

* ``GET /_captured``: the captured requests as JSON (``?path=/prefix`` filters);
* ``DELETE /_captured``: forget them and every script;
* ``POST /_script``: ``{"prefix": "/a", "statuses": [500, 500], "delay": 0}``;
* ``GET /_ui``: a small HTML page listing what was captured.

In-process::

    server = CaptureServer().start()
    server.script("/meta", [500, 500])
    ...
    assert len(server.requests_to("/meta")) == 3
    server.stop()

As a process: ``python -m truecount.capture --port 8099``.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
CONTROL_PREFIXES = ("/_captured", "/_script", "/_ui")


@dataclass(frozen=True)
class Captured:
    """One request as the capture server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    raw: str
    status: int
    at: float


@dataclass
class _Script:
    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    body: Any = None


class CaptureServer:
    """A threaded HTTP server that records requests and replays scripted statuses.

    Args:
        port: the port; 0 picks a free one.
        default_status: the answer when no script applies.
        host: the address to bind; keep the default loopback.
    """

    def __init__(
        self, port: int = 0, default_status: int = 200, host: str = HOST
    ) -> None:
        self.default_status = default_status
        self._requests: list[Captured] = []
        self._scripts: dict[str, _Script] = {}
        self._lock = threading.Lock()
        self.host = host
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> CaptureServer:
        """Serve in a background thread; returns self."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="capture", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Serve in the calling thread (the ``python -m`` entry)."""
        self._server.serve_forever()

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- scripting and inspection ------------------------------------------

    def script(
        self,
        prefix: str,
        statuses: Iterable[int],
        delay: float = 0.0,
        body: Any = None,
    ) -> None:
        """Answer requests whose path starts with ``prefix`` with these statuses
        in turn, then the default; each answer waits ``delay`` seconds first."""
        with self._lock:
            self._scripts[prefix] = _Script(list(statuses), delay, body)

    def reset(self) -> None:
        """Forget captured requests and scripts."""
        with self._lock:
            self._requests.clear()
            self._scripts.clear()

    @property
    def requests(self) -> list[Captured]:
        """Every captured request, in arrival order."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, prefix: str) -> list[Captured]:
        """Captured requests whose path starts with ``prefix``."""
        return [r for r in self.requests if r.path.startswith(prefix)]

    def wait_for(
        self, prefix: str, count: int, timeout: float = 30.0
    ) -> list[Captured]:
        """Wait until ``count`` requests reached ``prefix`` (or the timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.requests_to(prefix)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        return self.requests_to(prefix)

    # --- request handling --------------------------------------------------

    def _answer(self, path: str) -> tuple[int, float, Any]:
        with self._lock:
            best = ""
            for prefix in self._scripts:
                if path.startswith(prefix) and len(prefix) > len(best):
                    best = prefix
            if best:
                script = self._scripts[best]
                status = (
                    script.statuses.pop(0) if script.statuses else self.default_status
                )
                return status, script.delay, script.body
        return self.default_status, 0.0, None

    def _record(self, item: Captured) -> None:
        with self._lock:
            self._requests.append(item)

    def _control(
        self, method: str, path: str, query: str, raw: bytes
    ) -> tuple[int, str, str]:
        if path == "/_captured" and method == "GET":
            wanted = parse_qs(query).get("path", [""])[0]
            items = [asdict(r) for r in self.requests if r.path.startswith(wanted)]
            return 200, "application/json", json.dumps({"requests": items})
        if path == "/_captured" and method == "DELETE":
            self.reset()
            return 200, "application/json", json.dumps({"ok": True})
        if path == "/_script" and method == "POST":
            spec = json.loads(raw or b"{}")
            self.script(
                str(spec.get("prefix", "/")),
                [int(s) for s in spec.get("statuses", [])],
                float(spec.get("delay", 0)),
                spec.get("body"),
            )
            return 200, "application/json", json.dumps({"ok": True})
        if path == "/_ui" and method == "GET":
            return 200, "text/html; charset=utf-8", self._ui()
        return 405, "application/json", json.dumps({"error": "method not allowed"})

    def _ui(self) -> str:
        rows = "".join(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>".format(
                time.strftime("%H:%M:%S", time.gmtime(r.at)),
                html.escape(r.method),
                html.escape(r.path),
                r.status,
                html.escape(
                    json.dumps(r.body, indent=2) if r.body is not None else r.raw
                ),
            )
            for r in reversed(self.requests)
        )
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<title>Truecount capture</title></head><body>"
            f"<h1>Captured requests ({len(self.requests)})</h1>"
            "<table border='1' cellpadding='4'><tr><th>time (UTC)</th><th>method</th>"
            f"<th>path</th><th>answered</th><th>body</th></tr>{rows}</table>"
            "</body></html>"
        )

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # the status line and headers go out in one write and the body in
            # another; with Nagle's algorithm on, the body then waits ~40 ms for
            # the client's delayed ACK on every request (TCP_NODELAY avoids it)
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: tests read ``requests`` instead."""

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if parts.path.startswith(CONTROL_PREFIXES):
                    status, ctype, text = server._control(
                        self.command, parts.path, parts.query, raw
                    )
                    self._send(status, ctype, text.encode())
                    return
                status, delay, body = server._answer(parts.path)
                try:
                    parsed: Any = json.loads(raw) if raw else None
                except ValueError:
                    parsed = None
                server._record(
                    Captured(
                        method=self.command,
                        path=parts.path,
                        query=parse_qs(parts.query),
                        headers=dict(self.headers.items()),
                        body=parsed,
                        raw=raw.decode("utf-8", errors="replace"),
                        status=status,
                        at=time.time(),
                    )
                )
                if delay:
                    time.sleep(delay)
                payload = body if body is not None else {"ok": 200 <= status < 300}
                self._send(status, "application/json", json.dumps(payload).encode())

            def _send(self, status: int, ctype: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        return Handler


def main(argv: Sequence[str] | None = None) -> None:
    """Run a capture server until interrupted."""
    parser = argparse.ArgumentParser(description="Truecount capture server")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args(argv)
    server = CaptureServer(args.port)
    print(f"capturing on {server.url} (UI: {server.url}/_ui)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
