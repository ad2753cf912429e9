"""``HttpSender`` over one shared ``httpx.Client``.

The sender adds the request's ``secret_headers`` and ``secret_query`` (which the
ledger never sees), sends ``content`` when the destination pre-serialised the
body (signed bodies) and ``json`` otherwise, and maps transport errors and
timeouts to a retryable ``DeliveryError``. Tests inject
``httpx.Client(transport=httpx.MockTransport(handler))``.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from truecount.errors import DeliveryError
from truecount.ports import HttpResponse, OutboundRequest

if TYPE_CHECKING:
    import httpx


@functools.cache
def get_http_client(timeout: float) -> httpx.Client:
    """The process-wide HTTP client (connection pooling across destinations).

    Args:
        timeout: seconds for connect, read, write and pool waits each.

    Returns:
        A cached ``httpx.Client``.
    """
    import httpx

    # keep-alive for every concurrent send (fanout's pool: 8 messages x the
    # destinations), so that a burst never closes and reopens connections
    return httpx.Client(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=48),
        follow_redirects=False,
    )


class HttpxSender:
    """Sends ``OutboundRequest``s with an injected ``httpx.Client``.

    Args:
        client: the shared client (its timeouts apply to every request).
    """

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def send(self, request: OutboundRequest) -> HttpResponse:
        """Send the request with its secrets added.

        Args:
            request: the built request.

        Returns:
            The status, headers and body.

        Raises:
            DeliveryError: a timeout or transport failure (``retryable=True``).
        """
        import httpx

        headers = {**request.headers, **request.secret_headers}
        content = request.content
        if content is None and request.json is not None:
            content = json.dumps(request.json, separators=(",", ":")).encode()
            headers.setdefault("Content-Type", "application/json")
        url = request.url
        if request.secret_query:
            # appended here rather than merged by httpx (one URL parse, not two)
            joiner = "&" if urlsplit(url).query else "?"
            url = f"{url}{joiner}{urlencode(request.secret_query)}"
        try:
            response = self._client.request(
                request.method, url, content=content, headers=headers
            )
        except httpx.TimeoutException as exc:
            raise DeliveryError(
                f"timeout: {type(exc).__name__}", destination="", retryable=True
            ) from None
        except httpx.HTTPError as exc:
            # never echo the URL: its query string may hold a secret
            raise DeliveryError(
                f"transport: {type(exc).__name__}", destination="", retryable=True
            ) from None
        return HttpResponse(
            response.status_code, dict(response.headers), response.content
        )
