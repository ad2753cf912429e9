"""End-to-end fixtures: the whole local stack as real processes.

One stack per session: the emulators, ingest, webhook and fanout as
functions-framework processes wired by an emulator push subscription, and the
capture sink standing in for every platform. Scenarios keep apart by using a
distinct shopper (order id, click id, email) each.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from truecount.capture import Captured
from truecount.core.dedup import doc_id
from truecount.demo import DemoClient, Shopper
from truecount.devstack import DevStack, StackPorts
from truecount.emulators import check_prerequisites, free_port


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """The local stack on free ports, started once for the e2e session."""
    problem = check_prerequisites()
    if problem:
        import os

        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    ports = StackPorts(*(free_port() for _ in range(5)))
    workdir: Path = tmp_path_factory.mktemp("stack")
    with DevStack(ports=ports, project="tc-e2e", workdir=workdir) as running:
        yield running


@pytest.fixture
def env(stack: DevStack, monkeypatch: pytest.MonkeyPatch) -> DevStack:
    """Point this test's SDK clients at the stack's emulators."""
    for key in (
        "PUBSUB_EMULATOR_HOST",
        "FIRESTORE_EMULATOR_HOST",
        "GOOGLE_CLOUD_PROJECT",
    ):
        monkeypatch.setenv(key, stack.env[key])
    return stack


@pytest.fixture
def client(stack: DevStack) -> Iterator[DemoClient]:
    """Sends signed provider traffic to the stack."""
    demo = DemoClient(stack.ports.url("ingest"), stack.ports.url("webhook"))
    yield demo
    demo.http.close()


@pytest.fixture
def shopper() -> Shopper:
    """A shopper no other scenario uses."""
    tag = uuid.uuid4().hex[:8]
    return Shopper(
        client_id=f"{int(tag, 16)}.1700000000",
        session_id=str(1_700_000_000 + int(tag[:4], 16)),
        gclid=f"Cj0KCQ-{tag}",
        order_id=f"T-{tag}",
        email=f"jane.{tag}@example.com",
        contact_id=str(int(tag[:6], 16)),
        deal_id=str(int(tag[2:8], 16) + 1),
    )


class World:
    """Reads what the running stack did: captured requests and the ledger."""

    def __init__(self, stack: DevStack) -> None:
        self.stack = stack

    def about(self, prefix: str, needle: str) -> list[Captured]:
        """Captured requests to ``prefix`` whose body mentions ``needle``."""
        return [r for r in self.stack.capture.requests_to(prefix) if needle in r.raw]

    @staticmethod
    def wait_until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Poll ``check`` until it returns something truthy; return the last value."""
        deadline = time.monotonic() + timeout
        value = check()
        while not value and time.monotonic() < deadline:
            time.sleep(0.2)
            value = check()
        return value

    def settle(self, needle: str, quiet: float = 3.0, timeout: float = 40.0) -> None:
        """Wait until no new request mentioning ``needle`` came for ``quiet`` s."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = sum(needle in r.raw for r in self.stack.capture.requests)
            if count != last:
                last, since = count, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.2)

    @staticmethod
    def ledger(dedup_key: str) -> dict[str, Any]:
        """The ledger document of a business event, read from the emulator."""
        from google.cloud import firestore

        db = firestore.Client()
        snap = db.collection("ledger").document(doc_id(dedup_key)).get()
        return snap.to_dict() or {}


@pytest.fixture
def world(env: DevStack) -> World:
    """What the stack did, for assertions."""
    return World(env)
