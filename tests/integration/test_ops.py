"""``truecount status | trace | replay | reconcile | retry-failed`` against the
emulators.

The ledger is written by real fanout runs (``FanoutService`` with the Firestore
adapters and ``http`` destinations pointing at a ``CaptureServer``); the
commands run through typer's ``CliRunner`` and their numbers are checked.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.cloud import firestore
from ops_support import (
    EXPECTED_CONVERSIONS,
    EXPECTED_COVERAGE,
    EXPECTED_STATUS,
    ops_config,
    run_scenario,
)
from typer.testing import CliRunner

from truecount.adapters.firestore import FirestoreIdentities, FirestoreLedger
from truecount.adapters.http import HttpxSender
from truecount.adapters.pubsub import PubSubPublisher
from truecount.capture import CaptureServer
from truecount.config import parse_config
from truecount.core.dedup import doc_id
from truecount.core.fanout import FanoutService
from truecount.destinations.registry import build_destinations
from truecount.errors import RetryableError
from truecount.models.event import Commerce, Event, Identity
from truecount.ops.cli import ops_app
from truecount.ops.store import LedgerReader

EVENTS_TOPIC = "truecount-events"
DLQ_TOPIC = "truecount-events-dead-letter"
DLQ_SUB = "truecount-events-dead-letter-sub"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    """A capture server standing in for both destinations."""
    server = CaptureServer().start()
    yield server
    server.stop()


@pytest.fixture
def service(
    project_id: str, firestore_db: Any, capture: CaptureServer
) -> Iterator[FanoutService]:
    """Fanout wired to the Firestore emulator and the capture server."""
    config = ops_config(capture.url)
    client = httpx.Client(timeout=5.0)
    publisher = PubSubPublisher(project_id, EVENTS_TOPIC)
    yield FanoutService(
        config,
        build_destinations(config, {}),
        ledger=FirestoreLedger(lambda: firestore_db),
        identities=FirestoreIdentities(lambda: firestore_db),
        sender=HttpxSender(client),
        publisher=publisher,
    )
    client.close()
    publisher.close()


@pytest.fixture
def seeded(service: FanoutService, capture: CaptureServer) -> datetime:
    """The ops scenario, run through fanout now; returns its ``now``."""
    now = datetime.now(UTC)
    run_scenario(service, now, lambda: capture.script("/sink", [400]))
    return now


def _run(project: str, *args: str) -> Any:
    result = CliRunner().invoke(ops_app, [*args, "--project", project])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def _json(project: str, *args: str) -> Any:
    return json.loads(_run(project, *args, "--json").stdout)


def test_status_counts_what_fanout_recorded(project_id: str, seeded: datetime) -> None:
    """Per destination: delivered, skipped by reason, failed by class; dedup pairs."""
    report = _json(project_id, "status", "--since", "1h")
    table = _run(project_id, "status", "--since", "1h").stdout

    assert report["documents"] == EXPECTED_STATUS["documents"]
    assert report["held"] == EXPECTED_STATUS["held"]
    assert report["destinations"] == EXPECTED_STATUS["destinations"]
    assert report["dedup_hits"] == EXPECTED_STATUS["dedup_hits"]
    assert "http_400: 1" in table
    assert "consent: 3" in table
    assert "ga4+stripe" in table


def test_status_window_is_a_server_side_query(
    firestore_db: Any, seeded: datetime
) -> None:
    """``updated_since`` returns the entries at or after the window start only."""
    reader = LedgerReader(lambda: firestore_db)

    inside = list(reader.updated_since(seeded))
    after = list(reader.updated_since(seeded + timedelta(milliseconds=1)))

    assert len(inside) == 7
    assert after == []


def test_trace_by_transaction_id_tells_the_whole_story(
    project_id: str, seeded: datetime
) -> None:
    """T-1: browser seen, Stripe delivered to both, payload and response kept."""
    stories = _json(project_id, "trace", "T-1")
    text = _run(project_id, "trace", "T-1").stdout

    assert [s["dedup_key"] for s in stories] == ["purchase:T-1"]
    story = stories[0]
    assert [(s["source"], s["event_id"], s["role"]) for s in story["sightings"]] == [
        ("ga4", "ga4-t1", "recorded"),
        ("stripe", "evt_st_t1", "delivered"),
    ]
    dests = {d["destination"]: d for d in story["destinations"]}
    assert {d: (v["status"], v["attempts"]) for d, v in dests.items()} == {
        "ads": ("delivered", 1),
        "sink": ("delivered", 1),
    }
    assert dests["sink"]["request"]["json"]["commerce"]["transaction_id"] == "T-1"
    assert dests["sink"]["response"]["status"] == 200
    assert story["context"]["gclid"] == "G-1"
    assert "evt_st_t1" in text
    assert "destination sink" in text


def test_trace_resolves_event_ids_dedup_keys_and_stitched_fields(
    project_id: str, seeded: datetime
) -> None:
    """An event_id, a dedup key and a lead id each find their entries."""
    by_delivering = _json(project_id, "trace", "evt_st_t1")
    by_first = _json(project_id, "trace", "ga4-t1")
    by_duplicate = _json(project_id, "trace", "data-l8")
    by_key = _json(project_id, "trace", "qualify_lead:L-7")
    by_lead = _json(project_id, "trace", "L-7")
    failed = _json(project_id, "trace", "purchase:T-2")

    assert [s["dedup_key"] for s in by_delivering] == ["purchase:T-1"]
    assert [s["dedup_key"] for s in by_first] == ["purchase:T-1"]
    assert [s["dedup_key"] for s in by_duplicate] == ["lead:L-8"]
    merged = {(m["field"], m["origin"], m["value"]) for m in by_key[0]["merged"]}
    assert ("gclid", "identity:lead_id", "G-7") in merged
    assert sorted(s["dedup_key"] for s in by_lead) == ["lead:L-7", "qualify_lead:L-7"]
    sink = next(d for d in failed[0]["destinations"] if d["destination"] == "sink")
    assert (sink["status"], sink["http_status"], sink["error"]) == (
        "failed",
        400,
        "http 400",
    )


def test_trace_of_unknown_id_exits_1(project_id: str, seeded: datetime) -> None:
    """Nothing found: a message and exit code 1."""
    result = CliRunner().invoke(ops_app, ["trace", "nope-404", "--project", project_id])

    assert result.exit_code == 1
    assert "no ledger entry found" in result.output


def test_reconcile_shares_and_html_report(
    project_id: str, seeded: datetime, tmp_path: Path
) -> None:
    """Shares per conversion and coverage per destination; the HTML renders."""
    html = tmp_path / "reconcile.html"
    report = _json(project_id, "reconcile", "--since", "1d", "--html", str(html))
    table = _run(project_id, "reconcile", "--since", "1d").stdout

    got = {
        c["name"]: (c["total"], c["both"], c["backend_only"], c["browser_only"])
        for c in report["conversions"]
    }
    assert got == EXPECTED_CONVERSIONS
    purchase = report["conversions"][0]
    assert purchase["share_both"] == pytest.approx(1 / 3)
    coverage = {
        c["destination"]: (c["delivered"], c["counts"]) for c in report["coverage"]
    }
    assert coverage == EXPECTED_COVERAGE
    assert report["coverage"][1]["shares"]["gclid"] == pytest.approx(0.75)
    assert "33.3% (1)" in table
    _check_in_chromium(html, tmp_path / "reconcile.png")


# --- replay --------------------------------------------------------------------


def _dead_letter_topics(pubsub: Any) -> str:
    pubsub.create_topic(EVENTS_TOPIC)
    pubsub.create_topic(DLQ_TOPIC)
    pubsub.subscribe(DLQ_TOPIC, DLQ_SUB)
    return pubsub.subscribe(EVENTS_TOPIC, "events-pull")


def _park(project: str, events: list[Event], reason: str) -> None:
    """Put events on the dead-letter topic as fanout parks them."""
    publisher = PubSubPublisher(project, DLQ_TOPIC)
    try:
        for event in events:
            attributes = {
                **event.pubsub_attributes(),
                "truecount_dead_letter_reason": reason,
            }
            publisher.publish_raw(DLQ_TOPIC, event.to_json_bytes(), attributes)
    finally:
        publisher.close()


def _deliver(pubsub: Any, sub: str, service: FanoutService, expect: int) -> list[str]:
    """Pull the events topic and run fanout on each message, as the push would."""
    actions = []
    for message in pubsub.pull(sub, expect=expect, timeout=15):
        envelope = {
            "message": {
                "data": base64.b64encode(message.data).decode(),
                "attributes": message.attributes,
                "messageId": message.message_id,
            }
        }
        actions.append(service.handle(envelope, datetime.now(UTC)).action)
    return actions


def _orders(now: datetime) -> list[Event]:
    return [
        Event(
            event_id=f"evt_dl_{i}",
            name="purchase",
            source="stripe",
            occurred_at=now - timedelta(minutes=5),
            received_at=now - timedelta(minutes=5),
            dedup_key=f"purchase:D-{i}",
            identity=Identity(email_sha256=f"{i}" * 64),
            commerce=Commerce(
                transaction_id=f"D-{i}", value=Decimal("10.00"), currency="EUR"
            ),
        )
        for i in range(5)
    ]


def test_replay_moves_dead_letters_back_and_delivers_each_once(
    project_id: str, pubsub: Any, service: FanoutService, capture: CaptureServer
) -> None:
    """5 parked events: replayed and delivered once; replaying again adds nothing."""
    events_sub = _dead_letter_topics(pubsub)
    now = datetime.now(UTC)
    _park(project_id, _orders(now), "destination_down: sink answered 503")
    _park(project_id, _orders(now)[:1], "invalid_event: other")

    dry = _json(project_id, "replay", "--dry-run", "--reason", "destination_down")
    first = _json(project_id, "replay", "--reason", "destination_down", "--since", "1h")
    actions = _deliver(pubsub, events_sub, service, expect=5)
    second = _json(project_id, "replay", "--reason", "destination_down")

    assert (dry["matched"], dry["replayed"], dry["not_matching"]) == (5, 0, 1)
    assert (first["matched"], first["replayed"], first["failed"]) == (5, 5, 0)
    assert first["by_reason"] == {"destination_down": 5}
    assert actions == ["deliver"] * 5
    assert len(capture.requests_to("/sink")) == 5
    bodies = sorted(
        r.body["commerce"]["transaction_id"] for r in capture.requests_to("/sink")
    )
    assert bodies == [f"D-{i}" for i in range(5)]
    assert (second["replayed"], second["not_matching"]) == (0, 1)


def test_replaying_a_delivered_event_again_sends_nothing(
    project_id: str, pubsub: Any, service: FanoutService, capture: CaptureServer
) -> None:
    """The ledger makes replay idempotent: a copy dead-lettered twice is 'done'."""
    events_sub = _dead_letter_topics(pubsub)
    orders = _orders(datetime.now(UTC))
    _park(project_id, orders, "destination_down")
    _json(project_id, "replay")
    _deliver(pubsub, events_sub, service, expect=5)
    _park(project_id, orders, "destination_down")

    again = _json(project_id, "replay", "--max", "5")
    actions = _deliver(pubsub, events_sub, service, expect=5)
    table = _run(project_id, "status", "--since", "1h").stdout

    assert again["replayed"] == 5
    assert actions == ["done"] * 5
    assert len(capture.requests_to("/sink")) == 5
    assert "sink" in table


# --- the HTML report in Chromium -----------------------------------------------


def _chromium_or_skip() -> None:
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed (pip install playwright)"
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(problem)
        pytest.skip(problem)


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG into rows of raw pixel bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8
            channels = {2: 3, 6: 4}[colour]
        elif kind == b"IDAT":
            idat += body
    raw, stride, rows, prev = (
        zlib.decompress(idat),
        width * channels,
        [],
        bytes(width * channels),
    )
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        prev = bytes(line)
        rows.append(prev)
    return width, channels, rows


def _count_colour(png: bytes, rgb: tuple[int, int, int]) -> int:
    width, channels, rows = _png_pixels(png)
    return sum(
        1
        for row in rows
        for x in range(width)
        if all(abs(row[x * channels + k] - rgb[k]) <= 8 for k in range(3))
    )


def _check_in_chromium(html: Path, screenshot: Path) -> None:
    """Open the report in headless Chromium: no console error, no request out,
    every chart drawn (non-empty SVG, coloured bars in the screenshot)."""
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="truecount-chromium-")
    errors: list[str] = []
    requests: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
                viewport={"width": 1100, "height": 1400},
            )
            try:
                page = browser.new_page()
                page.on(
                    "console",
                    lambda m: errors.append(m.text) if m.type == "error" else None,
                )
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("request", lambda r: requests.append(r.url))
                page.goto(html.as_uri())
                charts = page.evaluate(
                    """() => [...document.querySelectorAll('svg.chart')].map(s => ({
                        name: s.dataset.chart,
                        width: s.getBoundingClientRect().width,
                        height: s.getBoundingClientRect().height,
                        bars: [...s.querySelectorAll('rect.bar')]
                            .filter(r => r.getBoundingClientRect().width > 0).length,
                    }))"""
                )
                page.screenshot(path=str(screenshot), full_page=True)
                first_chart = page.locator("svg.chart").first.screenshot()
            finally:
                browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)

    assert errors == []
    assert requests == [html.as_uri()]
    assert [c["name"] for c in charts] == [
        "conversions",
        "coverage-ads",
        "coverage-sink",
    ]
    assert all(c["width"] > 0 and c["height"] > 0 and c["bars"] > 0 for c in charts)
    assert charts[0]["bars"] == 6  # purchase 3 + generate_lead 2 + qualify_lead 1
    assert screenshot.stat().st_size > 10_000
    assert _count_colour(first_chart, (0x2E, 0x7D, 0x32)) > 500  # backend + browser
    assert _count_colour(first_chart, (0xEF, 0x6C, 0x00)) > 500  # browser only


def test_redrive_command_publishes_the_redrive_message(
    project_id: str, pubsub: Any
) -> None:
    """``truecount redrive`` puts ``{}`` with truecount_command=redrive on the
    events topic of the emulator project."""
    from truecount.cli import app

    pubsub.create_topic("truecount-events")
    sub = pubsub.subscribe("truecount-events")

    result = CliRunner().invoke(app, ["redrive", "--project", project_id])

    assert result.exit_code == 0, result.output
    assert "redrive requested on truecount-events" in result.output
    [message] = pubsub.pull(sub, expect=1, timeout=15)
    assert message.data == b"{}"
    assert dict(message.attributes) == {"truecount_command": "redrive"}


# --- retry-failed ----------------------------------------------------------------


@pytest.fixture
def outage(
    project_id: str, firestore_db: Any, capture: CaptureServer, pubsub: Any
) -> Iterator[tuple[FanoutService, str]]:
    """Fanout with ``down`` (gives up after 2 attempts) and ``up``, both on the
    capture server, republishing to the events topic; plus a pull subscription
    on that topic."""
    pubsub.create_topic(EVENTS_TOPIC)
    events_sub = pubsub.subscribe(EVENTS_TOPIC, "events-pull")
    config = parse_config(
        f"""
