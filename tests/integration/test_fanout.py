"""Fanout against the real Pub/Sub and Firestore emulators.

Every destination is an ``http`` destination pointing at the capture server on
127.0.0.1 (different paths); each number below is an exact count of the requests
the capture server received and of what the ledger holds.
"""

from __future__ import annotations

import base64
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from truecount import emulators as emu
from truecount.adapters.firestore import FirestoreIdentities, FirestoreLedger
from truecount.adapters.http import HttpxSender
from truecount.adapters.pubsub import PubSubPublisher
from truecount.capture import CaptureServer
from truecount.config import Config, parse_config
from truecount.core.dedup import doc_id
from truecount.core.fanout import DEAD_LETTER_REASON, FanoutService
from truecount.destinations.registry import build_destinations
from truecount.errors import RetryableError
from truecount.models.event import (
    ClickIds,
    Client,
    Commerce,
    Consent,
    Event,
    Identity,
    Lead,
)

ROOT = Path(__file__).parents[2]
EMAIL = "c" * 64
DLQ = "truecount-events-dead-letter"


# --- instrumented Firestore client -------------------------------------------


@dataclass
class Ops:
    """Firestore RPCs and documents, counted on the wire (the GAPIC client)."""

    commits: int = 0
    writes: int = 0
    batch_gets: int = 0
    reads: int = 0
    transactions: int = 0
    rollbacks: int = 0
    log: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def summary(self) -> dict[str, int]:
        return {
            "writes": self.writes,
            "reads": self.reads,
            "commits": self.commits,
            "batch_gets": self.batch_gets,
            "transactions": self.transactions,
        }


def instrument(client: Any) -> Ops:
    """Count every commit / batchGet / beginTransaction the client sends."""
    ops = Ops()
    api = client._firestore_api
    lock = threading.Lock()
    commit, batch_get = api.commit, api.batch_get_documents
    begin, rollback = api.begin_transaction, api.rollback

    def counted_commit(*args: Any, **kwargs: Any) -> Any:
        request = kwargs.get("request") or {}
        with lock:
            ops.commits += 1
            ops.writes += len(request.get("writes", ()))
            ops.log.append(f"commit({len(request.get('writes', ()))})")
        return commit(*args, **kwargs)

    def counted_batch_get(*args: Any, **kwargs: Any) -> Any:
        request = kwargs.get("request") or {}
        with lock:
            ops.batch_gets += 1
            ops.reads += len(request.get("documents", ()))
            ops.log.append(f"batch_get({len(request.get('documents', ()))})")
        return batch_get(*args, **kwargs)

    def counted_begin(*args: Any, **kwargs: Any) -> Any:
        with lock:
            ops.transactions += 1
            ops.log.append("begin_transaction")
        return begin(*args, **kwargs)

    def counted_rollback(*args: Any, **kwargs: Any) -> Any:
        with lock:
            ops.rollbacks += 1
        return rollback(*args, **kwargs)

    api.commit = counted_commit
    api.batch_get_documents = counted_batch_get
    api.begin_transaction = counted_begin
    api.rollback = counted_rollback
    return ops


# --- the stack ---------------------------------------------------------------


def _config_text(capture_url: str, extra: str = "") -> str:
    return f"""
[fanout]
http_timeout_seconds = 5
max_attempts = 5

[destinations.sink_a]
type = "http"
endpoint = "{capture_url}/a"

[destinations.sink_b]
type = "http"
endpoint = "{capture_url}/b"

[destinations.sink_c]
type = "http"
endpoint = "{capture_url}/c"
consent = ["ad_user_data"]
unknown_consent = "allow"
{extra}
"""


