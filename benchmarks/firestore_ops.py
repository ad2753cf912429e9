"""Firestore operations per event, by event class, counted at the RPC layer.

The real fanout service (``FanoutService`` with the real ``FirestoreLedger``,
``FirestoreIdentities`` and ``HttpxSender``, built as
``functions/fanout/main.py`` builds it) runs in this process against the
Firestore emulator; destinations point at a loopback capture server process.
A counting wrapper around the Firestore GAPIC client counts what is billed:

* document reads: each document named in a ``BatchGetDocuments`` call
  (``get()``, ``get_all()`` and transactional reads all use it; a missing
  document is counted, as Firestore bills a read per document requested);
* document writes: each write in a ``Commit`` (``create``, ``update``, batched
  ``set``, transactional ``update``), failed ``create`` preconditions included
  and shown apart;
* query results of ``RunQuery`` (none expected).

It also reports the in-process CPU time of ``FanoutService.handle`` per event
(the function logic, SDK clients included; not the HTTP framing).

Run from the repository root::

    .venv/bin/python -m benchmarks.firestore_ops            # ~20 s
    .venv/bin/python -m benchmarks.firestore_ops --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from benchmarks import common, events

FUNNEL_RULE = '\n[rules.page_view]\nidempotence = "none"\n'


@dataclass
class OpCounter:
    """Billed Firestore operations seen at the RPC layer."""

    reads: int = 0
    reads_found: int = 0
    writes: int = 0
    failed_writes: int = 0
    commits: int = 0
    query_results: int = 0
    transactions: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        """Add to the counters (thread-safe)."""
        with self._lock:
            for name, value in deltas.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, int]:
        """The counters as a dict."""
        with self._lock:
            return {
                k: getattr(self, k)
                for k in (
                    "reads",
                    "reads_found",
                    "writes",
                    "failed_writes",
                    "commits",
                    "query_results",
                    "transactions",
                )
            }


def _field(request: Any, name: str) -> list[Any]:
    if request is None:
        return []
    if isinstance(request, dict):
        return list(request.get(name) or [])
    return list(getattr(request, name, []) or [])


@contextlib.contextmanager
def counting(counter: OpCounter) -> Iterator[None]:
    """Count billed operations of every Firestore client in this process."""
    from google.cloud.firestore_v1.services.firestore import client as gapic

    cls = gapic.FirestoreClient
    originals = {
        name: getattr(cls, name)
        for name in ("commit", "batch_get_documents", "run_query", "begin_transaction")
    }

    @functools.wraps(originals["commit"])
    def commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        writes = len(_field(kwargs.get("request"), "writes"))
        counter.add(commits=1, writes=writes)
        try:
            return originals["commit"](self, *args, **kwargs)
        except Exception:
            counter.add(failed_writes=writes)
            raise

    @functools.wraps(originals["batch_get_documents"])
    def batch_get(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter.add(reads=len(_field(kwargs.get("request"), "documents")))
        for response in originals["batch_get_documents"](self, *args, **kwargs):
            if "found" in response:
                counter.add(reads_found=1)
            yield response

    @functools.wraps(originals["run_query"])
    def run_query(self: Any, *args: Any, **kwargs: Any) -> Any:
        for response in originals["run_query"](self, *args, **kwargs):
            if "document" in response:
                counter.add(query_results=1)
            yield response

    @functools.wraps(originals["begin_transaction"])
    def begin(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter.add(transactions=1)
        return originals["begin_transaction"](self, *args, **kwargs)

    cls.commit = commit
    cls.batch_get_documents = batch_get
    cls.run_query = run_query
    cls.begin_transaction = begin
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(cls, name, original)


class _NoDeadLetters:
    """A ``RawPublisher`` that refuses: no benchmark message should dead-letter."""

    def publish_raw(self, topic: str, data: bytes, attributes: Any) -> str:
        raise RuntimeError(f"unexpected dead letter: {attributes}")


def build_service(project: str, config_path: str) -> Any:
    """The fanout service, wired like ``functions/fanout/main.py``."""
    from truecount.adapters.firestore import (
        FirestoreIdentities,
        FirestoreLedger,
        get_client,
    )
    from truecount.adapters.http import HttpxSender, get_http_client
    from truecount.config import load_config
    from truecount.core.fanout import FanoutService
    from truecount.destinations.registry import build_destinations

    config = load_config(config_path)

    def client() -> Any:
        return get_client(project)

    return FanoutService(
        config,
        build_destinations(config, os.environ),
        ledger=FirestoreLedger(client),
        identities=FirestoreIdentities(client),
        sender=HttpxSender(get_http_client(config.fanout.http_timeout_seconds)),
        publisher=_NoDeadLetters(),
    )


@dataclass(frozen=True)
class EventClass:
    """A kind of event and how to make the messages of one measurement."""

    key: str
    label: str
    #: (token) -> messages handled first, not counted (e.g. the browser lead)
    prepare: Callable[[str], list[Any]]
    #: (token) -> the messages counted
    measured: Callable[[str], list[Any]]


def _classes() -> list[EventClass]:
    def conv(t: str) -> list[Any]:
        return [events.purchase(t)]

    def lead_browser(t: str) -> list[Any]:
        return [
            events.lead(t, "generate_lead", "data", f"lead-{t}@example.com"),
        ]

    def lead_backend(t: str) -> list[Any]:
        return [events.lead(t, "close_convert_lead", "crm", f"lead-{t}@example.com")]

    return [
        EventClass(
            "conversion",
            "Conversion: backend `purchase` "
            "(ledger claim, identity lookup, 5 platforms)",
            lambda t: [],
            conv,
        ),
        EventClass(
            "conversion_redelivered",
            "The same conversion redelivered by Pub/Sub (already delivered)",
            conv,
            conv,
        ),
        EventClass(
            "funnel",
            'Funnel: `page_view`, idempotence = "none", no click ids',
            lambda t: [],
            lambda t: [events.page_view(t)],
        ),
        EventClass(
            "funnel_click_ids",
            'Funnel: `page_view`, idempotence = "none", with gclid + fbc',
            lambda t: [],
            lambda t: [events.page_view(t, with_click_ids=True)],
        ),
        EventClass(
            "browser_lead",
            "Browser `generate_lead` (ledger claim, identity upsert)",
            lambda t: [],
            lead_browser,
        ),
        EventClass(
            "backend_lookup",
            "Backend `close_convert_lead` with identity lookup (hits the browser lead)",
            lead_browser,
            lead_backend,
        ),
    ]


def measure_class(
    service: Any, counter: OpCounter, cls: EventClass, samples: int, subscription: str
) -> dict[str, Any]:
    """Handle ``samples`` events of one class; return ops and CPU per event."""
    totals = dict.fromkeys(counter.snapshot(), 0)
    cpu = wall = 0.0
    for _ in range(samples):
        token = uuid.uuid4().hex[:12]
        for event in cls.prepare(token):
            service.handle(
                events.push_envelope(event, subscription, token), datetime.now(UTC)
            )
        before = counter.snapshot()
        cpu_before = time.process_time()
        wall_before = time.perf_counter()
        outcomes = []
        for event in cls.measured(token):
            result = service.handle(
                events.push_envelope(event, subscription, token), datetime.now(UTC)
            )
            outcomes.append(getattr(result, "action", str(result)))
        cpu += time.process_time() - cpu_before
        wall += time.perf_counter() - wall_before
        after = counter.snapshot()
        for k in totals:
            totals[k] += after[k] - before[k]
    per_event = {k: round(v / samples, 2) for k, v in totals.items()}
    return {
        "label": cls.label,
        "samples": samples,
        "per_event": per_event,
        "cpu_ms_per_event": round(1000 * cpu / samples, 2),
        "wall_ms_per_event": round(1000 * wall / samples, 2),
        "last_outcomes": outcomes,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Count the operations of every event class."""
    from truecount.devstack import DEV_SECRETS, dev_config
    from truecount.settings import get_settings

    port = common.free_port()
    capture = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.capture_server", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=common.REPO_ROOT,
        start_new_session=True,
    )
    try:
        with common.emulators(pubsub=False, firestore=True):
            project = common.unique("bench-fsops")
            capture_url = f"http://{common.LOCALHOST}:{port}"
            config = common.write_config(dev_config(capture_url, overrides=FUNNEL_RULE))
            os.environ.update(DEV_SECRETS)
            os.environ["GOOGLE_CLOUD_PROJECT"] = project
            os.environ["TRUECOUNT_CONFIG"] = str(config)
            get_settings.cache_clear()
            _wait_port(port)
            service = build_service(project, str(config))
            logging.disable(logging.INFO)  # one log line per destination otherwise
            sub = f"projects/{project}/subscriptions/bench"
            counter = OpCounter()
            results: dict[str, Any] = {}
            with counting(counter):
                # warm-up: clients, connections, imports
                service.handle(
                    events.push_envelope(events.purchase("warm"), sub, "w"),
                    datetime.now(UTC),
                )
                for cls in _classes():
                    results[cls.key] = measure_class(
                        service, counter, cls, args.samples, sub
                    )
                    r = results[cls.key]
                    print(
                        f"  {cls.key:24} {r['per_event']}  cpu "
                        f"{r['cpu_ms_per_event']} ms  wall {r['wall_ms_per_event']} ms"
                        f"  {r['last_outcomes']}",
                        flush=True,
                    )
            config.unlink(missing_ok=True)
    finally:
        os.killpg(capture.pid, signal.SIGTERM)
        capture.wait(timeout=10)
    return _summarise(results, args)