[fanout]
max_attempts = 2
http_timeout_seconds = 5

[destinations.down]
type = "http"
endpoint = "{capture.url}/down"

[destinations.up]
type = "http"
endpoint = "{capture.url}/up"
"""
    )
    client = httpx.Client(timeout=5.0)
    publisher = PubSubPublisher(project_id, EVENTS_TOPIC)
    yield (
        FanoutService(
            config,
            build_destinations(config, {}),
            ledger=FirestoreLedger(lambda: firestore_db),
            identities=FirestoreIdentities(lambda: firestore_db),
            sender=HttpxSender(client),
            publisher=publisher,
            events_topic=EVENTS_TOPIC,
            sleep=lambda _: None,
        ),
        events_sub,
    )
    client.close()
    publisher.close()


def _fail_on_down(service: FanoutService, capture: CaptureServer) -> list[Event]:
    """Three orders: ``down`` answers 503 until fanout gives up; ``up`` 200."""
    capture.script("/down", [503] * 6)
    orders = _orders(datetime.now(UTC))[:3]
    for order in orders:
        envelope = {
            "message": {
                "data": base64.b64encode(order.to_json_bytes()).decode(),
                "attributes": order.pubsub_attributes(),
                "messageId": order.event_id,
            }
        }
        with pytest.raises(RetryableError):
            service.handle(envelope, datetime.now(UTC))
        assert service.handle(envelope, datetime.now(UTC)).action == "resume"
    return orders


def test_retry_failed_redelivers_each_failed_event_once(
    project_id: str,
    firestore_db: Any,
    pubsub: Any,
    outage: tuple[FanoutService, str],
    capture: CaptureServer,
) -> None:
    """``down`` failed (max_attempts: http 503) for three orders that ``up``
    delivered. Fixed, then ``retry-failed --destination down``: one redrive
    command; fanout republishes the three events and ``down`` receives each once
    more (200); ``up`` receives nothing new; the ledger shows delivered plus the
    previous failure. A second run finds nothing to re-open."""
    service, events_sub = outage
    orders = _fail_on_down(service, capture)
    status = _json(project_id, "status", "--since", "1h")
    assert status["destinations"]["down"]["failed"] == {"max_attempts/http_503": 3}
    assert len(capture.requests_to("/down")) == 6
    assert len(capture.requests_to("/up")) == 3
    capture.script("/down", [])  # the sink is fixed

    report = _json(
        project_id, "retry-failed", "--destination", "down", "--error", "http_503"
    )
    [command] = pubsub.pull(events_sub, expect=1, timeout=15)
    assert dict(command.attributes) == {"truecount_command": "redrive"}
    redrive = service.handle(
        {
            "message": {
                "data": base64.b64encode(command.data).decode(),
                "attributes": dict(command.attributes),
                "messageId": command.message_id,
            }
        },
        datetime.now(UTC),
    )
    actions = _deliver(pubsub, events_sub, service, expect=3)
    again = _json(project_id, "retry-failed", "--destination", "down")

    assert report["counts"] == {"reopened": 3}
    assert report["by_error"] == {"max_attempts/http_503": 3}
    assert report["redrive_message_id"]
    assert redrive.reason == "republished 3"
    assert sorted(actions) == ["resume"] * 3
    down = capture.requests_to("/down")
    assert len(down) == 9
    assert sorted(r.body["event_id"] for r in down[6:]) == sorted(
        o.event_id for o in orders
    )
    assert len(capture.requests_to("/up")) == 3
    reader = LedgerReader(lambda: firestore_db)
    for order in orders:
        [doc] = reader.resolve(order.dedup_key)
        record = doc["destinations"]["down"]
        assert (record["status"], record["attempts"]) == ("delivered", 1)
        assert [f["error"] for f in record["previous_failures"]] == [
            "max_attempts: http 503"
        ]
        assert doc["destinations"]["up"]["status"] == "delivered"
        assert doc["deferred_until"] is None
    assert again["counts"] == {}
    assert again["redrive_message_id"] is None


def test_retry_failed_dry_run_changes_nothing(
    project_id: str,
    firestore_db: Any,
    pubsub: Any,
    outage: tuple[FanoutService, str],
    capture: CaptureServer,
) -> None:
    """``--dry-run`` lists the three failed entries, writes nothing and sends no
    redrive; an entry without a stored event is reported, never re-opened."""
    service, events_sub = outage
    _fail_on_down(service, capture)
    legacy = _orders(datetime.now(UTC))[0]
    firestore_db.collection("ledger").document(doc_id(legacy.dedup_key)).update(
        {"event": firestore.DELETE_FIELD}
    )
    before = {
        s.id: (s.to_dict(), s.update_time)
        for s in firestore_db.collection("ledger").stream()
    }

    dry = _json(project_id, "retry-failed", "--destination", "down", "--dry-run")
    table = _run(
        project_id, "retry-failed", "--destination", "down", "--dry-run"
    ).stdout
    after = {
        s.id: (s.to_dict(), s.update_time)
        for s in firestore_db.collection("ledger").stream()
    }

    assert dry["counts"] == {"would_reopen": 2, "no_event": 1}
    [no_event] = [e for e in dry["entries"] if e["outcome"] == "no_event"]
    assert no_event["dedup_key"] == legacy.dedup_key
    assert no_event["note"] == "cannot re-deliver (no stored event)"
    assert dry["redrive_message_id"] is None
    assert "would re-open 2" in table
    assert "cannot re-deliver" in table
    assert after == before
    assert pubsub.pull(events_sub, timeout=2) == []