class Stack:
    """A FanoutService on the emulators with the capture server as every sink."""

    def __init__(
        self,
        project: str,
        db: Any,
        capture: CaptureServer,
        extra: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        self.project = project
        self.db = db
        self.capture = capture
        self.config: Config = parse_config(_config_text(capture.url, extra))
        self.ops = instrument(db)
        self.http = httpx.Client(timeout=5)
        self.publisher = PubSubPublisher(project, "truecount-events", timeout=10)
        self.destinations = build_destinations(self.config, env or {})
        self.service = FanoutService(
            self.config,
            self.destinations,
            ledger=FirestoreLedger(lambda: db),
            identities=FirestoreIdentities(lambda: db),
            sender=HttpxSender(self.http),
            publisher=self.publisher,
            events_topic="truecount-events",
        )

    def close(self) -> None:
        self.http.close()
        self.publisher.close()

    def ledger(self, key: str) -> dict[str, Any]:
        snap = self.db.collection("ledger").document(doc_id(key)).get()
        assert snap.exists
        return snap.to_dict()

    def count(self, path: str) -> int:
        return len(self.capture.requests_to(path))

    def handle_until_acked(self, envelope: dict[str, Any], tries: int = 40) -> int:
        """Call the handler like Pub/Sub would redeliver; return the retries."""
        for attempt in range(tries):
            try:
                self.service.handle(envelope, datetime.now(UTC))
            except RetryableError:
                time.sleep(0.05 + random.random() * 0.2)
                continue
            return attempt
        raise AssertionError("never acked")


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    """The capture server every destination points at."""
    server = CaptureServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stack(
    project_id: str, firestore_db: Any, capture: CaptureServer
) -> Iterator[Stack]:
    """The service wired to the emulators (first-wins purchases)."""
    emu.ensure_topic(project_id, DLQ)
    built = Stack(project_id, firestore_db, capture)
    yield built
    built.close()


@pytest.fixture
def backend_stack(
    project_id: str, firestore_db: Any, capture: CaptureServer
) -> Iterator[Stack]:
    """As ``stack``, with Stripe configured: purchases use ``truth = "backend"``."""
    emu.ensure_topic(project_id, DLQ)
    built = Stack(project_id, firestore_db, capture, "\n[sources.stripe]\n")
    assert built.config.rule("purchase").truth == "backend"
    yield built
    built.close()


def _now() -> datetime:
    return datetime.now(UTC)


def _purchase(event_id: str, source: str, **kw: Any) -> Event:
    at = kw.pop("occurred_at", _now() - timedelta(minutes=1))
    base: dict[str, Any] = {
        "event_id": event_id,
        "name": "purchase",
        "source": source,
        "occurred_at": at,
        "received_at": at,
        "dedup_key": "purchase:T-1001",
        "commerce": Commerce(
            transaction_id="T-1001", value=Decimal("21"), currency="EUR"
        ),
    }
    base.update(kw)
    return Event.model_validate(base)


def _browser_purchase(event_id: str = "br-1") -> Event:
    return _purchase(
        event_id,
        "ga4",
        client=Client(
            client_id="111.222",
            session_id="1712300000",
            ip="203.0.113.7",
            user_agent="UA",
        ),
        click_ids=ClickIds(fbc="fb.1.1712.abc", gclid="Cj0-gclid"),
        consent=Consent(ad_user_data="granted", ad_storage="granted"),
    )


def _envelope(
    event_or_bytes: Event | bytes, attributes: dict[str, str] | None = None
) -> dict[str, Any]:
    data = (
        event_or_bytes
        if isinstance(event_or_bytes, bytes)
        else event_or_bytes.to_json_bytes()
    )
    attrs = attributes
    if attrs is None and isinstance(event_or_bytes, Event):
        attrs = event_or_bytes.pubsub_attributes()
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attrs or {},
            "messageId": str(random.randrange(10**9)),
        },
        "subscription": "projects/p/subscriptions/fanout",
    }


# --- acceptance ----------------------------------------------------------------


def test_same_message_three_times_gives_one_request_per_destination(
    stack: Stack,
) -> None:
    """Pub/Sub delivering one message 3 times: 1 request per destination."""
    envelope = _envelope(_purchase("st-1", "stripe"))

    for _ in range(3):
        stack.service.handle(envelope, _now())

    assert [stack.count(p) for p in ("/a", "/b", "/c")] == [1, 1, 1]
    doc = stack.ledger("purchase:T-1001")
    assert {d: r["status"] for d, r in doc["destinations"].items()} == {
        "sink_a": "delivered",
        "sink_b": "delivered",
        "sink_c": "delivered",
    }


