"""Identity stitching and context merging: pure.

An event's *context* is a flat map of the fields that describe who and where:
client and session ids, IP and user agent, page, click ids, hashed identity and
consent. Names are flat and unique (``client_id``, ``gclid``, ``page_location``,
``consent_ad_user_data``), so that the ledger and the identity store can keep
them as plain maps.

Two sources fill a backend event's missing context, never overwriting what the
event carries:

* the ledger: the browser event held for the same dedup key (``truth = "backend"``);
* the identity store ``identities/{sha256(kind:value)}``: browser events upsert
  their click ids and ids under each identity key they carry (``user_id``,
  ``email_sha256``, ``lead_id``, ``client_id``, ``transaction_id``), and backend
  events look them up days later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from truecount.models.event import (
    CONSENT_TYPES,
    ClickIds,
    Client,
    Consent,
    Event,
    Identity,
    Page,
)

COLLECTION = "identities"


class IdentityStore(Protocol):
    """The click-id store ``identities/{sha256(kind:value)}`` (Firestore).

    Both methods raise ``truecount.errors.RetryableError`` on a transient error.
    """

    def lookup(
        self, keys: Sequence[tuple[str, str]], now: datetime
    ) -> list[tuple[str, dict[str, Any]]]:
        """Fetch the records of these keys in one round trip.

        Returns:
            ``(kind, fields)`` for each key found and not expired, in key order.
        """
        ...

    def upsert(
        self,
        keys: Sequence[tuple[str, str]],
        fields: Mapping[str, Any],
        now: datetime,
        expire_at: datetime,
    ) -> None:
        """Merge ``fields`` into the record of every key, in one batch."""
        ...


# flat name -> (section, attribute)
CONTEXT_FIELDS: dict[str, tuple[str, str]] = {
    **{f: ("client", f) for f in Client.model_fields},
    **{f"page_{f}": ("page", f) for f in Page.model_fields},
    **{f: ("click_ids", f) for f in ClickIds.model_fields},
    **{f: ("identity", f) for f in Identity.model_fields},
    **{f"consent_{f}": ("consent", f) for f in CONSENT_TYPES},
}

CLICK_ID_FIELDS: tuple[str, ...] = tuple(ClickIds.model_fields)

#: what a browser event stores in the identity store
IDENTITY_RECORD_FIELDS: tuple[str, ...] = (
    *CLICK_ID_FIELDS,
    "client_id",
    "session_id",
    "user_id",
    "email_sha256",
    "email_sha256_google",
    "phone_sha256",
    "phone_sha256_e164",
    # the user's latest consent choice in the browser (granted or denied): a
    # backend event that carries no consent signal inherits it, denials included
    *(f"consent_{f}" for f in CONSENT_TYPES),
)

#: identity keys, most specific first: a lookup prefers the earlier kinds
IDENTITY_KINDS: tuple[str, ...] = (
    "transaction_id",
    "lead_id",
    "user_id",
    "email_sha256",
    "client_id",
)

#: fields worth an identity-store write: without one of them, skip the upsert
_WORTH_STORING: frozenset[str] = frozenset(
    {*CLICK_ID_FIELDS, "user_id", "email_sha256", "phone_sha256", "phone_sha256_e164"}
)

_SECTION_MODELS: dict[str, type[Client | Page | ClickIds | Identity | Consent]] = {
    "client": Client,
    "page": Page,
    "click_ids": ClickIds,
    "identity": Identity,
    "consent": Consent,
}


def extract_context(event: Event) -> dict[str, Any]:
    """The event's context as a flat map, set fields only.

    Consent types are included only when ``granted`` or ``denied``.

    Args:
        event: the canonical event.

    Returns:
        e.g. ``{"client_id": "1.2", "gclid": "abc", "consent_ad_storage": "granted"}``.
    """
    out: dict[str, Any] = {}
    for name, (section, attr) in CONTEXT_FIELDS.items():
        value = _get(event, section, attr)
        if value is not None:
            out[name] = value
    return out


def _get(event: Event, section: str, attr: str) -> Any:
    part = getattr(event, section)
    if part is None:
        return None
    value = getattr(part, attr)
    if section == "consent" and value == "unknown":
        return None
    return value


def missing_from(
    context: Mapping[str, Any], values: Mapping[str, Any]
) -> dict[str, Any]:
    """The entries of ``values`` whose field ``context`` lacks.

    Args:
        context: what is already known.
        values: candidate values.

    Returns:
        The subset of ``values`` that would add information.
    """
    return {
        k: v
        for k, v in values.items()
        if k in CONTEXT_FIELDS and v is not None and context.get(k) is None
    }


def fill_missing(event: Event, values: Mapping[str, Any]) -> tuple[Event, list[str]]:
    """Fill the event's missing context fields from ``values``; never overwrite.

    Unknown consent counts as missing. A value that does not validate for its
    field (e.g. stale data of another shape) is ignored.

    Args:
        event: the event to complete.
        values: flat context values (``CONTEXT_FIELDS`` names).

    Returns:
        The completed event and the sorted names of the fields filled.
    """
    adds = missing_from(extract_context(event), values)
    if not adds:
        return event, []
    by_section: dict[str, dict[str, Any]] = {}
    for name, value in adds.items():
        section, attr = CONTEXT_FIELDS[name]
        by_section.setdefault(section, {})[attr] = value
    update: dict[str, Any] = {}
    filled: list[str] = []
    for section, fields in by_section.items():
        current = getattr(event, section)
        base = current.model_dump(exclude_none=True) if current is not None else {}
        model = _SECTION_MODELS[section]
        accepted: dict[str, Any] = {}
        for attr, value in fields.items():
            try:
                model.model_validate({**base, **accepted, attr: value})
            except ValidationError:
                continue
            accepted[attr] = value
        if accepted:
            update[section] = model.model_validate({**base, **accepted})
            filled.extend(
                n
                for n, (s, a) in CONTEXT_FIELDS.items()
                if s == section and a in accepted
            )
    if not update:
        return event, []
    return event.model_copy(update=update), sorted(filled)


def identity_keys(event: Event) -> list[tuple[str, str]]:
    """The identity keys an event carries, most specific first.

    Args:
        event: the canonical event.

    Returns:
        ``[(kind, value), ...]`` for each of ``IDENTITY_KINDS`` the event has.
    """
    values = {
        "transaction_id": event.commerce.transaction_id if event.commerce else None,
        "lead_id": (event.lead.lead_id if event.lead else None)
        or event.identity.lead_id,
        "user_id": event.client.user_id,
        "email_sha256": event.identity.email_sha256,
        "client_id": event.client.client_id,
    }
    return [(kind, values[kind]) for kind in IDENTITY_KINDS if values[kind]]  # type: ignore[misc]


def identity_doc_id(kind: str, value: str) -> str:
    """Document id in ``identities``: lower-case hex SHA-256 of ``kind:value``."""
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


def identity_record(event: Event) -> dict[str, Any]:
    """What a browser event stores under each of its identity keys.

    Args:
        event: a browser event.

    Returns:
        The set ``IDENTITY_RECORD_FIELDS`` values, or ``{}`` when none of them
        would help a later backend event (no click id, user id, email or phone):
        then no write is worth its cost.
    """
    context = extract_context(event)
    record = {f: context[f] for f in IDENTITY_RECORD_FIELDS if f in context}
    if not _WORTH_STORING.intersection(record):
        return {}
    return record


def merge_identities(
    found: Iterable[tuple[str, Mapping[str, Any]]],
) -> tuple[dict[str, Any], dict[str, str]]:
    """Combine identity records, earlier (more specific) keys winning.

    Args:
        found: ``(kind, fields)`` pairs in ``IDENTITY_KINDS`` order.

    Returns:
        The combined fields and, per field, the key kind it came from.
    """
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for kind, fields in found:
        for name, value in fields.items():
            if name in CONTEXT_FIELDS and value is not None and name not in values:
                values[name] = value
                origin[name] = kind
    return values, origin
