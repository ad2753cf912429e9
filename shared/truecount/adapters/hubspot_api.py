"""HubSpot CRM v3 reader (httpx): the :class:`~truecount.webhooks.hubspot.HubSpotLookup`
port for ``POST /hubspot`` enrichment.

* ``GET {base}/crm/v3/objects/contacts/{id}?properties=...``
* ``GET {base}/crm/v3/objects/deals/{id}?properties=...&associations=contacts``:
  the v3 object read returns the associated contact ids inline
  (``associations.contacts.results[].id``), so a deal costs one request, not
  two as with the v4 associations endpoint. The first contact listed is used.

Authentication is the private-app token as ``Authorization: Bearer``. A 404 is
"no such object" (None). Every other failure (timeout, connection error, 401,
403, 429, 5xx, a body that is not the documented JSON) raises
:class:`~truecount.errors.UpstreamError`, which answers 503 so that HubSpot
retries the delivery. Nothing from a response body is logged: it holds PII.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from truecount.errors import UpstreamError
from truecount.webhooks.hubspot import (
    CONTACT_PROPERTIES,
    DEAL_PROPERTIES,
    HubSpotContact,
    HubSpotDeal,
)

DEFAULT_BASE_URL = "https://api.hubapi.com"


def _properties(data: dict[str, Any]) -> dict[str, str | None]:
    raw = data.get("properties")
    if not isinstance(raw, dict):
        raise UpstreamError("HubSpot object without properties")
    return {str(k): v if isinstance(v, str) else None for k, v in raw.items()}


def _contact_ids(data: dict[str, Any]) -> tuple[str, ...]:
    associations = data.get("associations") or {}
    contacts = associations.get("contacts") if isinstance(associations, dict) else None
    results = contacts.get("results") if isinstance(contacts, dict) else None
    ids: list[str] = []
    for result in results if isinstance(results, list) else []:
        ident = result.get("id") if isinstance(result, dict) else None
        if isinstance(ident, str | int) and str(ident) not in ids:
            ids.append(str(ident))
    return tuple(ids)


class HubSpotApi:
    """Reads contacts and deals through the HubSpot CRM v3 API.

    Args:
        client: an httpx client (tests pass ``transport=httpx.MockTransport``).
        token: the private-app access token.
        base_url: the API base URL (a local fake in tests).
    """

    def __init__(
        self, client: httpx.Client, token: str, base_url: str = DEFAULT_BASE_URL
    ) -> None:
        self._client = client
        self._token = token
        self._base = base_url.rstrip("/")

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any] | None:
        url = f"{self._base}{path}"
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
        }
        try:
            response = self._client.get(url, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"HubSpot lookup failed: {type(exc).__name__}"
            ) from None
        if response.status_code == httpx.codes.NOT_FOUND:
            return None
        if response.status_code != httpx.codes.OK:
            raise UpstreamError(f"HubSpot lookup answered {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise UpstreamError("HubSpot lookup answered invalid JSON") from None
        if not isinstance(data, dict):
            raise UpstreamError("HubSpot lookup answered an unexpected shape")
        return data

    def get_contact(self, contact_id: str) -> HubSpotContact | None:
        """Read a contact with the enrichment properties.

        Args:
            contact_id: the HubSpot contact id.

        Returns:
            The contact, or None when it does not exist.

        Raises:
            UpstreamError: the lookup failed.
        """
        path = f"/crm/v3/objects/contacts/{quote(contact_id, safe='')}"
        data = self._get(path, {"properties": ",".join(CONTACT_PROPERTIES)})
        if data is None:
            return None
        return HubSpotContact(
            id=str(data.get("id", contact_id)), properties=_properties(data)
        )

    def get_deal(self, deal_id: str) -> HubSpotDeal | None:
        """Read a deal with its amount, currency, stage and associated contacts.

        Args:
            deal_id: the HubSpot deal id.

        Returns:
            The deal, or None when it does not exist.

        Raises:
            UpstreamError: the lookup failed.
        """
        path = f"/crm/v3/objects/deals/{quote(deal_id, safe='')}"
        params = {"properties": ",".join(DEAL_PROPERTIES), "associations": "contacts"}
        data = self._get(path, params)
        if data is None:
            return None
        return HubSpotDeal(
            id=str(data.get("id", deal_id)),
            properties=_properties(data),
            contact_ids=_contact_ids(data),
        )


def make_hubspot_api(base_url: str, token: str, timeout: float) -> HubSpotApi:
    """Build the adapter with its own httpx client (one per function instance).

    Args:
        base_url: ``sources.hubspot.api_base_url``.
        token: the private-app token.
        timeout: ``sources.hubspot.lookup_timeout_seconds``, per request.

    Returns:
        The adapter.
    """
    client = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False)
    return HubSpotApi(client, token, base_url)
