"""The replay loop over fake dead-letter and topic ports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from truecount.errors import PublishError
from truecount.ops.replay import (
    DeadLetter,
    ReplayFilter,
    reason_code,
    reason_of,
    replay,
    replay_attributes,
)

T0 = datetime(2026, 4, 5, 12, 0, tzinfo=UTC)


class FakeDeadLetters:
    """A pull subscription in memory: leased messages are not pulled again
    until released; ``redeliver`` forces one duplicate delivery."""

    def __init__(self, messages: list[DeadLetter]) -> None:
        self.available = list(messages)
        self.leased: dict[str, DeadLetter] = {}
        self.acked: list[str] = []
        self.released: list[str] = []
        self.held: list[tuple[str, int]] = []
        self.pulls = 0
        self.redeliver: DeadLetter | None = None

    def pull(self, max_messages: int, timeout: float) -> list[DeadLetter]:
        self.pulls += 1
        batch = self.available[:max_messages]
        self.available = self.available[max_messages:]
        if self.redeliver is not None:
            again = self.redeliver
            self.redeliver = None
            batch.append(
                DeadLetter(
                    "again-" + again.ack_id,
                    again.message_id,
                    again.data,
                    again.attributes,
                    again.publish_time,
                )
            )
        for m in batch:
            self.leased[m.ack_id] = m
        return batch

    def ack(self, ack_ids: Sequence[str]) -> None:
        for a in ack_ids:
            self.leased.pop(a)
            self.acked.append(a)

    def hold(self, ack_ids: Sequence[str], seconds: int) -> None:
        self.held.extend((a, seconds) for a in ack_ids)

    def release(self, ack_ids: Sequence[str]) -> None:
        for a in ack_ids:
            self.available.append(self.leased.pop(a))
            self.released.append(a)


class FakeTopic:
    """Records published messages; fails those whose event_id is listed."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.published: list[tuple[bytes, dict[str, str]]] = []
        self.fail = fail or set()

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        if attributes.get("event_id") in self.fail:
            raise PublishError("not acked")
        self.published.append((data, dict(attributes)))
        return str(len(self.published))


def _letter(
    i: int, reason: str | None = "destination_down", at: datetime = T0, **attrs: str
) -> DeadLetter:
    attributes = {
        "event_id": f"e-{i}",
        "dedup_key": f"purchase:T-{i}",
        "name": "purchase",
        "source": "stripe",
        "schema_version": "1",
        **attrs,
    }
    if reason is not None:
        attributes["truecount_dead_letter_reason"] = reason
    return DeadLetter(f"ack-{i}", f"m-{i}", f"body-{i}".encode(), attributes, at)


def test_replay_republishes_each_match_then_acks_it() -> None:
    """Every dead letter goes back to the topic with its bytes, then is acked."""
    source = FakeDeadLetters([_letter(i) for i in range(3)])
    topic = FakeTopic()

    result = replay(source, topic, ReplayFilter(), pull_timeout=0)

    assert (result.pulled, result.matched, result.replayed, result.failed) == (
        3,
        3,
        3,
        0,
    )
    assert [d for d, _ in topic.published] == [b"body-0", b"body-1", b"body-2"]
    assert source.acked == ["ack-0", "ack-1", "ack-2"]
    assert source.available == []
    assert dict(result.by_reason) == {"destination_down": 3}


def test_replayed_attributes_drop_dead_letter_fields_and_count_replays() -> None:
    """The original attributes go back; the dead-letter ones do not."""
    attributes = {
        "event_id": "e",
        "truecount_dead_letter_reason": "x",
        "CloudPubSubDeadLetterSourceDeliveryCount": "5",
        "CloudPubSubDeadLetterSourceSubscription": "s",
        "truecount_replay_count": "1",
    }

    out = replay_attributes(attributes, "m-9")

    assert out == {
        "event_id": "e",
        "truecount_replayed_from": "m-9",
        "truecount_replay_count": "2",
    }


def test_dry_run_acks_nothing_and_releases_everything() -> None:
    """A dry run reports the matches and gives every message back."""
    source = FakeDeadLetters([_letter(i) for i in range(4)])
    topic = FakeTopic()

    result = replay(source, topic, ReplayFilter(), dry_run=True, pull_timeout=0)

    assert (result.matched, result.replayed) == (4, 0)
    assert topic.published == []
    assert source.acked == []
    assert sorted(source.released) == ["ack-0", "ack-1", "ack-2", "ack-3"]
    assert len(source.available) == 4
    assert {m.outcome for m in result.messages} == {"would_replay"}


