"""Fanout orchestration over in-memory fakes (pure logic; Firestore behaviour is
proven against the emulator in tests/integration/test_fanout.py)."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from truecount.config import (
    Config,
    FanoutConfig,
    RuleConfig,
    SourcesConfig,
    StripeConfig,
)
from truecount.core.dedup import doc_id
from truecount.core.fanout import DEAD_LETTER_REASON, FanoutService
from truecount.errors import DeliveryError, RetryableError
from truecount.models.event import (
    ClickIds,
    Client,
    Commerce,
    Consent,
    Event,
    Identity,
    Lead,
)
from truecount.ports import HttpResponse, OutboundRequest
from truecount.testing import (
    FakeDestination,
    InMemoryIdentities,
    InMemoryLedger,
    RecordingPublisher,
    ScriptedSender,
)

NOW = datetime(2026, 4, 5, 12, 0, tzinfo=UTC)
EMAIL = "b" * 64
A = "http://sink.test/a"
B = "http://sink.test/b"


class World:
    """A service wired to fakes."""

    def __init__(self, config: Config | None = None, **dest_kw: Any) -> None:
        self.config = config or Config()
        self.ledger = InMemoryLedger()
        self.identities = InMemoryIdentities()
        self.sender = ScriptedSender()
        self.publisher = RecordingPublisher()
        self.a = FakeDestination("a", A, **dest_kw)
        self.b = FakeDestination("b", B)
        self.service = FanoutService(
            self.config,
            [self.a, self.b],
            ledger=self.ledger,
            identities=self.identities,
            sender=self.sender,
            publisher=self.publisher,
            events_topic="truecount-events",
            sleep=lambda _: None,
        )

    def doc(self, key: str) -> dict[str, Any]:
        return self.ledger.docs[doc_id(key)]


def _purchase(event_id: str = "st-1", source: str = "stripe", **kw: Any) -> Event:
    base: dict[str, Any] = {
        "event_id": event_id,
        "name": "purchase",
        "source": source,
        "occurred_at": NOW - timedelta(minutes=5),
        "received_at": NOW - timedelta(minutes=5),
        "commerce": Commerce(transaction_id="T-1", value=Decimal("5"), currency="EUR"),
    }
    base.update(kw)
    return Event.model_validate(base)


def _envelope(data: bytes, attributes: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes or {},
            "messageId": "m-1",
        },
        "subscription": "projects/p/subscriptions/s",
    }


def _backend_config() -> Config:
    return Config(sources=SourcesConfig(stripe=StripeConfig()))


def test_first_sight_delivers_once_to_each_destination_with_two_ledger_writes() -> None:
    """One create plus one status write; no read on the common path."""
    world = World()

    result = world.service.process(_purchase(), NOW)

    assert result.action == "deliver"
    assert len(world.sender.sent_to(A)) == 1
    assert len(world.sender.sent_to(B)) == 1
    assert (world.ledger.ops.reads, world.ledger.ops.writes) == (0, 2)
    doc = world.doc("purchase:T-1")
    assert doc["destinations"]["a"]["status"] == "delivered"
    assert doc["destinations"]["a"]["attempts"] == 1
    assert doc["destinations"]["a"]["response"] == {"status": 200, "body": "{}"}
    assert doc["lease_until"] is None


def test_same_message_three_times_sends_once() -> None:
    """Redeliveries of a delivered event only read the ledger."""
    world = World()
    data = _purchase().to_json_bytes()

    for _ in range(3):
        world.service.handle(_envelope(data), NOW)

    assert len(world.sender.sent_to(A)) == 1
    assert len(world.sender.sent_to(B)) == 1


def test_ledger_keeps_the_request_without_secrets() -> None:
    """The recorded payload is ``describe()``: no secret header."""
    world = World()

    world.service.process(_purchase(), NOW)

    recorded = world.doc("purchase:T-1")["destinations"]["a"]["request"]
    assert recorded["url"] == A
    assert "test-secret" not in json.dumps(recorded)
    assert world.sender.sent[0].secret_headers["Authorization"] == "Bearer test-secret"


def test_retryable_failure_raises_and_redelivery_retries_only_that_destination() -> (
    None
):
    """A answers 500, 500, 200; B 200: A gets 3 requests, B one."""
    world = World()
    world.sender.script(A, [500, 500])
    event = _purchase()

    for _ in range(2):
        with pytest.raises(RetryableError):
            world.service.process(event, NOW)
    world.service.process(event, NOW)

    assert len(world.sender.sent_to(A)) == 3
    assert len(world.sender.sent_to(B)) == 1
    doc = world.doc("purchase:T-1")
    assert doc["destinations"]["a"]["status"] == "delivered"
    assert doc["destinations"]["a"]["attempts"] == 3
    assert doc["destinations"]["b"]["attempts"] == 1
    assert doc["attempts"] == 3


def test_pending_retry_keeps_the_last_error_and_status() -> None:
    """Between attempts the ledger says pending, with the error and HTTP status."""
    world = World()
    world.sender.script(A, [503])

    with pytest.raises(RetryableError):
        world.service.process(_purchase(), NOW)

    rec = world.doc("purchase:T-1")["destinations"]["a"]
    assert rec["status"] == "pending"
    assert rec["error"] == "http 503"
    assert rec["http_status"] == 503
    assert rec["retryable"] is True


def test_a_400_is_a_permanent_failure_without_retry() -> None:
    """4xx other than 408/429 fails at once and the message is acked."""
    world = World()
    world.sender.script(A, [400])
    event = _purchase()

    world.service.process(event, NOW)
    world.service.process(event, NOW)

    assert len(world.sender.sent_to(A)) == 1
    rec = world.doc("purchase:T-1")["destinations"]["a"]
    assert (rec["status"], rec["http_status"], rec["attempts"]) == ("failed", 400, 1)


def test_retries_stop_at_max_attempts_and_the_message_is_acked() -> None:
    """After the destination's limit the failure is final."""
    world = World(max_attempts=2)
    world.sender.script(A, [500, 500, 500])
    event = _purchase()

    with pytest.raises(RetryableError):
        world.service.process(event, NOW)
    world.service.process(event, NOW)
    world.service.process(event, NOW)

    assert len(world.sender.sent_to(A)) == 2
    rec = world.doc("purchase:T-1")["destinations"]["a"]
    assert rec["status"] == "failed"
    assert rec["error"] == "max_attempts: http 500"


