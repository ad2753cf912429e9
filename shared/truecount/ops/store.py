"""Firestore reads for the operations commands: queries, never full scans.

* ``status``: ``ledger where updated_at >= since`` (single-field index, automatic).
* ``reconcile``: ``ledger where name in [...] and created_at >= since``
  (composite index ``name ASC, created_at ASC``; without it, the query falls
  back to ``created_at >= since`` and filters names here).
* ``retry-failed``: the ``status`` query, then one update per re-opened entry
  with an ``update_time`` precondition (:class:`LedgerEditor`).
* ``trace``: document ids first (``purchase:<id>``, ...), then
  ``event_ids array-contains`` and equality on ``transaction_id`` / ``lead_id``
  (single-field indexes, automatic).

``FIRESTORE_EMULATOR_HOST`` in the environment points the client at the
emulator (the SDK reads it). The SDK is imported lazily.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from truecount.core.ledger import COLLECTION as LEDGER_COLLECTION
from truecount.core.ledger import LedgerWrite
from truecount.ops.queries import candidate_doc_ids

ClientFactory = Callable[[], Any]

#: every event_id the entry has seen (array-contains, single-field index)
EVENT_IDS_FIELD = "event_ids"
#: event-id fields of entries written before fanout kept ``event_ids``
LEGACY_EVENT_ID_FIELDS: tuple[str, ...] = (
    "event_id",
    "delivery_event_id",
    "browser_event_id",
)
#: Firestore's limit on the values of an ``in`` filter
_IN_LIMIT = 30
#: documents returned by one lookup at most
LOOKUP_LIMIT = 20
ID_FIELD = "_id"
#: the snapshot's update time, for a write that must not overwrite a change
UPDATE_TIME_FIELD = "_update_time"

log = logging.getLogger(__name__)


def firestore_client(project: str) -> Any:
    """A ``firestore.Client`` for the project (emulator when the variable is set).

    Args:
        project: the Google Cloud project id.

    Returns:
        The client.
    """
    from google.cloud import firestore

    return firestore.Client(project=project)


def _field_filter(path: str, op: str, value: Any) -> Any:
    from google.cloud.firestore_v1.base_query import FieldFilter

    return FieldFilter(path, op, value)


def _with_id(snapshot: Any, update_time: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = snapshot.to_dict() or {}
    doc[ID_FIELD] = snapshot.id
    if update_time:
        doc[UPDATE_TIME_FIELD] = snapshot.update_time
    return doc


class LedgerReader:
    """Read-only queries over ``ledger``.

    Args:
        client_factory: returns the ``firestore.Client``.
        collection: the ledger collection name.
    """

    def __init__(
        self, client_factory: ClientFactory, collection: str = LEDGER_COLLECTION
    ) -> None:
        self._client_factory = client_factory
        self._collection_name = collection

    def _collection(self) -> Any:
        return self._client_factory().collection(self._collection_name)

    def updated_since(
        self, since: datetime, *, update_time: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Documents whose ``updated_at`` is at or after ``since``.

        Args:
            since: the window start (timezone-aware).
            update_time: also set ``_update_time`` (the snapshot's), for
                :meth:`LedgerEditor.update_if_unchanged`.

        Yields:
            Ledger documents (with ``_id``), streamed page by page.
        """
        query = self._collection().where(
            filter=_field_filter("updated_at", ">=", since)
        )
        for snapshot in query.stream():
            yield _with_id(snapshot, update_time)

    def created_since(
        self, since: datetime, names: Sequence[str]
    ) -> Iterator[dict[str, Any]]:
        """Documents of these names created at or after ``since``.

        Uses the composite index ``(name, created_at)``; when the backend says
        the index is missing, falls back to ``created_at >= since`` and filters
        the names here (slower, logged).

        Args:
            since: the window start.
            names: event names (any number; batched by 30).

        Yields:
            Ledger documents (with ``_id``).
        """
        from google.api_core import exceptions

        wanted = list(dict.fromkeys(names))
        try:
            batches = [
                wanted[i : i + _IN_LIMIT] for i in range(0, len(wanted), _IN_LIMIT)
            ]
            docs: list[dict[str, Any]] = []
            for batch in batches:
                query = (
                    self._collection()
                    .where(filter=_field_filter("name", "in", batch))
                    .where(filter=_field_filter("created_at", ">=", since))
                )
                docs.extend(_with_id(s) for s in query.stream())
        except exceptions.FailedPrecondition:
            log.warning("ledger index (name, created_at) missing: filtering locally")
            query = self._collection().where(
                filter=_field_filter("created_at", ">=", since)
            )
            name_set = set(wanted)
            docs = [
                doc
                for doc in (_with_id(s) for s in query.stream())
                if doc.get("name") in name_set
            ]
        yield from docs

    def get(self, doc_id: str) -> dict[str, Any] | None:
        """One document by id, or None."""
        snapshot = self._collection().document(doc_id).get()
        return _with_id(snapshot) if snapshot.exists else None

    def get_many(self, doc_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The existing documents among ``doc_ids``, in order (one round trip)."""
        if not doc_ids:
            return []
        client = self._client_factory()
        collection = client.collection(self._collection_name)
        refs = [collection.document(d) for d in doc_ids]
        found = {s.id: s for s in client.get_all(refs) if s.exists}
        return [_with_id(found[d]) for d in doc_ids if d in found]

    def where_equal(
        self, field: str, value: str, limit: int = LOOKUP_LIMIT
    ) -> list[dict[str, Any]]:
        """Documents whose ``field`` equals ``value``."""
        query = (
            self._collection()
            .where(filter=_field_filter(field, "==", value))
            .limit(limit)
        )
        return [_with_id(s) for s in query.stream()]

    def where_contains(
        self, field: str, value: str, limit: int = LOOKUP_LIMIT
    ) -> list[dict[str, Any]]:
        """Documents whose array ``field`` contains ``value``."""
        query = (
            self._collection()
            .where(filter=_field_filter(field, "array_contains", value))
            .limit(limit)
        )
        return [_with_id(s) for s in query.stream()]

    def resolve(self, arg: str) -> list[dict[str, Any]]:
        """Find the ledger documents a ``trace`` argument names.

        Order: document ids (dedup key, or ``purchase:``/``refund:``/``lead:``...
        ``:<id>`` and ``event:<id>``, each also as a debug key) in one
        ``get_all``; then ``event_ids`` array-contains and equality on
        ``transaction_id`` and ``lead_id``; when still nothing, equality on
        :data:`LEGACY_EVENT_ID_FIELDS`.

        Args:
            arg: a dedup key, transaction id, lead id or event id.

        Returns:
            Matching documents without repeats; empty when none.
        """
        found: dict[str, dict[str, Any]] = {}

        def add(docs: list[dict[str, Any]]) -> None:
            for doc in docs:
                found.setdefault(doc[ID_FIELD], doc)

        add(self.get_many([d for _, d in candidate_doc_ids(arg)]))
        if found and ":" in arg:
            return list(found.values())
        add(self.where_contains(EVENT_IDS_FIELD, arg))
        for field in ("transaction_id", "lead_id"):
            add(self.where_equal(field, arg))
        if not found:  # entries written before fanout kept ``event_ids``
            for field in LEGACY_EVENT_ID_FIELDS:
                add(self.where_equal(field, arg))
        return list(found.values())


class LedgerEditor:
    """The one write the operations commands make (``retry-failed``).

    Args:
        client_factory: returns the ``firestore.Client``.
        collection: the ledger collection name.
    """

    def __init__(
        self, client_factory: ClientFactory, collection: str = LEDGER_COLLECTION
    ) -> None:
        self._client_factory = client_factory
        self._collection_name = collection

    def update_if_unchanged(
        self, doc_id: str, write: LedgerWrite, update_time: Any
    ) -> bool:
        """Apply ``write`` in one update, only if the document has not changed
        since it was read (precondition ``update_time``).

        Args:
            doc_id: the ledger document id.
            write: the mutation (``set`` only).
            update_time: the snapshot's update time, as read; None applies the
                write whenever the document exists.

        Returns:
            False when the document changed (or vanished) meanwhile: nothing
            was written.
        """
        from google.api_core import exceptions

        client = self._client_factory()
        ref = client.collection(self._collection_name).document(doc_id)
        option = (
            client.write_option(last_update_time=update_time)
            if update_time is not None
            else None
        )
        try:
            ref.update(dict(write.set), option=option)
        except (exceptions.FailedPrecondition, exceptions.NotFound):
            return False
        return True
