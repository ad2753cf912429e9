"""GroupCommit and the publish_batch path of PubSubPublisher, with a fake sender."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Mapping, Sequence

import pytest

from truecount.adapters import pubsub
from truecount.adapters.pubsub import (
    MIN_SEND_SECONDS,
    GroupCommit,
    PubSubPublisher,
)
from truecount.errors import PublishError

Message = tuple[bytes, Mapping[str, str]]


class GatedSender:
    """Records each call; the first call blocks until ``release`` is set."""

    def __init__(
        self,
        error: Exception | None = None,
        first_error: Exception | None = None,
        fail_on: bytes | None = None,
    ) -> None:
        self.calls: list[tuple[str, list[bytes]]] = []
        self.deadlines: list[float] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.error = error
        self.first_error = first_error
        self.fail_on = fail_on
        self._count = 0

    def __call__(
        self, topic: str, messages: Sequence[Message], deadline: float
    ) -> list[str]:
        self.calls.append((topic, [data for data, _ in messages]))
        self.deadlines.append(deadline)
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(5)
            if self.first_error is not None:
                raise self.first_error
        if self.error is not None:
            raise self.error
        if self.fail_on is not None and self.fail_on in self.calls[-1][1]:
            raise RuntimeError(f"rejected {self.fail_on!r}")
        ids = []
        for data, _ in messages:
            self._count += 1
            ids.append(f"{data.decode()}#{self._count}")
        return ids


def _later(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def _start(target, *args) -> tuple[threading.Thread, dict[str, object]]:
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["value"] = target(*args)
        except Exception as exc:
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _wait_queued(group: GroupCommit, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(group._pending) < count and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(group._pending) == count


def test_an_idle_caller_sends_at_once_in_its_own_call():
    """Sequential publishes each make one call and get their own ids."""
    sender = GatedSender()
    sender.release.set()
    group = GroupCommit(sender)

    first = group.publish("t", [(b"a", {}), (b"b", {})], _later())
    second = group.publish("t", [(b"c", {})], _later())

    assert first == ["a#1", "b#2"]
    assert second == ["c#3"]
    assert sender.calls == [("t", [b"a", b"b"]), ("t", [b"c"])]


def test_callers_queued_behind_an_rpc_share_the_next_call_and_split_the_ids():
    """Callers arriving during an RPC go out together, each with its own ids."""
    sender = GatedSender()
    group = GroupCommit(sender)
    leader, leader_out = _start(group.publish, "t", [(b"a", {})], _later())
    assert sender.entered.wait(5)
    second, second_out = _start(group.publish, "t", [(b"b", {}), (b"c", {})], _later())
    third, third_out = _start(group.publish, "t", [(b"d", {})], _later())
    _wait_queued(group, 2)

    sender.release.set()
    for thread in (leader, second, third):
        thread.join(5)

    assert leader_out == {"value": ["a#1"]}
    assert sender.calls[0] == ("t", [b"a"])
    assert len(sender.calls) == 2
    topic, sent = sender.calls[1]
    assert topic == "t"
    assert sorted(sent) == [b"b", b"c", b"d"]
    by_data = {data: f"{data.decode()}#{n}" for n, data in enumerate(sent, start=2)}
    assert second_out == {"value": [by_data[b"b"], by_data[b"c"]]}
    assert third_out == {"value": [by_data[b"d"]]}


def test_a_failed_call_gives_every_caller_of_the_group_its_own_error():
    """Each caller gets a fresh PublishError chained to the sender's exception."""
    broker_error = RuntimeError("broker said no to secret@example.com")
    sender = GatedSender(error=broker_error)
    group = GroupCommit(sender)
    leader, leader_out = _start(group.publish, "t", [(b"a", {})], _later())
    assert sender.entered.wait(5)
    queued = [_start(group.publish, "t", [(b"q", {})], _later()) for _ in range(3)]
    _wait_queued(group, 3)

    sender.release.set()
    leader.join(5)
    for thread, _ in queued:
        thread.join(5)

    errors = [leader_out["error"]] + [out["error"] for _, out in queued]
    assert all(isinstance(error, PublishError) for error in errors)
    assert all(error.__cause__ is broker_error for error in errors)
    assert len({id(error) for error in errors}) == 4
    assert {str(error) for error in errors} == {"Publish RPC failed: RuntimeError"}
    depths = [len(traceback.extract_tb(error.__traceback__)) for error in errors]
    assert max(depths) <= 2


