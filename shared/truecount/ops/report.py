"""The ``reconcile --html`` report: one self-contained HTML file.

Inline CSS and inline SVG bar charts only: no script, no font, no image, no
external URL, so it opens offline or as a mail attachment. Every value from
the ledger is HTML-escaped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from truecount.ops.queries import IDENTIFIERS, ConversionShares, ReconcileReport

BAR_WIDTH = 520
LABEL_WIDTH = 190
ROW_HEIGHT = 26
BAR_HEIGHT = 18
COLOURS = {
    "both": "#2e7d32",
    "backend_only": "#1565c0",
    "browser_only": "#ef6c00",
    "coverage": "#6a1b9a",
    "track": "#eceff1",
}
SIDE_LABELS = {
    "both": "backend + browser",
    "backend_only": "backend only",
    "browser_only": "browser only",
}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;
color:#263238;max-width:60rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}
th,td{border:1px solid #cfd8dc;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}
.legend span{display:inline-block;margin-right:1rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;
vertical-align:middle}
.meta{color:#607d8b}
svg text{font-size:12px;fill:#263238}
"""


def _when(value: datetime) -> str:
    return escape(value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"))


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%"


def _svg(title: str, height: int, body: str, chart: str) -> str:
    width = LABEL_WIDTH + BAR_WIDTH + 70
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" '
        f'data-chart="{escape(chart)}" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">'
        f"<title>{escape(title)}</title>{body}</svg>"
    )


def _empty_svg(title: str, chart: str) -> str:
    body = '<text x="0" y="18">no data in this window</text>'
    return _svg(title, ROW_HEIGHT + 4, body, chart)


def conversions_svg(rows: list[ConversionShares]) -> str:
    """A stacked bar per conversion name: backend+browser, backend only,
    browser only (shares of the name's business events)."""
    title = "Who saw each conversion"
    if not rows:
        return _empty_svg(title, "conversions")
    parts: list[str] = []
    for i, row in enumerate(rows):
        y = i * ROW_HEIGHT + 4
        parts.append(
            f'<text x="0" y="{y + 13}">{escape(row.name)} ({row.total})</text>'
        )
        x = float(LABEL_WIDTH)
        for side, share in (
            ("both", row.share_both),
            ("backend_only", row.share_backend_only),
            ("browser_only", row.share_browser_only),
        ):
            width = share * BAR_WIDTH
            if width <= 0:
                continue
            parts.append(
                f'<rect class="bar {side}" x="{x:.1f}" y="{y}" '
                f'width="{width:.1f}" height="{BAR_HEIGHT}" fill="{COLOURS[side]}">'
                f"<title>{escape(row.name)}: {SIDE_LABELS[side]} {_pct(share)}"
                "</title></rect>"
            )
            x += width
    return _svg(title, len(rows) * ROW_HEIGHT + 8, "".join(parts), "conversions")


def coverage_svg(destination: str, delivered: int, shares: dict[str, float]) -> str:
    """One bar per identifier: share of the destination's delivered events."""
    title = f"Identifier coverage: {destination} ({delivered} delivered)"
    parts: list[str] = []
    for i, identifier in enumerate(IDENTIFIERS):
        y = i * ROW_HEIGHT + 4
        share = shares.get(identifier, 0.0)
        width = share * BAR_WIDTH
        parts.append(f'<text x="0" y="{y + 13}">{escape(identifier)}</text>')
        parts.append(
            f'<rect class="track" x="{LABEL_WIDTH}" y="{y}" width="{BAR_WIDTH}" '
            f'height="{BAR_HEIGHT}" fill="{COLOURS["track"]}"/>'
        )
        if width > 0:
            parts.append(
                f'<rect class="bar coverage" x="{LABEL_WIDTH}" y="{y}" '
                f'width="{width:.1f}" height="{BAR_HEIGHT}" '
                f'fill="{COLOURS["coverage"]}"><title>{escape(identifier)}: '
                f"{_pct(share)}</title></rect>"
            )
        parts.append(
            f'<text x="{LABEL_WIDTH + BAR_WIDTH + 6}" y="{y + 13}">{_pct(share)}</text>'
        )
    height = len(IDENTIFIERS) * ROW_HEIGHT + 8
    return _svg(title, height, "".join(parts), f"coverage-{destination}")


def _conversions_table(rows: list[ConversionShares]) -> str:
    head = (
        "<tr><th>conversion</th><th>events</th><th>backend + browser</th>"
        "<th>backend only</th><th>browser only</th></tr>"
    )
    body = "".join(
        f"<tr><td>{escape(r.name)}</td><td>{r.total}</td>"
        f"<td>{_pct(r.share_both)} ({r.both})</td>"
        f"<td>{_pct(r.share_backend_only)} ({r.backend_only})</td>"
        f"<td>{_pct(r.share_browser_only)} ({r.browser_only})</td></tr>"
        for r in rows
    )
    return f"<table>{head}{body}</table>"


def _legend() -> str:
    items = "".join(
        f'<span><i class="swatch" style="background:{COLOURS[k]}"></i>'
        f"{escape(v)}</span>"
        for k, v in SIDE_LABELS.items()
    )
    return f'<p class="legend">{items}</p>'


def render_html(report: ReconcileReport, project: str, generated_at: datetime) -> str:
    """Render the reconcile report as one self-contained HTML document.

    Args:
        report: the reconcile result.
        project: the Google Cloud project it was read from.
        generated_at: when it was generated (shown).

    Returns:
        The HTML text.
    """
    coverage = "".join(
        "<section class='destination'>"
        f"<h3>{escape(c.destination)}</h3>"
        + coverage_svg(c.destination, c.delivered, {i: c.share(i) for i in IDENTIFIERS})
        + "</section>"
        for c in report.coverage
    ) or (
        "<p>No delivered conversions in this window.</p>"
        + _empty_svg("Identifier coverage", "coverage")
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        "<title>Truecount reconcile report</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>Truecount reconcile report</h1>"
        f"<p class='meta'>project {escape(project)} · business events first "
        f"seen since {_when(report.since)} · generated {_when(generated_at)}</p>"
        "<h2>Backend vs browser, per conversion</h2>"
        + _legend()
        + conversions_svg(report.conversions)
        + _conversions_table(report.conversions)
        + "<h2>Identifier coverage of delivered conversions, per destination</h2>"
        + coverage
        + "</body></html>"
    )