def test_event_older_than_the_window_fails_as_expired() -> None:
    """Past ``max_age`` nothing is sent and the error is ``expired``."""
    world = World(max_age=timedelta(days=7))
    old = _purchase(occurred_at=NOW - timedelta(days=8))

    world.service.process(old, NOW)

    assert world.sender.sent_to(A) == []
    assert len(world.sender.sent_to(B)) == 1
    rec = world.doc("purchase:T-1")["destinations"]["a"]
    assert (rec["status"], rec["error"]) == ("failed", "expired")


def test_denied_consent_skips_that_destination_only() -> None:
    """The gated destination is skipped with the reason; the other delivers."""
    world = World(required_consent=("ad_user_data",), unknown_consent="deny")
    event = _purchase(consent=Consent(ad_user_data="denied"))

    world.service.process(event, NOW)

    assert world.sender.sent_to(A) == []
    assert len(world.sender.sent_to(B)) == 1
    rec = world.doc("purchase:T-1")["destinations"]["a"]
    assert (rec["status"], rec["reason"]) == ("skipped", "consent:ad_user_data=denied")


def test_transport_error_is_retryable() -> None:
    """A timeout from the sender is a retry, recorded with its error."""
    world = World()
    world.sender.script(A, [DeliveryError("timeout: ReadTimeout", "", retryable=True)])

    with pytest.raises(RetryableError):
        world.service.process(_purchase(), NOW)

    rec = world.doc("purchase:T-1")["destinations"]["a"]
    assert (rec["status"], rec["error"]) == ("pending", "timeout: ReadTimeout")


def test_debug_event_is_built_and_recorded_but_not_sent() -> None:
    """Debug: payload recorded, nothing sent, unless the destination has a test mode."""
    world = World(test_mode=True)
    event = _purchase(debug=True)

    world.service.process(event, NOW)

    assert len(world.sender.sent_to(A)) == 1
    assert world.sender.sent_to(B) == []
    doc = world.ledger.docs[doc_id("debug:purchase:T-1")]
    assert doc["destinations"]["b"]["reason"] == "debug"
    assert doc["destinations"]["b"]["request"]["url"] == B
    assert doc_id("purchase:T-1") not in world.ledger.docs


