"""Ledger documents written by a real ``FanoutService`` over in-memory fakes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from ops_support import ops_config, run_scenario

from truecount.core.fanout import FanoutService
from truecount.destinations.registry import build_destinations
from truecount.testing import (
    InMemoryIdentities,
    InMemoryLedger,
    RecordingPublisher,
    ScriptedSender,
)

NOW = datetime(2026, 4, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def scenario_ledger() -> InMemoryLedger:
    """The in-memory ledger after the ops scenario ran through fanout."""
    config = ops_config("http://sink.test")
    sender = ScriptedSender()
    ledger = InMemoryLedger()
    service = FanoutService(
        config,
        build_destinations(config, {}),
        ledger=ledger,
        identities=InMemoryIdentities(),
        sender=sender,
        publisher=RecordingPublisher(),
    )
    run_scenario(service, NOW, lambda: sender.script("http://sink.test/sink", [400]))
    return ledger


@pytest.fixture
def scenario_docs(scenario_ledger: InMemoryLedger) -> list[dict[str, Any]]:
    """The scenario's ledger documents."""
    return list(scenario_ledger.docs.values())
