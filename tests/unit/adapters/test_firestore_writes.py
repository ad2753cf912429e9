"""The ledger's raw ``Write`` protobufs equal what the Firestore SDK would send.

``FirestoreLedger.create``/``update`` encode their writes directly (the SDK's
proto-plus encoding was the largest CPU cost of fanout); these tests build the
same writes with the SDK's own helpers and compare. No network: the client is
never called.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.types import write as write_types

from truecount.adapters.firestore import _to_firestore, _Writer
from truecount.core.ledger import LedgerWrite

NOW = datetime(2026, 11, 29, 20, 21, 7, 114525, tzinfo=UTC)


@pytest.fixture
def writer(monkeypatch: pytest.MonkeyPatch) -> _Writer:
    """A writer on a client for a (never contacted) emulator address."""
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9")
    return _Writer(firestore.Client(project="p"), "ledger")


def _path(writer: _Writer, doc_id: str) -> str:
    return f"{writer.client._database_string}/documents/ledger/{doc_id}"


def _doc() -> dict[str, Any]:
    return {
        "dedup_key": "purchase:T-1",
        "debug": False,
        "attempts": 0,
        "value": 42.5,
        "lease_until": None,
        "occurred_at": NOW - timedelta(seconds=3),
        "naive_at": datetime(2020, 1, 1, 1, 2, 3, 4),
        "offset_at": datetime(2020, 1, 1, 1, 2, 3, tzinfo=timezone(timedelta(hours=2))),
        "sources": {"stripe": [{"event_id": "st-1", "at": NOW}]},
        "event_ids": ["st-1"],
        "duplicates": [],
        "stitched": {},
        "raw": b"\x00\x01",
        "destinations": {
            "ga4": {"status": "pending", "attempts": 0, "updated_at": NOW},
        },
    }


def test_create_write_equals_the_sdk_create(writer: _Writer) -> None:
    """Same fields, values and exists=false precondition as ``create()``."""
    expected = _helpers.pbs_for_create(_path(writer, "d1"), _doc())[0]

    built = writer.create("d1", _doc())

    assert built == write_types.Write.pb(expected)
    assert built.current_document.exists is False


def test_update_write_equals_the_sdk_update(writer: _Writer) -> None:
    """Dotted paths, quoted odd names, ArrayUnion appends and exists=true."""
    write = LedgerWrite(
        set={
            "destinations.ga4": {
                "status": "delivered",
                "attempts": 1,
                "request": {"json": {"events": [{"name": "purchase"}]}},
                "notes": ["a"],
            },
            "destinations.odd-id": {"status": "pending"},
            "lease_until": None,
            "updated_at": NOW,
        },
        append={
            "sources.stripe": [{"event_id": "st-2", "at": NOW}],
            "event_ids": ["st-2"],
        },
    )
    expected = _helpers.pbs_for_update(_path(writer, "d1"), _to_firestore(write), None)[
        0
    ]

    built = writer.update("d1", write)

    assert built == write_types.Write.pb(expected)
    assert list(built.update_mask.field_paths) == [
        "destinations.ga4",
        "destinations.`odd-id`",
        "lease_until",
        "updated_at",
    ]
    assert built.current_document.exists is True