def test_reason_filter_matches_code_or_prefix_and_pubsub_dead_letters() -> None:
    """--reason compares the code before ':' or a prefix of the full reason."""
    letters = [
        _letter(0, "invalid_event: name: bad"),
        _letter(1, "destination_down"),
        _letter(2, None, CloudPubSubDeadLetterSourceDeliveryCount="5"),
    ]

    by_code = replay(
        FakeDeadLetters(letters),
        FakeTopic(),
        ReplayFilter(reason="invalid_event"),
        pull_timeout=0,
    )
    by_prefix = replay(
        FakeDeadLetters(letters),
        FakeTopic(),
        ReplayFilter(reason="invalid_event: name"),
        pull_timeout=0,
    )
    by_pubsub = replay(
        FakeDeadLetters(letters),
        FakeTopic(),
        ReplayFilter(reason="max_delivery_attempts"),
        pull_timeout=0,
    )

    assert [m.event_id for m in by_code.messages if m.outcome == "replayed"] == ["e-0"]
    assert by_prefix.replayed == 1
    assert [m.event_id for m in by_pubsub.messages if m.outcome == "replayed"] == [
        "e-2"
    ]
    assert by_code.not_matching == 2


def test_since_filter_skips_older_dead_letters_and_keeps_them() -> None:
    """Older messages are released for a later run, not acked."""
    source = FakeDeadLetters([_letter(0, at=T0 - timedelta(days=2)), _letter(1, at=T0)])

    result = replay(
        source, FakeTopic(), ReplayFilter(since=T0 - timedelta(hours=1)), pull_timeout=0
    )

    assert result.replayed == 1
    assert source.acked == ["ack-1"]
    assert source.released == ["ack-0"]


def test_destination_filter_uses_the_ledger_entry() -> None:
    """Only entries where the destination is not done (or no entry yet) replay."""
    ledger: dict[str, dict[str, Any]] = {
        "purchase:T-0": {"destinations": {"meta": {"status": "delivered"}}},
        "purchase:T-1": {"destinations": {"meta": {"status": "pending"}}},
        "purchase:T-2": {"destinations": {"ga4": {"status": "failed"}}},
    }
    source = FakeDeadLetters([_letter(i) for i in range(4)])

    result = replay(
        source,
        FakeTopic(),
        ReplayFilter(destination="meta"),
        ledger=ledger.get,
        pull_timeout=0,
    )

    assert sorted(m.event_id for m in result.messages if m.outcome == "replayed") == [
        "e-1",
        "e-3",
    ]


def test_max_stops_after_n_matches_and_pulls_no_more_than_needed() -> None:
    """--max 2 replays two and leaves the rest untouched on the subscription."""
    source = FakeDeadLetters([_letter(i) for i in range(5)])

    result = replay(source, FakeTopic(), ReplayFilter(), max_messages=2, pull_timeout=0)

    assert result.replayed == 2
    assert source.acked == ["ack-0", "ack-1"]
    assert len(source.available) == 3


def test_publish_failure_keeps_the_message_and_goes_on() -> None:
    """A message whose publish fails is not acked; the others are replayed."""
    source = FakeDeadLetters([_letter(i) for i in range(3)])

    result = replay(source, FakeTopic(fail={"e-1"}), ReplayFilter(), pull_timeout=0)

    assert (result.replayed, result.failed) == (2, 1)
    assert source.acked == ["ack-0", "ack-2"]
    assert source.released == ["ack-1"]


def test_message_redelivered_within_a_run_is_replayed_once() -> None:
    """A second delivery of a message already handled is only released."""
    first = _letter(0)
    source = FakeDeadLetters([first, _letter(1)])
    source.redeliver = first
    topic = FakeTopic()

    result = replay(source, topic, ReplayFilter(), batch_size=1, pull_timeout=0)

    assert result.replayed == 2
    assert [a["event_id"] for _, a in topic.published] == ["e-0", "e-1"]


def test_reason_of_falls_back_to_unknown() -> None:
    """No reason attribute and no delivery count: unknown."""
    assert reason_of({}) == "unknown"
    assert (
        reason_code({"truecount_dead_letter_reason": "invalid_json: body"})
        == "invalid_json"
    )