def _race(stack: Stack, events: list[Event]) -> int:
    envelopes = [_envelope(e) for e in events]
    retries: list[int] = []
    barrier = threading.Barrier(len(envelopes))

    def run(envelope: dict[str, Any]) -> None:
        barrier.wait()
        retries.append(stack.handle_until_acked(envelope))

    threads = [threading.Thread(target=run, args=(e,)) for e in envelopes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(retries) == len(events)
    return sum(retries)


def test_fifty_concurrent_sources_for_one_key_give_one_request_each(
    stack: Stack,
) -> None:
    """50 event_ids from 4 sources racing on one key (first wins): 1 request each."""
    sources = ("ga4", "stripe", "data", "crm")
    events = [_purchase(f"e-{i}", sources[i % 4]) for i in range(50)]

    _race(stack, events)

    assert [stack.count(p) for p in ("/a", "/b", "/c")] == [1, 1, 1]
    doc = stack.ledger("purchase:T-1001")
    assert len(doc["duplicates"]) == 49
    assert sum(len(v) for v in doc["sources"].values()) == 50


def test_fifty_concurrent_sources_under_backend_truth_give_one_request_each(
    backend_stack: Stack,
) -> None:
    """Mixed browser and backend copies racing through merge transactions."""
    sources = ("ga4", "stripe", "data", "crm")
    events = [_purchase(f"e-{i}", sources[i % 4]) for i in range(50)]

    retries = _race(backend_stack, events)

    assert [backend_stack.count(p) for p in ("/a", "/b", "/c")] == [1, 1, 1]
    doc = backend_stack.ledger("purchase:T-1001")
    assert sum(len(v) for v in doc["sources"].values()) == 50
    delivered = backend_stack.capture.requests_to("/a")[0].body
    assert delivered["source"] in ("stripe", "crm")
    print(f"backend-truth race: {retries} redeliveries needed")


def test_browser_then_stripe_under_backend_truth_delivers_one_merged_request(
    backend_stack: Stack,
) -> None:
    """Browser purchase then Stripe purchase: 1 request with the browser context."""
    backend_stack.service.handle(_envelope(_browser_purchase()), _now())
    assert backend_stack.count("/a") == 0

    backend_stack.service.handle(_envelope(_purchase("evt_stripe_1", "stripe")), _now())

    sent = backend_stack.capture.requests_to("/a")
    assert len(sent) == 1
    body = sent[0].body
    assert body["event_id"] == "evt_stripe_1"
    assert body["client"]["client_id"] == "111.222"
    assert body["client"]["session_id"] == "1712300000"
    assert body["click_ids"]["fbc"] == "fb.1.1712.abc"
    assert body["click_ids"]["gclid"] == "Cj0-gclid"
    assert body["params"]["truecount_browser_event_id"] == "br-1"
    doc = backend_stack.ledger("purchase:T-1001")
    assert set(doc["sources"]) == {"ga4", "stripe"}
    assert doc["browser_event_id"] == "br-1"
    assert doc["delivery_event_id"] == "evt_stripe_1"


def test_stripe_then_browser_under_backend_truth_records_the_browser_duplicate(
    backend_stack: Stack,
) -> None:
    """Reverse order: 1 request, and the browser event is a recorded duplicate."""
    backend_stack.service.handle(_envelope(_purchase("evt_stripe_1", "stripe")), _now())
    backend_stack.service.handle(_envelope(_browser_purchase()), _now())

    assert [backend_stack.count(p) for p in ("/a", "/b", "/c")] == [1, 1, 1]
    assert backend_stack.capture.requests_to("/a")[0].body["event_id"] == "evt_stripe_1"
    doc = backend_stack.ledger("purchase:T-1001")
    assert [d["event_id"] for d in doc["duplicates"]] == ["br-1"]
    assert doc["duplicates"][0]["source"] == "ga4"
    assert doc["duplicates"][0]["added"]["gclid"] == "Cj0-gclid"
    assert doc["delivery_event_id"] == "evt_stripe_1"


def test_crm_lead_days_later_is_delivered_with_the_browser_gclid(stack: Stack) -> None:
    """page_view(gclid, email) then qualify_lead(email only): the gclid goes out."""
    viewed = _now() - timedelta(days=3)
    view = Event(
        event_id="pv-1",
        name="page_view",
        source="ga4",
        occurred_at=viewed,
        received_at=viewed,
        client=Client(client_id="111.222"),
        click_ids=ClickIds(gclid="Cj0-lead-gclid"),
        identity=Identity(email_sha256=EMAIL),
    )
    lead = Event(
        event_id="crm-42",
        name="qualify_lead",
        source="crm",
        occurred_at=_now(),
        received_at=_now(),
        identity=Identity(email_sha256=EMAIL),
        lead=Lead(lead_id="L-42"),
    )
    stack.service.handle(_envelope(view), viewed)

    stack.service.handle(_envelope(lead), _now())

    sent = [
        r.body
        for r in stack.capture.requests_to("/a")
        if r.body["name"] == "qualify_lead"
    ]
    assert len(sent) == 1
    assert sent[0]["click_ids"]["gclid"] == "Cj0-lead-gclid"
    doc = stack.ledger("qualify_lead:L-42")
    assert doc["stitched"]["gclid"] == "email_sha256"


def test_denied_consent_skips_one_destination_and_delivers_the_others(
    stack: Stack,
) -> None:
    """sink_c needs ad_user_data: denied there, delivered elsewhere."""
    event = _purchase("st-1", "stripe", consent=Consent(ad_user_data="denied"))

    stack.service.handle(_envelope(event), _now())

    assert [stack.count(p) for p in ("/a", "/b", "/c")] == [1, 1, 0]
    rec = stack.ledger("purchase:T-1001")["destinations"]["sink_c"]
    assert (rec["status"], rec["reason"]) == ("skipped", "consent:ad_user_data=denied")


def test_500_twice_then_200_is_delivered_after_two_redeliveries(stack: Stack) -> None:
    """A: 500, 500, 200; B: 200. The handler raises twice; A gets 3, B 1."""
    stack.capture.script("/a", [500, 500])
    envelope = _envelope(_purchase("st-1", "stripe"))

    raised = 0
    for _ in range(3):
        try:
            stack.service.handle(envelope, _now())
        except RetryableError:
            raised += 1

    assert raised == 2
    assert (stack.count("/a"), stack.count("/b")) == (3, 1)
    rec = stack.ledger("purchase:T-1001")["destinations"]
    assert (rec["sink_a"]["status"], rec["sink_a"]["attempts"]) == ("delivered", 3)
    assert (rec["sink_b"]["status"], rec["sink_b"]["attempts"]) == ("delivered", 1)


def test_400_is_a_permanent_failure_without_retry(stack: Stack) -> None:
    """A 400 is recorded as failed; the message is acked and never retried."""
    stack.capture.script("/a", [400])
    envelope = _envelope(_purchase("st-1", "stripe"))

    stack.service.handle(envelope, _now())
    stack.service.handle(envelope, _now())

    assert stack.count("/a") == 1
    rec = stack.ledger("purchase:T-1001")["destinations"]["sink_a"]
    assert (rec["status"], rec["http_status"], rec["attempts"]) == ("failed", 400, 1)


def test_event_older_than_the_window_fails_as_expired(stack: Stack) -> None:
    """sink_a accepts 7 days; an 8-day-old event fails there as expired."""
    stack.destinations[0].max_age = timedelta(days=7)  # type: ignore[misc]
    old = _purchase("st-1", "stripe", occurred_at=_now() - timedelta(days=8))

    stack.service.handle(_envelope(old), _now())

    assert (stack.count("/a"), stack.count("/b")) == (0, 1)
    rec = stack.ledger("purchase:T-1001")["destinations"]["sink_a"]
    assert (rec["status"], rec["error"]) == ("failed", "expired")


def test_poison_message_lands_on_the_dead_letter_topic_and_is_acked(
    stack: Stack, pubsub: Any
) -> None:
    """Bytes that are not an event: on the DLQ with the reason; handler returns."""
    sub = pubsub.subscribe(DLQ)

    result = stack.service.handle(
        _envelope(b"not json at all", {"origin": "test"}), _now()
    )

    assert result.action == "dead_letter"
    messages = pubsub.pull(sub, expect=1, timeout=15)
    assert len(messages) == 1
    assert messages[0].data == b"not json at all"
    assert messages[0].attributes["origin"] == "test"
    assert messages[0].attributes[DEAD_LETTER_REASON].startswith("invalid_json")
    assert stack.capture.requests == []


def test_firestore_operations_per_event(backend_stack: Stack) -> None:
    """Cost: a conversion is one create plus one status write (+ one batched
    identity read for a backend event); the merge path adds one transaction."""
    ops = backend_stack.ops
    ops.reset()
    backend_stack.service.handle(
        _envelope(
            _purchase(
                "st-9",
                "stripe",
                dedup_key="purchase:T-9",
                commerce=Commerce(
                    transaction_id="T-9", value=Decimal("1"), currency="EUR"
                ),
            )
        ),
        _now(),
    )
    first_sight = ops.summary()
    ops.reset()
    backend_stack.service.handle(
        _envelope(
            _purchase(
                "st-9",
                "stripe",
                dedup_key="purchase:T-9",
                commerce=Commerce(
                    transaction_id="T-9", value=Decimal("1"), currency="EUR"
                ),
            )
        ),
        _now(),
    )
    redelivered = ops.summary()
    ops.reset()
    backend_stack.service.handle(_envelope(_browser_purchase()), _now())
    held = ops.summary()
    ops.reset()
    backend_stack.service.handle(_envelope(_purchase("evt_stripe_1", "stripe")), _now())
    merged = ops.summary()
    print(
        f"\nfirestore ops: first_sight={first_sight} redelivered={redelivered} "
        f"held={held} merged={merged}"
    )

    # create (1 write) + identity lookup (1 batched read of 1 key) + status write
    assert first_sight == {
        "writes": 2,
        "reads": 1,
        "commits": 2,
        "batch_gets": 1,
        "transactions": 0,
    }
    # failed create + one read; nothing sent, nothing written
    assert redelivered == {
        "writes": 1,
        "reads": 1,
        "commits": 1,
        "batch_gets": 1,
        "transactions": 0,
    }
    # identity upsert (1 batch, 2 keys: transaction_id, client_id) + create
    assert held == {
        "writes": 3,
        "reads": 0,
        "commits": 2,
        "batch_gets": 0,
        "transactions": 0,
    }
    # failed create + read + transaction (read + write) + lookup (2 keys) + status
    assert merged == {
        "writes": 3,
        "reads": 4,
        "commits": 3,
        "batch_gets": 3,
        "transactions": 1,
    }


# --- real redelivery: emulator push subscription -> functions-framework ----------


def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # the server answers
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


def test_real_push_subscription_redelivers_until_delivered(
    project_id: str, firestore_db: Any, capture: CaptureServer, tmp_path: Path
) -> None:
    """Emulator push -> functions-framework ``fanout``: A 500, 500, 200 is
    delivered by real Pub/Sub redelivery; B exactly once."""
    capture.script("/a", [500, 500])
    config = tmp_path / "truecount.toml"
    config.write_text(_config_text(capture.url))
    port = emu.free_port()
    env = {**os.environ, "TRUECOUNT_CONFIG": str(config), "PYTHONUNBUFFERED": "1"}
    log_file = (tmp_path / "fanout.log").open("wb")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "functions-framework"),
            "--target=fanout",
            f"--source={ROOT / 'functions' / 'fanout' / 'main.py'}",
            "--signature-type=cloudevent",
            "--host=127.0.0.1",
            f"--port={port}",
        ],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/")
        emu.ensure_topic(project_id, "truecount-events")
        emu.ensure_topic(project_id, DLQ)
        emu.ensure_push_subscription(
            project_id,
            "truecount-events",
            "fanout-push",
            f"http://127.0.0.1:{port}/",
            min_backoff_s=1,
            max_backoff_s=2,
        )
        publisher = PubSubPublisher(project_id, "truecount-events", timeout=10)
        publisher.publish([_purchase("st-push", "stripe")])
        publisher.close()

        delivered = capture.wait_for("/a", 3, timeout=60)
        time.sleep(2)  # any extra redelivery would show up now

        assert len(capture.requests_to("/a")) == 3
        assert [r.status for r in delivered] == [500, 500, 200]
        assert len(capture.requests_to("/b")) == 1
        doc = (
            firestore_db.collection("ledger").document(doc_id("purchase:T-1001")).get()
        )
        assert doc.to_dict()["destinations"]["sink_a"]["attempts"] == 3
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
        log_file.close()


