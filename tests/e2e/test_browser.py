"""The demo shop in a real browser: CORS preflight, credentials and cookies.

curl cannot prove these: a cross-origin ``fetch`` with ``credentials: "include"``
only succeeds when the preflight and the answer carry the exact origin and
``Access-Control-Allow-Credentials``, and only a browser decides which cookies
travel with a beacon.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from truecount.core.pii import sha256_hex
from truecount.demo import DemoClient, Shopper, stripe_checkout

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium page (Debian's chromium, driven by Playwright)."""
    problem = None
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        problem = "chromium is not installed (make system-deps)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "playwright is not installed (make install)"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=FLAGS,
            headless=True,
        )  # fmt: skip
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.errors = errors  # type: ignore[attr-defined]
        yield page
        context.close()


def test_shop_in_a_real_browser_sends_beacons_and_credentialed_fetches(
    browser_page: Any, world: Any, client: DemoClient
) -> None:
    """Landing with a gclid, accepting cookies and buying in Chromium gets the
    page_view and purchase through CORS with cookies; the Stripe payment for that
    order then reaches every platform once, with the browser's ids."""
    stack = world.stack
    email = f"browser.{int(time.time() * 1000)}@example.com"
    gclid = f"Cj0-browser-{int(time.time())}"
    url = (
        f"{stack.ports.url('shop')}/shop.html?ingest={stack.ports.url('ingest')}"
        f"&email={email}&gclid={gclid}"
    )
    page = browser_page

    page.goto(url)
    page.click("#accept")
    page.click("#buy")
    page.wait_for_function(
        "document.body.dataset.accepted || document.body.dataset.error"
    )

    assert page.errors == []
    assert page.evaluate("document.body.dataset.error") is None
    order = page.evaluate("document.body.dataset.order")
    cid = page.evaluate("document.body.dataset.cid")
    assert page.evaluate("document.body.dataset.accepted").startswith("data-")
    fbp = next(c["value"] for c in page.context.cookies() if c["name"] == "_fbp")
    views = world.wait_until(
        lambda: [
            r for r in stack.capture.requests_to("/sink")
            if r.body.get("name") == "page_view" and gclid in r.raw
        ]
    )  # fmt: skip
    assert views, "the page_view beacon never reached the sink"
    assert views[0].body["client"]["client_id"] == cid  # from the _ga cookie
    assert views[0].body["click_ids"]["fbp"] == fbp  # the cookie travelled
    assert world.wait_until(lambda: world.ledger(f"purchase:{order}"))

    shopper = Shopper(client_id=cid, gclid=gclid, order_id=order, email=email)
    assert client.stripe(stripe_checkout(shopper, int(time.time()))).status_code == 200

    mark = sha256_hex(email)
    ads = world.wait_until(lambda: world.about("/google-ads", mark))
    world.settle(mark)
    assert len(ads) == 1
    assert ads[0].body["conversions"][0]["gclid"] == gclid
    meta = world.about("/meta", mark)
    assert len(meta) == 1
    assert meta[0].body["data"][0]["user_data"]["fbp"] == fbp
    assert set(world.ledger(f"purchase:{order}")["sources"]) == {"data", "stripe"}
