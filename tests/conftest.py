"""Fixtures shared by every test tier.

* ``isolate_environment`` (autouse): no ``TRUECOUNT_*``, ``GOOGLE_CLOUD_PROJECT``
  or ``*_EMULATOR_HOST`` leaks in from the shell or from another test.
* ``emulator_tools`` (session): skips, or fails when ``CI=true``, if gcloud,
  Java or an emulator component is missing.
* ``emulators`` (session): the Pub/Sub and Firestore emulators, started once on
  free ports and stopped by process group. Missing tools skip the tests, or
  fail them when ``CI=true``.
* ``project_id``, ``pubsub``, ``firestore_db`` (per test): a fresh project on
  the emulators, so no state is shared between tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from truecount import emulators as emu
from truecount import log as truecount_log
from truecount.settings import get_settings

if TYPE_CHECKING:
    from google.cloud import firestore

_TESTS_DIR = Path(__file__).parent
_TIER_MARKERS = {"integration": pytest.mark.integration, "e2e": pytest.mark.e2e}


def _is_isolated_variable(name: str) -> bool:
    return (
        name.startswith("TRUECOUNT_")
        or name == "GOOGLE_CLOUD_PROJECT"
        or name.endswith("_EMULATOR_HOST")
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests under tests/integration and tests/e2e with their tier."""
    for item in items:
        try:
            tier = item.path.relative_to(_TESTS_DIR).parts[0]
        except ValueError:
            continue
        marker = _TIER_MARKERS.get(tier)
        if marker is not None:
            item.add_marker(marker)


@pytest.fixture(autouse=True)
def isolate_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Remove Truecount, project and emulator variables for the test, and the
    project a function's wiring gave the logger."""
    for name in [n for n in os.environ if _is_isolated_variable(n)]:
        monkeypatch.delenv(name)
    monkeypatch.setitem(truecount_log._state, "project", None)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def emulator_tools() -> None:
    """Skip (or, with ``CI=true``, fail) when gcloud, Java or an emulator is missing."""
    problem = emu.check_prerequisites()
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(problem)
        pytest.skip(problem)


@pytest.fixture(scope="session")
def emulators(emulator_tools: None) -> Iterator[emu.Emulators]:
    """Both emulators for the whole session, stopped by process group at the end."""
    running = emu.start_emulators(pubsub=True, firestore=True)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def project_id(
    emulators: emu.Emulators, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh project id on the emulators, set in the environment."""
    from truecount.adapters.pubsub import get_publisher

    project = f"tc-test-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", project)
    for name, value in emulators.env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield project
    get_publisher.cache_clear()


class PubSubHelper:
    """Pub/Sub admin bound to one test project on the emulator."""

    def __init__(self, project: str) -> None:
        self.project = project

    def create_topic(self, name: str) -> str:
        """Create topic ``name`` (3+ characters) and return its short name."""
        emu.ensure_topic(self.project, name)
        return name

    def subscribe(self, topic: str, name: str | None = None) -> str:
        """Create a pull subscription on ``topic`` and return its short name."""
        sub = name or f"{topic}-sub-{uuid.uuid4().hex[:6]}"
        emu.ensure_pull_subscription(self.project, topic, sub)
        return sub

    def pull(
        self, sub: str, expect: int | None = None, timeout: float = 10.0
    ) -> list[emu.PulledMessage]:
        """Pull (and ack) messages; see ``truecount.emulators.pull``."""
        return emu.pull(
            self.project,
            sub,
            max_messages=max(expect or 0, 100),
            expect=expect,
            timeout=timeout,
        )


@pytest.fixture
def pubsub(project_id: str) -> PubSubHelper:
    """Create topics and subscriptions, and pull, in this test's project."""
    return PubSubHelper(project_id)


@pytest.fixture
def firestore_db(
    project_id: str, emulators: emu.Emulators
) -> Iterator[firestore.Client]:
    """A Firestore client on the emulator for this test's project."""
    from google.cloud import firestore

    client = firestore.Client(project=project_id)
    yield client
    client.close()
    emu.reset_firestore(emulators.firestore_host, project_id)