def test_capture_server_lists_resets_and_scripts_over_http(
    capture: CaptureServer,
) -> None:
    """The control routes the local stack uses: script, list, UI, reset."""
    with httpx.Client(base_url=capture.url, timeout=5) as client:
        client.post("/_script", json={"prefix": "/x", "statuses": [503]})
        first = client.post("/x/1?a=b", json={"k": 1})
        second = client.post("/x/1", json={"k": 2})
        listed = client.get("/_captured", params={"path": "/x"}).json()["requests"]
        page = client.get("/_ui").text
        client.delete("/_captured")
        after = client.get("/_captured").json()["requests"]

    assert (first.status_code, second.status_code) == (503, 200)
    assert [r["body"] for r in listed] == [{"k": 1}, {"k": 2}]
    assert listed[0]["query"] == {"a": ["b"]}
    assert "/x/1" in page
    assert after == []


def test_firestore_operations_for_duplicates_and_no_ledger_rules(
    project_id: str, firestore_db: Any, capture: CaptureServer
) -> None:
    """Cost of a first-wins duplicate, and of ``idempotence = "none"`` (zero)."""
    rules = '\n[rules.page_view]\nidempotence = "none"\n'
    stack = Stack(project_id, firestore_db, capture, rules)
    ops = stack.ops
    try:
        stack.service.handle(_envelope(_purchase("br-1", "ga4")), _now())
        browser_first = ops.summary()
        ops.reset()
        stack.service.handle(_envelope(_purchase("st-1", "stripe")), _now())
        duplicate = ops.summary()
        ops.reset()
        view = _purchase("pv-1", "ga4", name="page_view", commerce=None, dedup_key="")
        stack.service.handle(_envelope(view), _now())
        stack.service.handle(_envelope(view), _now())
        no_ledger = ops.summary()
    finally:
        stack.close()
    print(
        f"\nfirestore ops: browser_first={browser_first} duplicate={duplicate} "
        f"no_ledger_x2={no_ledger}"
    )

    assert browser_first == {
        "writes": 2,
        "reads": 0,
        "commits": 2,
        "batch_gets": 0,
        "transactions": 0,
    }
    # rejected create + read + one ArrayUnion update
    assert duplicate == {
        "writes": 2,
        "reads": 1,
        "commits": 2,
        "batch_gets": 1,
        "transactions": 0,
    }
    assert no_ledger == {
        "writes": 0,
        "reads": 0,
        "commits": 0,
        "batch_gets": 0,
        "transactions": 0,
    }
    assert stack.count("/a") == 3  # the purchase once, the page_view twice


