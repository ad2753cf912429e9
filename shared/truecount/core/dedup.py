"""Dedup keys: which business event an event belongs to.

Defaults (DESIGN.md): ``purchase:<transaction_id>``, ``refund:<transaction_id>``,
``lead:<lead_id>`` for ``generate_lead``, ``<name>:<lead_id>`` for the other lead
stages (a qualified lead is another business event than a new one), or
``<name>:deal-<deal_id>`` when the event names a deal (a lead can win several), and
``event:<event_id>`` for everything else, or whenever the key field is missing.
"""

from __future__ import annotations

import hashlib

from truecount.config import RuleConfig
from truecount.models.event import Event

#: longer keys are replaced by their hash, so they fit a Pub/Sub attribute
MAX_KEY_BYTES = 512


def dedup_key(event: Event, rule: RuleConfig) -> str:
    """Compute the dedup key of an event under its rule.

    Args:
        event: the canonical event.
        rule: the effective rule for ``event.name`` (``Config.rule(name)``).

    Returns:
        e.g. ``purchase:T-1001``.
    """
    prefix = rule.prefix or event.name
    value: str | None = None
    if rule.key == "transaction_id" and event.commerce is not None:
        value = event.commerce.transaction_id
    elif rule.key == "lead_id" and event.lead is not None and event.lead.deal_id:
        value = f"deal-{event.lead.deal_id}"  # one lead can win several deals
    elif rule.key == "lead_id":
        value = (event.lead.lead_id if event.lead else None) or event.identity.lead_id
    key = f"{prefix}:{value}" if value else f"event:{event.event_id}"
    if len(key.encode()) > MAX_KEY_BYTES:  # a Pub/Sub attribute holds 1024 bytes
        return f"{prefix}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return key


def with_dedup_key(event: Event, rule: RuleConfig) -> Event:
    """Return ``event`` with its dedup key set from the rule.

    A copy when the key changes; the event itself when it already carries that
    key (e.g. the default ``event:<event_id>``), since nothing would differ.
    """
    key = dedup_key(event, rule)
    if key == event.dedup_key:
        return event
    return event.model_copy(update={"dedup_key": key})


def doc_id(key: str) -> str:
    """Firestore document id for a key: lower-case hex SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()
