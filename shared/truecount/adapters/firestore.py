"""Firestore adapters: the ledger and the identity store.

* ``FirestoreLedger`` implements ``core.ledger.LedgerStore``: ``create()`` with
  its exists=false precondition (one write, no lock) claims a key; a transaction
  is used only for the merge and resume paths; ``update()`` applies the single
  status write.
* ``FirestoreIdentities`` implements ``core.stitch.IdentityStore``: one batched
  ``get_all`` per lookup and one batch commit per upsert.

Contention and transient errors (``Aborted``, ``DeadlineExceeded``,
``ServiceUnavailable``, ...) become ``RetryableError``: fanout raises, Pub/Sub
redelivers. The client is built lazily, once per process (``get_client``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from truecount.core.ledger import COLLECTION as LEDGER_COLLECTION
from truecount.core.ledger import LedgerWrite
from truecount.core.stitch import COLLECTION as IDENTITY_COLLECTION
from truecount.core.stitch import identity_doc_id
from truecount.errors import RetryableError

T = TypeVar("T")
ClientFactory = Callable[[], Any]


@functools.cache
def get_client(project: str) -> Any:
    """The process-wide ``firestore.Client`` for a project.

    ``FIRESTORE_EMULATOR_HOST`` in the environment points it at the emulator
    (the SDK reads it).

    Args:
        project: the Google Cloud project id.

    Returns:
        A cached client.
    """
    from google.cloud import firestore

    return firestore.Client(project=project)


def _transient_errors() -> tuple[type[BaseException], ...]:
    from google.api_core import exceptions

    return (
        exceptions.Aborted,
        exceptions.DeadlineExceeded,
        exceptions.ServiceUnavailable,
        exceptions.InternalServerError,
        exceptions.ResourceExhausted,
        exceptions.GatewayTimeout,
        exceptions.TooManyRequests,
    )


@contextmanager
def _retryable(what: str) -> Iterator[None]:
    """Turn transient Firestore errors into ``RetryableError``."""
    transient = _transient_errors()
    try:
        yield
    except transient as exc:
        raise RetryableError(f"firestore {what}: {type(exc).__name__}") from exc
    except ValueError as exc:
        # a transaction that ran out of attempts wraps the Aborted in ValueError
        if isinstance(exc.__cause__, transient):
            raise RetryableError(f"firestore {what}: contention") from exc
        raise


def _to_firestore(write: LedgerWrite) -> dict[str, Any]:
    from google.cloud import firestore

    data: dict[str, Any] = dict(write.set)
    for path, values in write.append.items():
        data[path] = firestore.ArrayUnion(list(values))
    return data


class FirestoreLedger:
    """``LedgerStore`` on Firestore.

    Args:
        client_factory: returns the ``firestore.Client`` (built on first use).
        collection: the collection name.
        transaction_attempts: tries of one transaction before giving up with
            ``RetryableError``; Pub/Sub redelivery is the outer retry.
    """

    def __init__(
        self,
        client_factory: ClientFactory,
        collection: str = LEDGER_COLLECTION,
        transaction_attempts: int = 2,
    ) -> None:
        self._client_factory = client_factory
        self._collection = collection
        self._attempts = transaction_attempts

    def _ref(self, doc_id: str) -> Any:
        return self._client_factory().collection(self._collection).document(doc_id)

    def create(self, doc_id: str, doc: Mapping[str, Any]) -> bool:
        """Create the document if absent (precondition exists=false).

        Returns:
            True when this call created it; False when it already existed.
        """
        from google.api_core import exceptions

        with _retryable("create"):
            try:
                self._ref(doc_id).create(dict(doc))
            except exceptions.Conflict:  # AlreadyExists is a Conflict
                return False
        return True

    def get(self, doc_id: str) -> dict[str, Any] | None:
        """Read the document, or None."""
        with _retryable("get"):
            snapshot = self._ref(doc_id).get()
        return snapshot.to_dict() if snapshot.exists else None

    def update(self, doc_id: str, write: LedgerWrite) -> None:
        """Apply a mutation (one write; the document must exist)."""
        with _retryable("update"):
            self._ref(doc_id).update(_to_firestore(write))

    def transact(
        self,
        doc_id: str,
        fn: Callable[[dict[str, Any] | None], tuple[LedgerWrite | None, T]],
    ) -> T:
        """Read the document, let ``fn`` decide and apply its write atomically."""
        from google.cloud import firestore

        client = self._client_factory()
        ref = client.collection(self._collection).document(doc_id)

        @firestore.transactional
        def run(transaction: Any) -> T:
            snapshot = ref.get(transaction=transaction)
            write, result = fn(snapshot.to_dict() if snapshot.exists else None)
            if write is not None:
                transaction.update(ref, _to_firestore(write))
            return result

        with _retryable("transaction"):
            result: T = run(client.transaction(max_attempts=self._attempts))
        return result


class FirestoreIdentities:
    """``IdentityStore`` on Firestore: ``identities/{sha256(kind:value)}``.

    Document: ``{kind, fields {name: value}, updated_at, expire_at}``. Upserts
    merge ``fields`` (newer values win, older ones stay); ``expire_at`` is the
    TTL field.
    """

    def __init__(
        self, client_factory: ClientFactory, collection: str = IDENTITY_COLLECTION
    ) -> None:
        self._client_factory = client_factory
        self._collection = collection

    def lookup(
        self, keys: Sequence[tuple[str, str]], now: datetime
    ) -> list[tuple[str, dict[str, Any]]]:
        """Fetch every key's record in one ``get_all`` round trip."""
        if not keys:
            return []
        client = self._client_factory()
        collection = client.collection(self._collection)
        refs = [collection.document(identity_doc_id(k, v)) for k, v in keys]
        with _retryable("get_all"):
            snapshots = {s.id: s for s in client.get_all(refs) if s.exists}
        found: list[tuple[str, dict[str, Any]]] = []
        for (kind, _), ref in zip(keys, refs, strict=True):
            snap = snapshots.get(ref.id)
            if snap is None:
                continue
            doc = snap.to_dict() or {}
            expire_at = doc.get("expire_at")
            if expire_at is not None and expire_at <= now:
                continue  # expired; TTL deletion may lag by a day
            found.append((kind, dict(doc.get("fields") or {})))
        return found

    def upsert(
        self,
        keys: Sequence[tuple[str, str]],
        fields: Mapping[str, Any],
        now: datetime,
        expire_at: datetime,
    ) -> None:
        """Merge ``fields`` under every key, in one batch commit."""
        if not keys:
            return
        client = self._client_factory()
        collection = client.collection(self._collection)
        batch = client.batch()
        for kind, value in keys:
            batch.set(
                collection.document(identity_doc_id(kind, value)),
                {
                    "kind": kind,
                    "fields": dict(fields),
                    "updated_at": now,
                    "expire_at": expire_at,
                },
                merge=True,
            )
        with _retryable("batch"):
            batch.commit()