# --- deferral and redrive (Google Ads TOO_RECENT_EVENT) ---------------------------

ADS_ENV = {
    "TRUECOUNT_GOOGLE_ADS_DEVELOPER_TOKEN": "dev-token",
    "TRUECOUNT_GOOGLE_ADS_CLIENT_ID": "client-id",
    "TRUECOUNT_GOOGLE_ADS_CLIENT_SECRET": "client-secret",
    "TRUECOUNT_GOOGLE_ADS_REFRESH_TOKEN": "refresh-token",
}


def _ads_extra(capture_url: str) -> str:
    return f"""
[destinations.ads]
type = "google_ads"
endpoint = "{capture_url}/gads"
token_url = "{capture_url}/oauth/token"
customer_id = "123-456-7890"
conversion_actions = {{ purchase = "987654" }}
"""


def _too_recent_body() -> dict[str, Any]:
    return {
        "partialFailureError": {
            "code": 3,
            "message": "The click is too recent.",
            "details": [
                {
                    "@type": "type.googleapis.com/google.ads.googleads.v23.errors."
                    "GoogleAdsFailure",
                    "errors": [
                        {"errorCode": {"conversionUploadError": "TOO_RECENT_EVENT"}}
                    ],
                }
            ],
        },
        "results": [{}],
    }


