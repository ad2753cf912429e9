"""The Firestore ledger adapter on the real emulator, fast path and fallback."""

from __future__ import annotations

from typing import Any

import pytest

from truecount.adapters.firestore import FirestoreLedger
from truecount.core.ledger import LedgerWrite


class _PublicOnly:
    """A client that offers only the public SDK surface (as a future SDK might)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def collection(self, name: str) -> Any:
        return self._client.collection(name)

    def transaction(self, **kwargs: Any) -> Any:
        return self._client.transaction(**kwargs)


@pytest.mark.parametrize("surface", ["fast", "public"])
def test_claim_update_and_read_agree_on_both_write_paths(
    firestore_db: Any, surface: str
) -> None:
    """create() claims once (the second create loses), update() applies dotted
    sets and array appends, and a read returns both, with or without the raw
    protobuf fast path."""
    client = firestore_db if surface == "fast" else _PublicOnly(firestore_db)
    ledger = FirestoreLedger(lambda: client, collection=f"ledger_{surface}")

    first = ledger.create("k1", {"name": "purchase", "event_ids": ["e1"]})
    second = ledger.create("k1", {"name": "purchase", "event_ids": ["e2"]})
    ledger.update(
        "k1",
        LedgerWrite(
            set={"destinations.ga4.status": "delivered", "attempts": 1},
            append={"event_ids": ["e3"]},
        ),
    )

    assert (first, second) == (True, False)
    doc = ledger.get("k1")
    assert doc is not None
    assert doc["event_ids"] == ["e1", "e3"]
    assert doc["destinations"] == {"ga4": {"status": "delivered"}}
    assert doc["attempts"] == 1