class FakeClock:
    """A settable monotonic clock for deadline decisions."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_callers_queued_behind_a_stalled_rpc_are_sent_with_their_own_time_left():
    """A stall fails its own group and the expired successor, not the live rest."""
    clock = FakeClock()
    sender = GatedSender(first_error=TimeoutError("stalled"))
    group = GroupCommit(sender, clock=clock)
    # Real-time waits are bounded by deadline - clock(): 1000 s, never reached.
    stalled, stalled_out = _start(group.publish, "t", [(b"a", {})], 1000.0)
    assert sender.entered.wait(5)
    successor, successor_out = _start(group.publish, "t", [(b"b", {})], 1000.0)
    _wait_queued(group, 1)
    live = [_start(group.publish, "t", [(m, {})], 1500.0) for m in (b"c", b"d")]
    _wait_queued(group, 3)

    clock.now = 1000.0  # the first RPC stalled until its callers' deadline
    sender.release.set()
    for thread, _ in [(stalled, None), (successor, None), *live]:
        thread.join(5)

    assert isinstance(stalled_out["error"], TimeoutError)
    assert isinstance(successor_out["error"], TimeoutError)
    assert [sent for _, sent in sender.calls] == [[b"a"], [b"c", b"d"]]
    assert sender.deadlines == [1000.0, 1500.0]
    assert [out for _, out in live] == [{"value": ["c#1"]}, {"value": ["d#2"]}]


def test_an_expired_queued_caller_is_dropped_without_shortening_the_group_rpc():
    """A queued caller past its deadline fails unsent; the rest keep their time."""
    clock = FakeClock()
    sender = GatedSender()
    group = GroupCommit(sender, clock=clock)
    leader, leader_out = _start(group.publish, "t", [(b"a", {})], 1000.0)
    assert sender.entered.wait(5)
    first, first_out = _start(group.publish, "t", [(b"b", {})], 1500.0)
    _wait_queued(group, 1)
    expired, expired_out = _start(group.publish, "t", [(b"x", {})], 1000.0)
    _wait_queued(group, 2)

    clock.now = 1000.0 - MIN_SEND_SECONDS / 2  # nearly expired: below the minimum
    sender.release.set()
    for thread in (leader, first, expired):
        thread.join(5)

    assert leader_out == {"value": ["a#1"]}
    assert first_out == {"value": ["b#2"]}
    assert isinstance(expired_out["error"], TimeoutError)
    assert [sent for _, sent in sender.calls] == [[b"a"], [b"b"]]
    assert sender.deadlines[1] == 1500.0


def test_a_failed_chunk_fails_only_the_callers_whose_messages_it_carried(
    monkeypatch: pytest.MonkeyPatch,
):
    """A group larger than one RPC is sent per chunk; only its callers fail."""
    monkeypatch.setattr(pubsub, "RPC_MAX_MESSAGES", 2)
    sender = GatedSender(fail_on=b"c")
    group = GroupCommit(sender)
    leader, leader_out = _start(group.publish, "t", [(b"a", {})], _later())
    assert sender.entered.wait(5)
    first, first_out = _start(group.publish, "t", [(b"b1", {}), (b"b2", {})], _later())
    _wait_queued(group, 1)
    second, second_out = _start(group.publish, "t", [(b"c", {})], _later())
    _wait_queued(group, 2)

    sender.release.set()
    for thread in (leader, first, second):
        thread.join(5)

    assert [sent for _, sent in sender.calls] == [[b"a"], [b"b1", b"b2"], [b"c"]]
    assert leader_out == {"value": ["a#1"]}
    assert first_out == {"value": ["b1#2", "b2#3"]}
    assert isinstance(second_out["error"], PublishError)


def test_a_queued_caller_past_its_deadline_withdraws_and_the_group_recovers():
    """A caller timing out in the queue is never sent; later publishes work."""
    sender = GatedSender()
    group = GroupCommit(sender)
    leader, leader_out = _start(group.publish, "t", [(b"a", {})], _later())
    assert sender.entered.wait(5)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        group.publish("t", [(b"late", {})], time.monotonic() + 0.05)
    waited = time.monotonic() - started
    sender.release.set()
    leader.join(5)
    after = group.publish("t", [(b"z", {})], _later())

    assert waited < 1.0
    assert leader_out == {"value": ["a#1"]}
    assert after == ["z#2"]
    assert [sent for _, sent in sender.calls] == [[b"a"], [b"z"]]


class BatchClient:
    """A client with ``publish_batch``: records calls, or raises ``error``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, list[bytes], float]] = []

    def publish_batch(
        self, topic: str, messages: Sequence[Message], deadline: float
    ) -> list[str]:
        self.calls.append((topic, [data for data, _ in messages], deadline))
        if self.error is not None:
            raise self.error
        return [f"id-{i}" for i in range(len(messages))]

    def stop(self) -> None:
        """Nothing to release."""


def test_publisher_sends_all_messages_in_one_batch_with_one_deadline():
    """publish_messages passes every message and a deadline ``timeout`` away."""
    client = BatchClient()
    publisher = PubSubPublisher(
        "p", "events", timeout=3.0, client_factory=lambda: client
    )

    before = time.monotonic()
    ids = publisher.publish_messages("other", [(b"x", {"k": "v"}), (b"y", {})])

    assert ids == ["id-0", "id-1"]
    [(topic, sent, deadline)] = client.calls
    assert topic == "projects/p/topics/other"
    assert sent == [b"x", b"y"]
    assert before + 3.0 <= deadline <= time.monotonic() + 3.0


@pytest.mark.parametrize(
    ("error", "match"),
    [(TimeoutError("late"), "did not ack 1 message"), (ValueError("x"), "failed")],
)
def test_publisher_turns_batch_failures_into_publish_error(error, match):
    """A timeout or any failure of publish_batch is a PublishError naming the topic."""
    client = BatchClient(error)
    publisher = PubSubPublisher("p", "events", client_factory=lambda: client)

    with pytest.raises(PublishError, match=match) as caught:
        publisher.publish_raw("dead", b"secret-body", {})

    assert "projects/p/topics/dead" in str(caught.value)
    assert "secret-body" not in str(caught.value)