def test_slow_destination_does_not_hold_back_the_others() -> None:
    """A destination past the deadline is retried; the fast one is recorded."""
    world = World()
    release = threading.Event()

    class SlowSender(ScriptedSender):
        def send(self, request: OutboundRequest) -> HttpResponse:
            if request.url == A:
                release.wait(5)
            return super().send(request)

    world.service.sender = SlowSender()
    world.service.attempt_deadline = 0.3
    started = time.monotonic()

    with pytest.raises(RetryableError):
        world.service.process(_purchase(), NOW)
    elapsed = time.monotonic() - started
    release.set()

    assert elapsed < 2
    doc = world.doc("purchase:T-1")
    assert doc["destinations"]["b"]["status"] == "delivered"
    assert doc["destinations"]["a"]["error"].startswith("timeout")


def test_browser_then_backend_under_backend_truth_delivers_the_merged_event() -> None:
    """The browser purchase is held; Stripe's is delivered with its context."""
    world = World(_backend_config())
    browser = _purchase(
        "br-1",
        "ga4",
        client=Client(client_id="1.2", session_id="s-9", ip="203.0.113.9"),
        click_ids=ClickIds(fbc="fb.1.c", gclid="G-1"),
    )

    held = world.service.process(browser, NOW)
    merged = world.service.process(_purchase("st-1", "stripe"), NOW)

    assert held.action == "hold"
    assert merged.action == "merge"
    sent = world.sender.sent_to(A)
    assert len(sent) == 1
    body = sent[0].json
    assert body["event_id"] == "st-1"
    assert body["client"]["client_id"] == "1.2"
    assert body["client"]["session_id"] == "s-9"
    assert body["click_ids"] == {"fbc": "fb.1.c", "gclid": "G-1"}
    assert body["params"]["truecount_browser_event_id"] == "br-1"
    doc = world.doc("purchase:T-1")
    assert set(doc["sources"]) == {"ga4", "stripe"}
    assert doc["context"]["client_id"] == "1.2"


def test_backend_then_browser_under_backend_truth_records_the_browser_copy() -> None:
    """Reverse order: one delivery; the browser event is a recorded duplicate."""
    world = World(_backend_config())

    world.service.process(_purchase("st-1", "stripe"), NOW)
    result = world.service.process(
        _purchase("br-1", "ga4", click_ids=ClickIds(gclid="G-1")), NOW
    )

    assert result.action == "duplicate"
    assert len(world.sender.sent_to(A)) == 1
    doc = world.doc("purchase:T-1")
    assert doc["duplicates"][0]["event_id"] == "br-1"
    assert doc["duplicates"][0]["added"] == {"gclid": "G-1"}


def test_truth_first_delivers_the_first_and_records_the_rest() -> None:
    """Without a backend source, purchase is first-wins."""
    world = World()

    world.service.process(_purchase("br-1", "ga4"), NOW)
    result = world.service.process(_purchase("st-1", "stripe"), NOW)

    assert result.action == "duplicate"
    assert len(world.sender.sent_to(A)) == 1
    assert world.sender.sent_to(A)[0].json["event_id"] == "br-1"


def test_crm_lead_days_later_gets_the_gclid_from_the_identity_store() -> None:
    """page_view(gclid, email) then qualify_lead(email only): gclid delivered."""
    world = World()
    view = Event(
        event_id="pv-1",
        name="page_view",
        source="ga4",
        occurred_at=NOW,
        received_at=NOW,
        client=Client(client_id="1.2"),
        click_ids=ClickIds(gclid="G-lead"),
        identity=Identity(email_sha256=EMAIL),
    )
    lead = Event(
        event_id="crm-1",
        name="qualify_lead",
        source="crm",
        occurred_at=NOW + timedelta(days=3),
        received_at=NOW + timedelta(days=3),
        identity=Identity(email_sha256=EMAIL),
        lead=Lead(lead_id="L-7"),
    )

    world.service.process(view, NOW)
    result = world.service.process(lead, NOW + timedelta(days=3))

    sent = [r for r in world.sender.sent_to(A) if r.json["name"] == "qualify_lead"]
    assert sent[0].json["click_ids"]["gclid"] == "G-lead"
    assert sent[0].json["client"]["client_id"] == "1.2"
    assert result.stitched == {"gclid": "email_sha256", "client_id": "email_sha256"}
    assert world.doc("qualify_lead:L-7")["stitched"]["gclid"] == "email_sha256"


