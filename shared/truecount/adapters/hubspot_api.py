"""HubSpot CRM reader (httpx): the :class:`~truecount.webhooks.hubspot.HubSpotLookup`
port for ``POST /hubspot`` enrichment, in batches.

* ``POST {base}/crm/v3/objects/deals/batch/read`` with
  ``{"properties": [...], "propertiesWithHistory": [], "inputs": [{"id": ...}]}``;
* ``POST {base}/crm/v4/associations/deals/contacts/batch/read`` with
  ``{"inputs": [{"id": <deal id>}]}`` for the deals found: the object batch read
  returns no associations. Each result is ``{"from": {"id"}, "to":
  [{"toObjectId", ...}]}``; contacts keep the order HubSpot lists them in and
  only the first page is read (the mapping uses the first contact only);
* ``POST {base}/crm/v3/objects/contacts/batch/read``, as for deals.

At most 100 ids go in one request (HubSpot's batch limit), so a webhook delivery
(up to ~100 events) costs at most three requests: deals, their associations,
contacts. Batch reads are preferred to concurrent single reads: one request per
kind stays far below HubSpot's per-10-second rate limit and needs no threads.

Answers: 200, or 207 (multi-status) when some ids failed. An id that is not in
``results`` is "no such object" (None) when every per-item error is
``OBJECT_NOT_FOUND``; any other per-item category raises. A 404 whose JSON body
has category ``OBJECT_NOT_FOUND`` means none of the ids exist; any other 404
(e.g. a wrong base URL) raises. Per-item errors of the associations read mean
"no associated contact" (a deal without contacts is reported that way).

Every other failure (timeout, connection error, 401, 403, 429, 5xx, a body that
is not the documented JSON, the deadline passed) raises
:class:`~truecount.errors.UpstreamError`, which answers 503 so that HubSpot
retries the delivery. Error messages carry the status or an error category
only: nothing from a response body is logged (it holds PII), nor the token.

Time: each request's httpx timeouts are ``timeout`` (``lookup_timeout_seconds``)
capped by what is left before the caller's ``deadline``; no request starts once
the deadline has passed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx

from truecount.errors import UpstreamError
from truecount.webhooks.hubspot import (
    CONTACT_PROPERTIES,
    DEAL_PROPERTIES,
    HubSpotContact,
    HubSpotDeal,
)

DEFAULT_BASE_URL = "https://api.hubapi.com"
#: HubSpot's limit of inputs per batch read.
BATCH_LIMIT = 100
NOT_FOUND = "OBJECT_NOT_FOUND"
CONTACTS_READ = "/crm/v3/objects/contacts/batch/read"
DEALS_READ = "/crm/v3/objects/deals/batch/read"
DEAL_CONTACTS_READ = "/crm/v4/associations/deals/contacts/batch/read"
_CATEGORY = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_SUCCESS = frozenset({httpx.codes.OK, httpx.codes.MULTI_STATUS})


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), BATCH_LIMIT):
        yield unique[start : start + BATCH_LIMIT]


def _category(error: Any) -> str:
    """A per-item error's category, if it looks like one (never free text)."""
    value = error.get("category") if isinstance(error, dict) else None
    return value if isinstance(value, str) and _CATEGORY.match(value) else "unknown"


def _object_id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value) or None


def _properties(data: dict[str, Any]) -> dict[str, str | None]:
    raw = data.get("properties")
    if not isinstance(raw, dict):
        raise UpstreamError("HubSpot object without properties")
    return {str(k): v if isinstance(v, str) else None for k, v in raw.items()}


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise UpstreamError(f"HubSpot batch answer with a malformed {key!r}")
    return value