def _wait_port(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection((common.LOCALHOST, port), timeout=0.5).close()
            return
        time.sleep(0.05)
    raise RuntimeError(f"capture server did not listen on {port}")


def _summarise(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for r in results.values():
        p = r["per_event"]
        rows.append(
            [
                r["label"],
                p["reads"],
                p["reads_found"],
                p["writes"],
                p["failed_writes"],
                p["commits"],
                p["transactions"],
                r["cpu_ms_per_event"],
                r["wall_ms_per_event"],
            ]
        )
    return {
        "date": common.today(),
        "machine": common.machine(),
        "samples": args.samples,
        "results": results,
        "table": common.table(
            [
                "event class",
                "reads",
                "(found)",
                "writes",
                "(failed create)",
                "commits",
                "transactions",
                "handle() CPU ms",
                "handle() wall ms",
            ],
            rows,
        ),
    }


def markdown(summary: dict[str, Any], command: str) -> str:
    """The docs section."""
    return f"""Measured {summary["date"]} on {summary["machine"]}.
Command: `{command}`

Mean per event over {summary["samples"]} events per class, counted at the \
Firestore RPC layer (`BatchGetDocuments` documents = reads, `Commit` writes = \
writes) around the real adapters, against the Firestore emulator. "Failed create" \
is a `create()` whose exists=false precondition failed (the dedup key was \
already claimed); it is counted in writes as an upper bound.

{summary["table"]}"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=10, help="events per class")
    parser.add_argument("--smoke", action="store_true", help="one event per class")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.samples = 1
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    summary = run(args)
    common.save_result("firestore_ops", summary)
    print()
    print(summary["table"])
    if args.write_docs:
        command = "python -m benchmarks.firestore_ops" + (
            " --smoke" if args.smoke else ""
        )
        common.update_docs("firestore", markdown(summary, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
