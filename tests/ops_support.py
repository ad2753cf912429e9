"""A fixed day of traffic for the operations commands, and what they must report.

``run_scenario`` pushes the events through a real ``FanoutService`` (fakes in
unit tests, Firestore emulator and a capture server in integration tests), so
the ledger documents the commands read are the ones fanout writes.

Two ``http`` destinations: ``ads`` needs ``ad_user_data`` consent (unknown
denies), ``sink`` takes everything and answers 400 to the T-2 purchase.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from truecount.config import Config, parse_config
from truecount.core.fanout import FanoutResult, FanoutService
from truecount.errors import RetryableError
from truecount.models.event import (
    ClickIds,
    Client,
    Commerce,
    Consent,
    Event,
    Identity,
    Lead,
)

E1, E2, E3, E4 = ("1" * 64, "2" * 64, "3" * 64, "4" * 64)
P1 = "5" * 64
GRANTED = Consent(
    ad_storage="granted",
    analytics_storage="granted",
    ad_user_data="granted",
    ad_personalization="granted",
)


def ops_config(base_url: str) -> Config:
    """Stripe and CRM configured (purchase truth = backend); two http sinks."""
    return parse_config(
        f"""
[sources.stripe]
[sources.crm]

[destinations.ads]
type = "http"
endpoint = "{base_url}/ads"
consent = ["ad_user_data"]
unknown_consent = "deny"

[destinations.sink]
type = "http"
endpoint = "{base_url}/sink"
"""
    )


def _event(event_id: str, name: str, source: str, now: datetime, **kw: Any) -> Event:
    base: dict[str, Any] = {
        "event_id": event_id,
        "name": name,
        "source": source,
        "occurred_at": now - timedelta(minutes=30),
        "received_at": now - timedelta(minutes=30),
    }
    base.update(kw)
    return Event.model_validate(base)


def _purchase(tx: str, value: str = "25.00") -> Commerce:
    return Commerce(transaction_id=tx, value=Decimal(value), currency="EUR")


def scenario_events(now: datetime) -> list[Event]:
    """The events in processing order (see the module docstring)."""
    return [
        # T-1: browser first (held), then Stripe (merged, delivered)
        _event(
            "ga4-t1",
            "purchase",
            "ga4",
            now,
            client=Client(client_id="111.222", session_id="s-1", ip="203.0.113.7"),
            click_ids=ClickIds(gclid="G-1", fbp="fb.1.1.1"),
            identity=Identity(email_sha256=E1),
            consent=GRANTED,
            commerce=_purchase("T-1"),
        ),
        _event(
            "evt_st_t1",
            "purchase",
            "stripe",
            now,
            identity=Identity(email_sha256=E1, phone_sha256=P1),
            commerce=_purchase("T-1"),
        ),
        # L-7: browser lead, then a CRM qualification that is stitched by lead_id;
        # the CRM records that the lead withdrew ad_user_data consent, which wins
        # over the browser's grant (the other consent types come from the browser)
        _event(
            "data-l7",
            "generate_lead",
            "data",
            now,
            client=Client(client_id="777.888", session_id="s-7"),
            click_ids=ClickIds(gclid="G-7"),
            identity=Identity(email_sha256=E2),
            consent=GRANTED,
            lead=Lead(lead_id="L-7"),
        ),
        _event(
            "crm-l7-q",
            "qualify_lead",
            "crm",
            now,
            identity=Identity(email_sha256=E2),
            consent=Consent(ad_user_data="denied"),
            lead=Lead(lead_id="L-7"),
        ),
        # T-2: Stripe only; the sink refuses it (400)
        _event(
            "evt_st_t2",
            "purchase",
            "stripe",
            now,
            identity=Identity(email_sha256=E3),
            commerce=_purchase("T-2"),
        ),
        # T-3: browser only, never confirmed (held)
        _event(
            "ga4-t3",
            "purchase",
            "ga4",
            now,
            client=Client(client_id="333.444", session_id="s-3"),
            consent=GRANTED,
            commerce=_purchase("T-3"),
        ),
        # a page view: delivered, not a conversion
        _event(
            "ga4-pv1",
            "page_view",
            "ga4",
            now,
            client=Client(client_id="555.666", session_id="s-5"),
            consent=GRANTED,
        ),
        # L-8: CRM first (delivered), the browser copy is a duplicate
        _event(
            "crm-l8",
            "generate_lead",
            "crm",
            now,
            identity=Identity(email_sha256=E4),
            lead=Lead(lead_id="L-8"),
        ),
        _event(
            "data-l8",
            "generate_lead",
            "data",
            now,
            client=Client(client_id="888.999", session_id="s-8"),
            click_ids=ClickIds(fbc="fb.1.1.abc"),
            identity=Identity(email_sha256=E4),
            consent=GRANTED,
            lead=Lead(lead_id="L-8"),
        ),
    ]


def run_scenario(
    service: FanoutService, now: datetime, fail_next_sink: Callable[[], None]
) -> dict[str, FanoutResult]:
    """Process every scenario event once; ``fail_next_sink`` runs before T-2.

    Returns:
        event_id -> fanout result.
    """
    results: dict[str, FanoutResult] = {}
    for event in scenario_events(now):
        if event.event_id == "evt_st_t2":
            fail_next_sink()
        try:
            results[event.event_id] = service.process(event, now)
        except RetryableError as exc:  # pragma: no cover - a broken scenario
            raise AssertionError(f"{event.event_id}: unexpected retry: {exc}") from exc
    return results


EXPECTED_STATUS: dict[str, Any] = {
    "documents": 7,
    "held": 1,
    "destinations": {
        "ads": {
            "delivered": 3,
            "pending": 0,
            "retrying": 0,
            "deferred": 0,
            "skipped": {"consent": 3},
            "failed": {},
        },
        "sink": {
            "delivered": 5,
            "pending": 0,
            "retrying": 0,
            "deferred": 0,
            "skipped": {},
            "failed": {"http_400": 1},
        },
    },
    "dedup_hits": {"crm+data": 1, "ga4+stripe": 1},
}

#: name -> (total, both, backend_only, browser_only)
EXPECTED_CONVERSIONS: dict[str, tuple[int, int, int, int]] = {
    "purchase": (3, 1, 1, 1),
    "generate_lead": (2, 1, 0, 1),
    "qualify_lead": (1, 0, 1, 0),
}

#: destination -> (delivered, {identifier: count})
EXPECTED_COVERAGE: dict[str, tuple[int, dict[str, int]]] = {
    "ads": (
        2,
        {
            "email_sha256": 2,
            "phone_sha256": 1,
            "fbc": 0,
            "fbp": 1,
            "gclid": 2,
            "client_id+session_id": 2,
        },
    ),
    "sink": (
        4,
        {
            "email_sha256": 4,
            "phone_sha256": 1,
            "fbc": 0,
            "fbp": 1,
            "gclid": 3,
            "client_id+session_id": 3,
        },
    ),
}
