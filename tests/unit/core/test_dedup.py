"""Dedup keys: which business event an event belongs to."""

from __future__ import annotations

from datetime import UTC, datetime

from truecount.config import DEFAULT_RULES, RuleConfig
from truecount.core.dedup import MAX_KEY_BYTES, dedup_key
from truecount.models.event import Commerce, Event, Lead

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _event(name: str, **fields: object) -> Event:
    return Event.model_validate(
        {"event_id": "e-1", "name": name, "source": "crm", "occurred_at": NOW,
         "received_at": NOW, **fields}
    )  # fmt: skip


def test_defaults_key_purchases_leads_and_deals_by_their_business_id() -> None:
    """purchase:<transaction>, lead:<lead>, <stage>:<lead>, <stage>:deal-<deal>,
    and event:<id> when the key field is missing."""
    purchase = _event("purchase", commerce=Commerce(transaction_id="T-1"))
    new_lead = _event("generate_lead", lead=Lead(lead_id="42"))
    qualified = _event("qualify_lead", lead=Lead(lead_id="42"))
    won = _event("close_convert_lead", lead=Lead(lead_id="42", deal_id="9"))
    bare = _event("purchase")

    assert dedup_key(purchase, DEFAULT_RULES["purchase"]) == "purchase:T-1"
    assert dedup_key(new_lead, DEFAULT_RULES["generate_lead"]) == "lead:42"
    assert dedup_key(qualified, DEFAULT_RULES["qualify_lead"]) == "qualify_lead:42"
    assert (
        dedup_key(won, DEFAULT_RULES["close_convert_lead"])
        == "close_convert_lead:deal-9"
    )
    assert dedup_key(bare, DEFAULT_RULES["purchase"]) == "event:e-1"
    assert dedup_key(purchase, RuleConfig()) == "event:e-1"


def test_a_key_too_long_for_a_pub_sub_attribute_is_hashed_stably() -> None:
    """A 256-character emoji transaction id (1 KiB in UTF-8) gives a short,
    stable key with its prefix kept."""
    long_id = "🛒" * 256
    event = _event("purchase", commerce=Commerce(transaction_id=long_id))

    key = dedup_key(event, DEFAULT_RULES["purchase"])

    assert key.startswith("purchase:sha256:")
    assert len(key.encode()) <= MAX_KEY_BYTES
    assert key == dedup_key(event, DEFAULT_RULES["purchase"])