def test_too_recent_google_ads_conversion_is_deferred_then_redriven_once(
    project_id: str, firestore_db: Any, capture: CaptureServer, pubsub: Any
) -> None:
    """First upload: TOO_RECENT_EVENT -> deferred, acked, the http sinks delivered
    once. redrive(now + 5 h) publishes nothing; redrive(now + 7 h) republishes the
    event, whose redelivery uploads the conversion once; nothing else is resent."""
    emu.ensure_topic(project_id, DLQ)
    emu.ensure_topic(project_id, "truecount-events")
    events = pubsub.subscribe("truecount-events")
    capture.script("/oauth/token", [], body={"access_token": "t", "expires_in": 3600})
    capture.script("/gads", [], body=_too_recent_body())
    stack = Stack(
        project_id, firestore_db, capture, _ads_extra(capture.url), env=ADS_ENV
    )
    now = _now()
    event = _purchase(
        "st-ads",
        "stripe",
        click_ids=ClickIds(gclid="Cj0-gclid"),
        consent=Consent(ad_user_data="granted"),
    )
    try:
        first = stack.service.handle(_envelope(event), now)

        assert first.outcomes["ads"].status == "deferred"
        doc = stack.ledger("purchase:T-1001")
        ads = doc["destinations"]["ads"]
        assert (ads["status"], ads["reason"], ads["attempts"]) == (
            "pending",
            "deferred:TOO_RECENT_EVENT",
            0,
        )
        assert doc["deferred_until"] == ads["not_before"]
        assert Event.from_json_bytes(doc["event"]).event_id == "st-ads"

        capture.script("/gads", [], body={"results": [{"gclid": "Cj0-gclid"}]})
        assert stack.service.redrive(now + timedelta(hours=5)).reason == (
            "republished 0"
        )
        stack.service.redrive(now + timedelta(hours=7))
        [message] = pubsub.pull(events, expect=1, timeout=15)
        assert message.attributes["event_id"] == "st-ads"

        later = now + timedelta(hours=7)
        redelivered = _envelope(message.data, dict(message.attributes))
        stack.service.handle(redelivered, later)
        stack.service.handle(redelivered, later)  # a duplicate copy: done
        assert stack.service.redrive(later + timedelta(hours=2)).reason == (
            "republished 0"
        )

        uploads = capture.requests_to("/gads")
        assert len(uploads) == 2
        assert uploads[1].body["conversions"][0]["gclid"] == "Cj0-gclid"
        assert [stack.count(p) for p in ("/a", "/b", "/c")] == [1, 1, 1]
        # the 1 h access token has expired 7 h later: one exchange per upload
        assert stack.count("/oauth/token") == 2
        doc = stack.ledger("purchase:T-1001")
        ads = doc["destinations"]["ads"]
        assert (ads["status"], ads["attempts"], ads["deferrals"]) == (
            "delivered",
            1,
            1,
        )
        assert doc["deferred_until"] is None
    finally:
        stack.close()