class HubSpotApi:
    """Reads contacts and deals through HubSpot's CRM batch APIs.

    Args:
        client: an httpx client (tests pass ``transport=httpx.MockTransport``).
        token: the private-app access token.
        base_url: the API base URL (a local fake in tests).
        timeout: per-request timeout in seconds; None keeps the client's.
        clock: monotonic seconds, compared with the callers' deadlines.
    """

    def __init__(
        self,
        client: httpx.Client,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._token = token
        self._base = base_url.rstrip("/")
        self._timeout = timeout
        self._clock = clock

    def _request_timeout(self, deadline: float | None) -> Any:
        if deadline is None:
            if self._timeout is None:
                return httpx.USE_CLIENT_DEFAULT
            return httpx.Timeout(self._timeout)
        left = deadline - self._clock()
        if left <= 0:
            raise UpstreamError("HubSpot lookup budget exhausted")
        return httpx.Timeout(
            left if self._timeout is None else min(left, self._timeout)
        )

    def _post(
        self, path: str, body: dict[str, Any], deadline: float | None
    ) -> dict[str, Any]:
        timeout = self._request_timeout(deadline)
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
        }
        try:
            response = self._client.post(
                f"{self._base}{path}", json=body, headers=headers, timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"HubSpot lookup failed: {type(exc).__name__}"
            ) from None
        status = response.status_code
        if status == httpx.codes.TOO_MANY_REQUESTS:
            raise UpstreamError("HubSpot lookup answered 429 (rate limited)")
        if status not in _SUCCESS and status != httpx.codes.NOT_FOUND:
            raise UpstreamError(f"HubSpot lookup answered {status}")
        try:
            data = response.json()
        except ValueError:
            raise UpstreamError(f"HubSpot lookup {status}: invalid JSON") from None
        if not isinstance(data, dict):
            raise UpstreamError(f"HubSpot lookup {status}: unexpected shape")
        if status == httpx.codes.NOT_FOUND:
            if _category(data) != NOT_FOUND:
                raise UpstreamError("HubSpot lookup answered 404")
            return {"results": [], "errors": [data]}
        return data

    def _read(
        self,
        path: str,
        ids: Sequence[str],
        properties: Sequence[str],
        deadline: float | None,
    ) -> dict[str, dict[str, Any] | None]:
        """``{id: object JSON or None}`` for every id, by batch reads."""
        found: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(ids):
            body = {
                "properties": list(properties),
                "propertiesWithHistory": [],
                "inputs": [{"id": ident} for ident in chunk],
            }
            data = self._post(path, body, deadline)
            for error in _list(data, "errors"):
                category = _category(error)
                if category != NOT_FOUND:
                    raise UpstreamError(f"HubSpot batch read failed: {category}")
            for item in _list(data, "results"):
                ident = _object_id(item.get("id")) if isinstance(item, dict) else None
                if ident is None:
                    raise UpstreamError("HubSpot batch result without an id")
                found[ident] = item
        return {ident: found.get(ident) for ident in ids}

    def _deal_contacts(
        self, deal_ids: Sequence[str], deadline: float | None
    ) -> dict[str, tuple[str, ...]]:
        """The contact ids associated with each deal (absent: none)."""
        contacts: dict[str, tuple[str, ...]] = {}
        for chunk in _chunks(deal_ids):
            body = {"inputs": [{"id": ident} for ident in chunk]}
            data = self._post(DEAL_CONTACTS_READ, body, deadline)
            for result in _list(data, "results"):
                source = result.get("from") if isinstance(result, dict) else None
                deal_id = _object_id(
                    source.get("id") if isinstance(source, dict) else None
                )
                targets = result.get("to") if deal_id else None
                if deal_id is None or not isinstance(targets, list):
                    raise UpstreamError("HubSpot association result malformed")
                ids = (
                    _object_id(t.get("toObjectId")) if isinstance(t, dict) else None
                    for t in targets
                )
                contacts[deal_id] = tuple(dict.fromkeys(i for i in ids if i))
        return contacts

    def get_deals(
        self, deal_ids: Sequence[str], deadline: float | None = None
    ) -> dict[str, HubSpotDeal | None]:
        """Read deals with amount, currency, stage and associated contacts.

        Args:
            deal_ids: HubSpot deal ids.
            deadline: ``time.monotonic()`` value after which no request starts.

        Returns:
            ``{id: deal}`` for every id; None when the deal does not exist.

        Raises:
            UpstreamError: a read failed, or the deadline passed.
        """
        raw = self._read(DEALS_READ, deal_ids, DEAL_PROPERTIES, deadline)
        found = [ident for ident, data in raw.items() if data is not None]
        contacts = self._deal_contacts(found, deadline) if found else {}
        return {
            ident: None
            if data is None
            else HubSpotDeal(
                id=ident,
                properties=_properties(data),
                contact_ids=contacts.get(ident, ()),
            )
            for ident, data in raw.items()
        }

    def get_contacts(
        self, contact_ids: Sequence[str], deadline: float | None = None
    ) -> dict[str, HubSpotContact | None]:
        """Read contacts with the enrichment properties.

        Args:
            contact_ids: HubSpot contact ids.
            deadline: ``time.monotonic()`` value after which no request starts.

        Returns:
            ``{id: contact}`` for every id; None when the contact does not exist.

        Raises:
            UpstreamError: a read failed, or the deadline passed.
        """
        raw = self._read(CONTACTS_READ, contact_ids, CONTACT_PROPERTIES, deadline)
        return {
            ident: None
            if data is None
            else HubSpotContact(id=ident, properties=_properties(data))
            for ident, data in raw.items()
        }


def make_hubspot_api(base_url: str, token: str, timeout: float) -> HubSpotApi:
    """Build the adapter with its own httpx client (one per function instance).

    Args:
        base_url: ``sources.hubspot.api_base_url``.
        token: the private-app token.
        timeout: ``sources.hubspot.lookup_timeout_seconds``, per request (capped
            by each call's deadline).

    Returns:
        The adapter.
    """
    client = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False)
    return HubSpotApi(client, token, base_url, timeout)
