"""The emulator harness: process groups, readiness, Firestore reset, fixtures."""

from __future__ import annotations

import os
import urllib.request

import pytest

from truecount import emulators as emu


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.usefixtures("emulator_tools")
def test_stop_leaves_no_process_of_the_group(tmp_path):
    """After stop(), no process of the emulator's group (gcloud or Java) remains."""
    log = tmp_path / "pubsub.log"
    with emu.EmulatorProcess("pubsub", log_path=log) as emulator:
        pgid = emulator.pgid
        assert pgid is not None
        assert _group_exists(pgid)
        with urllib.request.urlopen(f"http://{emulator.host}/", timeout=5) as reply:
            assert reply.read().strip() == b"Ok"

    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert "Server started" in log.read_text()


def test_session_emulators_answer_and_expose_their_hosts(emulators):
    """The session emulators answer Ok and env() names both hosts."""
    env = emulators.env()

    assert env == {
        "PUBSUB_EMULATOR_HOST": emulators.pubsub_host,
        "FIRESTORE_EMULATOR_HOST": emulators.firestore_host,
    }
    for host in env.values():
        assert host.startswith("127.0.0.1:")
        with urllib.request.urlopen(f"http://{host}/", timeout=5) as reply:
            assert reply.read().strip() == b"Ok"
    assert all(_group_exists(pgid) for pgid in emulators.pids())


def test_project_id_fixture_sets_environment(project_id, emulators):
    """project_id sets GOOGLE_CLOUD_PROJECT and both emulator hosts."""
    assert project_id.startswith("tc-test-")
    assert os.environ["GOOGLE_CLOUD_PROJECT"] == project_id
    assert os.environ["PUBSUB_EMULATOR_HOST"] == emulators.pubsub_host
    assert os.environ["FIRESTORE_EMULATOR_HOST"] == emulators.firestore_host


def test_reset_firestore_deletes_every_document(firestore_db, emulators, project_id):
    """reset_firestore empties the project's database on the emulator."""
    firestore_db.collection("ledger").document("a").set({"status": "delivered"})
    firestore_db.collection("dedup").document("b").set({"n": 1})
    assert firestore_db.collection("ledger").document("a").get().exists

    emu.reset_firestore(emulators.firestore_host, project_id)

    assert not firestore_db.collection("ledger").document("a").get().exists
    assert list(firestore_db.collection("dedup").stream()) == []


def test_push_subscription_delivers_to_endpoint_and_can_be_repointed(pubsub):
    """ensure_push_subscription creates, then updates the endpoint when it exists."""
    topic = pubsub.create_topic("push-events")
    dead = pubsub.create_topic("push-dead")

    first = emu.ensure_push_subscription(
        pubsub.project,
        topic,
        "push-sub",
        "http://127.0.0.1:9/a",
        dead_letter_topic=dead,
    )
    second = emu.ensure_push_subscription(
        pubsub.project, topic, "push-sub", "http://127.0.0.1:9/b"
    )

    assert first == second == f"projects/{pubsub.project}/subscriptions/push-sub"
    from google.cloud import pubsub_v1

    with pubsub_v1.SubscriberClient() as client:
        sub = client.get_subscription(request={"subscription": first})
    assert sub.push_config.push_endpoint == "http://127.0.0.1:9/b"
    assert sub.dead_letter_policy.dead_letter_topic == (
        f"projects/{pubsub.project}/topics/push-dead"
    )
    assert sub.dead_letter_policy.max_delivery_attempts == 5


def test_pull_with_no_messages_returns_empty_after_timeout(pubsub):
    """pull returns an empty list when nothing arrives before the timeout."""
    sub = pubsub.subscribe(pubsub.create_topic("quiet-topic"))

    assert pubsub.pull(sub, timeout=1.0) == []


def test_helpers_refuse_to_run_without_emulator_host():
    """The admin helpers never talk to a real project: no emulator host, an error."""
    with pytest.raises(emu.EmulatorError, match="PUBSUB_EMULATOR_HOST"):
        emu.ensure_topic("some-project", "some-topic")
