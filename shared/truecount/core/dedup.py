"""Dedup keys: which business event an event belongs to.

Defaults (DESIGN.md): ``purchase:<transaction_id>``, ``refund:<transaction_id>``,
``lead:<lead_id>`` for ``generate_lead``, ``<name>:<lead_id>`` for the other lead
stages (a qualified lead is another business event than a new one), and
``event:<event_id>`` for everything else, or whenever the key field is missing.
"""

from __future__ import annotations

import hashlib

from truecount.config import RuleConfig
from truecount.models.event import Event


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
    elif rule.key == "lead_id":
        value = (event.lead.lead_id if event.lead else None) or event.identity.lead_id
    if value:
        return f"{prefix}:{value}"
    return f"event:{event.event_id}"


def with_dedup_key(event: Event, rule: RuleConfig) -> Event:
    """Return a copy of ``event`` with its dedup key set from the rule."""
    return event.model_copy(update={"dedup_key": dedup_key(event, rule)})


def doc_id(key: str) -> str:
    """Firestore document id for a key: lower-case hex SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()
