"""The self-contained HTML reconcile report and the rich renderings."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from typer.testing import CliRunner

from truecount.core.dedup import doc_id
from truecount.ops import queries
from truecount.ops.cli import ops_app, render_reconcile, render_status, render_story
from truecount.ops.report import BAR_WIDTH, render_html
from truecount.testing import InMemoryLedger

SINCE = datetime(2026, 4, 4, 12, 0, tzinfo=UTC)
GENERATED = datetime(2026, 4, 5, 12, 0, tzinfo=UTC)


def _console() -> Console:
    return Console(record=True, width=200, color_system=None)


def test_html_report_is_self_contained(scenario_docs: list[dict[str, Any]]) -> None:
    """No script, no link, no external URL; only the SVG namespace."""
    page = render_html(queries.reconcile_report(scenario_docs, SINCE), "p-1", GENERATED)

    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert set(re.findall(r"https?://[^\"' )]+", page)) == {
        "http://www.w3.org/2000/svg"
    }
    assert page.count("<svg") == 3  # conversions + one per destination


def test_html_bars_are_proportional_to_shares(
    scenario_docs: list[dict[str, Any]],
) -> None:
    """The purchase bar splits into three thirds; sink gclid coverage is 75%."""
    page = render_html(queries.reconcile_report(scenario_docs, SINCE), "p-1", GENERATED)

    widths = [
        float(w)
        for w in re.findall(
            r'class="bar (?:both|backend_only|browser_only)"[^>]*width="([\d.]+)"', page
        )
    ]
    assert widths[:3] == [round(BAR_WIDTH / 3, 1)] * 3
    sink = page[page.index('data-chart="coverage-sink"') :]
    gclid = re.search(
        r'class="bar coverage"[^>]*width="([\d.]+)"[^>]*><title>gclid', sink
    )
    assert gclid is not None
    assert float(gclid.group(1)) == BAR_WIDTH * 0.75
    assert "75.0%" in sink


def test_html_escapes_ledger_values() -> None:
    """A hostile event name or destination id is text, not markup."""
    docs = [
        {
            "name": "<img src=x>",
            "sources": {"stripe": [{"event_id": "e"}]},
            "destinations": {"<b>d</b>": {"status": "delivered"}},
            "context": {},
        }
    ]
    report = queries.reconcile_report(docs, SINCE, names=["<img src=x>"])

    page = render_html(report, "<p>", GENERATED)

    assert "<img" not in page
    assert "<b>d</b>" not in page
    assert "&lt;img src=x&gt;" in page


def test_html_report_without_data_still_renders_a_chart() -> None:
    """An empty window gives placeholder charts, not an error."""
    page = render_html(queries.ReconcileReport(since=SINCE), "p", GENERATED)

    assert "no data in this window" in page
    assert page.count("<svg") == 2


def test_status_rendering_shows_counts_reasons_and_pairs(
    scenario_docs: list[dict[str, Any]],
) -> None:
    """The table shows each destination's numbers and the dedup pairs."""
    console = _console()

    render_status(console, queries.status_report(scenario_docs, SINCE))

    text = console.export_text()
    assert re.search(r"ads\s+│\s+3\s+│\s+3\s+│\s+0\s+│\s+0\s+│\s+consent: 3", text)
    assert re.search(
        r"sink\s+│\s+5\s+│\s+0\s+│\s+1\s+│\s+0\s+│\s+-\s+│\s+http_400: 1", text
    )
    assert re.search(r"ga4\+stripe\s+│\s+1", text)
    assert re.search(r"crm\+data\s+│\s+1", text)
    assert "1 held browser events" in text


def test_reconcile_rendering_shows_shares(scenario_docs: list[dict[str, Any]]) -> None:
    """Shares print as percentages with their counts."""
    console = _console()

    render_reconcile(console, queries.reconcile_report(scenario_docs, SINCE))

    text = console.export_text()
    assert re.search(
        r"purchase\s+│\s+3\s+│\s+33\.3% \(1\)\s+│\s+33\.3% \(1\)\s+│\s+33\.3% \(1\)",
        text,
    )
    assert re.search(
        r"sink\s+│\s+4\s+│\s+100\.0%\s+│\s+25\.0%\s+│\s+0\.0%\s+│\s+25\.0%\s+│\s+75\.0%\s+│\s+75\.0%",
        text,
    )


def test_story_rendering_shows_sources_payload_and_response(
    scenario_ledger: InMemoryLedger,
) -> None:
    """The trace prints sources, stitched fields, each payload and response."""
    console = _console()

    render_story(
        console, queries.story(scenario_ledger.docs[doc_id("qualify_lead:L-7")])
    )

    text = console.export_text()
    assert "qualify_lead:L-7" in text
    assert re.search(r"crm\s+│\s+crm-l7-q\s+│\s+delivered", text)
    assert re.search(r"gclid\s+│\s+identity:lead_id\s+│\s+G-7", text)
    assert "consent:ad_user_data=denied" in text
    assert '"status": 200' in text
    assert "destination sink" in text


def test_bad_since_is_a_usage_error() -> None:
    """--since that is not a duration exits 2 before touching Firestore."""
    result = CliRunner().invoke(ops_app, ["status", "--since", "yesterday"])

    assert result.exit_code == 2
    assert "not a duration" in result.output