def test_identity_records_expire() -> None:
    """A record past ``identity_ttl_days`` is not used."""
    world = World(Config(fanout=FanoutConfig(identity_ttl_days=1)))
    view = _purchase(
        "pv-1",
        "ga4",
        name="page_view",
        commerce=None,
        identity=Identity(email_sha256=EMAIL),
        click_ids=ClickIds(gclid="G"),
    )
    lead = _purchase(
        "crm-1",
        "crm",
        name="qualify_lead",
        commerce=None,
        identity=Identity(email_sha256=EMAIL),
        lead=Lead(lead_id="L-1"),
    )

    world.service.process(view, NOW)
    result = world.service.process(lead, NOW + timedelta(days=2))

    assert result.stitched == {}


def test_idempotence_none_skips_the_ledger_and_resends_on_redelivery() -> None:
    """At-least-once: no ledger operation at all, every copy is sent."""
    world = World(Config(rules={"page_view": RuleConfig(idempotence="none")}))
    view = _purchase("pv-1", "ga4", name="page_view", commerce=None)

    world.service.process(view, NOW)
    world.service.process(view, NOW)

    assert world.ledger.ops.reads + world.ledger.ops.writes == 0
    assert len(world.sender.sent_to(A)) == 2


def test_poison_message_goes_to_the_dead_letter_topic_and_is_acked() -> None:
    """Invalid JSON: published with its reason and attributes, nothing raised."""
    world = World()

    result = world.service.handle(_envelope(b"{not json", {"source": "ga4"}), NOW)

    assert result.action == "dead_letter"
    topic, data, attributes = world.publisher.messages[0]
    assert topic == "truecount-events-dead-letter"
    assert data == b"{not json"
    assert attributes["source"] == "ga4"
    assert attributes[DEAD_LETTER_REASON].startswith("invalid_json")
    assert world.sender.sent == []


def test_invalid_event_reason_names_the_field() -> None:
    """A valid JSON body that fails validation names the bad path."""
    world = World()
    body = json.dumps({"event_id": "e", "name": "9bad", "source": "ga4"}).encode()

    world.service.handle(_envelope(body), NOW)

    reason = world.publisher.messages[0][2][DEAD_LETTER_REASON]
    assert reason.startswith("invalid_event: ")
    assert "name:" in reason
    assert "occurred_at:" in reason


def test_envelope_without_a_message_is_dead_lettered() -> None:
    """Not a Pub/Sub payload at all: dead-lettered, not retried."""
    world = World()

    result = world.service.handle({"unexpected": True}, NOW)

    assert result.action == "dead_letter"
    assert world.publisher.messages[0][2][DEAD_LETTER_REASON].startswith(
        "invalid_envelope"
    )


def test_one_json_log_line_per_destination_outcome(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each line carries message, severity, destination, outcome, event_id, dedup_key."""
    world = World(required_consent=("ad_storage",), unknown_consent="deny")

    world.service.process(_purchase(), NOW)

    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    outcomes = {x["destination"]: x for x in lines if "destination" in x}
    assert outcomes["a"]["outcome"] == "skipped"
    assert outcomes["b"]["outcome"] == "delivered"
    for line in outcomes.values():
        assert line["event_id"] == "st-1"
        assert line["dedup_key"] == "purchase:T-1"
        assert line["severity"] == "INFO"
        assert line["message"].startswith("destination ")


def test_concurrent_copies_with_different_event_ids_deliver_once() -> None:
    """50 sources racing for one key: one delivery per destination."""
    world = World()
    events = [
        _purchase(f"e-{i}", ("ga4", "stripe", "data", "crm")[i % 4]) for i in range(50)
    ]

    threads = [
        threading.Thread(target=world.service.process, args=(e, NOW)) for e in events
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(world.sender.sent_to(A)) == 1
    assert len(world.sender.sent_to(B)) == 1
    assert len(world.doc("purchase:T-1")["duplicates"]) == 49


def test_event_no_destination_accepts_costs_no_ledger_write() -> None:
    """An event routed nowhere is acked without touching the ledger."""
    world = World(events=["purchase"])
    world.service.destinations = [world.a]
    view = _purchase("pv-1", "ga4", name="page_view", commerce=None)

    result = world.service.process(view, NOW)

    assert result.action == "no_destinations"
    assert world.ledger.ops.writes == 0
    assert world.sender.sent == []
