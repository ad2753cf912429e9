"""FirestoreLedger turns contention into RetryableError and refused writes into
InvalidWriteError, over a fake client (no network).

The fake client lacks the GAPIC internals, so ``create``/``update`` take the SDK
path; ``transact`` runs the SDK's real ``firestore.transactional`` wrapper over
a fake transaction whose commit is aborted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from google.api_core import exceptions

from truecount.adapters.firestore import FirestoreLedger
from truecount.core.ledger import InvalidWriteError, LedgerWrite
from truecount.errors import RetryableError

NOW = datetime(2026, 4, 5, 12, 0, tzinfo=UTC)


class FakeSnapshot:
    """A document snapshot."""

    def __init__(self, data: dict[str, Any] | None) -> None:
        self._data = data
        self.exists = data is not None
        self.id = "d1"

    def to_dict(self) -> dict[str, Any] | None:
        return self._data


class FakeRef:
    """A document reference whose calls raise ``error`` when set."""

    def __init__(self, error: Exception | None, read_error: Exception | None) -> None:
        self.error = error
        self.read_error = read_error

    def create(self, data: dict[str, Any]) -> None:
        if self.error is not None:
            raise self.error

    def update(self, data: dict[str, Any]) -> None:
        if self.error is not None:
            raise self.error

    def get(self, transaction: Any = None) -> FakeSnapshot:
        if self.read_error is not None:
            raise self.read_error
        return FakeSnapshot({"attempts": 1})


class FakeTransaction:
    """Just what ``firestore.transactional`` touches; every commit aborts."""

    def __init__(self, max_attempts: int) -> None:
        self._read_only = False
        self._max_attempts = max_attempts
        self._id: bytes | None = None
        self.commits = 0
        self.rollbacks = 0

    def _clean_up(self) -> None:
        self._id = None

    def _begin(self, retry_id: bytes | None = None) -> None:
        self._id = b"tx"

    def _commit(self) -> list[Any]:
        self.commits += 1
        raise exceptions.Aborted("contention")

    def _rollback(self) -> None:
        self.rollbacks += 1

    def update(self, ref: Any, data: dict[str, Any]) -> None:
        pass


class FakeClient:
    """collection().document() -> FakeRef; transaction() -> FakeTransaction."""

    def __init__(
        self, error: Exception | None = None, read_error: Exception | None = None
    ) -> None:
        self.ref = FakeRef(error, read_error)
        self.transactions: list[FakeTransaction] = []

    def collection(self, name: str) -> FakeClient:
        return self

    def document(self, doc_id: str) -> FakeRef:
        return self.ref

    def transaction(self, max_attempts: int) -> FakeTransaction:
        tx = FakeTransaction(max_attempts)
        self.transactions.append(tx)
        return tx


def _ledger(client: FakeClient) -> FirestoreLedger:
    return FirestoreLedger(lambda: client)


def _decide(doc: dict[str, Any] | None) -> tuple[LedgerWrite | None, str]:
    return LedgerWrite(set={"lease_until": NOW}), "resume"


def test_aborted_create_is_retryable() -> None:
    """create() under contention raises RetryableError, not the SDK error."""
    ledger = _ledger(FakeClient(exceptions.Aborted("busy")))

    with pytest.raises(RetryableError, match="firestore create: Aborted"):
        ledger.create("d1", {"a": 1})


def test_aborted_update_is_retryable() -> None:
    """update() under contention raises RetryableError."""
    ledger = _ledger(FakeClient(exceptions.Aborted("busy")))

    with pytest.raises(RetryableError, match="firestore update: Aborted"):
        ledger.update("d1", LedgerWrite(set={"attempts": 2}))


def test_invalid_argument_update_is_an_invalid_write() -> None:
    """update() refused as InvalidArgument (too large) raises InvalidWriteError,
    whose message carries no document content."""
    ledger = _ledger(FakeClient(exceptions.InvalidArgument("doc with secret-ish")))

    with pytest.raises(InvalidWriteError) as caught:
        ledger.update("d1", LedgerWrite(set={"attempts": 2}))

    assert "secret-ish" not in str(caught.value)


def test_other_create_conflict_means_it_already_exists() -> None:
    """AlreadyExists (a Conflict) is False, not an error."""
    ledger = _ledger(FakeClient(exceptions.AlreadyExists("exists")))

    assert ledger.create("d1", {"a": 1}) is False


def test_transaction_aborted_on_every_commit_is_retryable() -> None:
    """The SDK retries the aborted commit, then wraps the Aborted in ValueError:
    that becomes RetryableError ("contention"), after two tries."""
    client = FakeClient()
    ledger = _ledger(client)

    with pytest.raises(RetryableError, match="contention") as caught:
        ledger.transact("d1", _decide)

    assert isinstance(caught.value.__cause__, ValueError)
    assert isinstance(caught.value.__cause__.__cause__, exceptions.Aborted)
    [tx] = client.transactions
    assert (tx.commits, tx.rollbacks) == (2, 1)


def test_transaction_read_aborted_is_retryable() -> None:
    """An Aborted raised by the transactional read is retryable too."""
    ledger = _ledger(FakeClient(read_error=exceptions.Aborted("lock timeout")))

    with pytest.raises(RetryableError, match="firestore transaction: Aborted"):
        ledger.transact("d1", _decide)


def test_value_error_not_caused_by_contention_propagates() -> None:
    """A ValueError from a bug is not hidden as retryable."""
    ledger = _ledger(FakeClient(read_error=ValueError("bug")))

    with pytest.raises(ValueError, match="bug"):
        ledger.transact("d1", _decide)
