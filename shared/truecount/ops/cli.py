"""``truecount status | trace | replay | reconcile | retry-failed``: delivery,
from the ledger.

The commands read ``ledger/`` in Firestore and the dead-letter subscription in
Pub/Sub of ``--project`` (default ``GOOGLE_CLOUD_PROJECT``). With
``FIRESTORE_EMULATOR_HOST`` / ``PUBSUB_EMULATOR_HOST`` set they work against the
emulators (``truecount dev``); otherwise against the real project with
Application Default Credentials. Register them on the main app::

    from truecount.ops.cli import reconcile_cmd, replay_cmd, status_cmd, trace_cmd
    from truecount.ops.cli import retry_failed_cmd
    app.command("status")(status_cmd)
    app.command("trace")(trace_cmd)
    app.command("replay")(replay_cmd)
    app.command("reconcile")(reconcile_cmd)
    app.command("retry-failed")(retry_failed_cmd)

``ops_app`` has the same five commands, for tests and ``python -m``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from truecount.ops import queries
    from truecount.ops.replay import ReplayResult
    from truecount.ops.retry import RetryResult
    from truecount.ops.store import LedgerReader

ProjectOption = Annotated[
    str,
    typer.Option(
        "--project",
        envvar="GOOGLE_CLOUD_PROJECT",
        help="Google Cloud project (default: $GOOGLE_CLOUD_PROJECT); "
        "*_EMULATOR_HOST variables point at the emulators",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="print JSON instead of tables")
]
DebugOption = Annotated[
    bool, typer.Option("--include-debug", help="count debug (test) events too")
]
DEFAULT_PROJECT = "truecount-local"
STATUS_STYLE = {
    "delivered": "green",
    "skipped": "yellow",
    "failed": "red",
    "pending": "cyan",
}


def _console() -> Console:
    from rich.console import Console

    wide = None if sys.stdout.isatty() else 140
    return Console(width=wide, highlight=False)


def _since(text: str, now: datetime) -> datetime:
    from truecount.ops import queries

    try:
        return now - queries.parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None


@functools.cache
def _client(project: str) -> Any:
    from truecount.ops.store import firestore_client

    return firestore_client(project)


def _reader(project: str) -> LedgerReader:
    from truecount.ops.store import LedgerReader

    return LedgerReader(lambda: _client(project))


def _where(project: str) -> str:
    hosts = [
        f"{name.split('_')[0].lower()} emulator {os.environ[name]}"
        for name in ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST")
        if os.environ.get(name)
    ]
    return f"project {project}" + (f" ({', '.join(hosts)})" if hosts else "")


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _fmt_time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "-" if value is None else str(value)


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items())) or "-"


# --- status ------------------------------------------------------------------


def render_status(console: Console, report: queries.StatusReport) -> None:
    """Print the status tables.

    Args:
        console: where to print.
        report: the aggregated status.
    """

    from rich.table import Table

    table = Table(title=f"Delivery since {_fmt_time(report.since)}")
    for column in ("destination", "delivered", "skipped", "failed", "pending"):
        table.add_column(column, justify="left" if column == "destination" else "right")
    table.add_column("skipped by reason")
    table.add_column("failed by error")
    for dest, row in sorted(report.destinations.items()):
        waiting = [
            f"{n} {label}"
            for n, label in ((row.retrying, "retrying"), (row.deferred, "deferred"))
            if n
        ]
        pending = f"{row.pending}" + (f" ({', '.join(waiting)})" if waiting else "")
        table.add_row(
            dest,
            f"[green]{row.delivered}[/]",
            f"[yellow]{sum(row.skipped.values())}[/]",
            f"[red]{sum(row.failed.values())}[/]",
            f"[cyan]{pending}[/]",
            _counts(row.skipped),
            _counts(row.failed),
        )
    console.print(table)
    hits = Table(title="Dedup hits by source pair")
    hits.add_column("sources")
    hits.add_column("business events", justify="right")
    for pair, count in sorted(report.dedup_hits.items()):
        hits.add_row(pair, str(count))
    console.print(hits)
    console.print(
        f"{report.documents} business events updated in the window; "
        f"{report.held} held browser events awaiting their backend event"
        + (f"; {report.debug} debug events left out" if report.debug else "")
    )


def status_cmd(
    since: Annotated[
        str, typer.Option(help="window: 30m, 24h, 7d ... (by ledger updated_at)")
    ] = "24h",
    project: ProjectOption = DEFAULT_PROJECT,
    include_debug: DebugOption = False,
    as_json: JsonOption = False,
) -> None:
    """Delivered, skipped, failed and pending per destination; dedup hits."""
    from truecount.ops import queries

    start = _since(since, datetime.now(UTC))
    report = queries.status_report(
        _reader(project).updated_since(start), start, include_debug
    )
    if as_json:
        _echo_json(report.to_dict())
        return
    console = _console()
    console.print(f"[dim]{_where(project)}[/]")
    render_status(console, report)


# --- trace -------------------------------------------------------------------


def _json_block(data: Any) -> RenderableType:
    from rich.json import JSON

    return JSON(json.dumps(data, default=str, ensure_ascii=False))


def render_story(console: Console, st: queries.Story) -> None:
    """Print one business event's story.

    Args:
        console: where to print.
        st: the story built from its ledger document.
    """
    from rich.panel import Panel
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    for label, value in (
        ("dedup key", st.dedup_key),
        ("name", st.name),
        ("truth", st.truth),
        ("transaction_id", st.transaction_id),
        ("lead_id", st.lead_id),
        ("first event_id", st.first_event_id),
        ("delivered event_id", st.delivery_event_id or "(held: no backend event yet)"),
        ("occurred", _fmt_time(st.occurred_at)),
        ("first seen", _fmt_time(st.created_at)),
        ("merged", _fmt_time(st.merged_at) if st.merged_at else None),
        ("last update", _fmt_time(st.updated_at)),
        ("debug", "yes" if st.debug else None),
    ):
        if value:
            head.add_row(f"[bold]{label}[/]", str(value))
    console.print(Panel(head, title=f"[bold]{st.name}[/] {st.dedup_key}"))

    seen = Table(title="Sources")
    for column in ("seen at", "source", "event_id", "role"):
        seen.add_column(column)
    for s in st.sightings:
        seen.add_row(_fmt_time(s.at), s.source, s.event_id, s.role)
    console.print(seen)

    if st.merged:
        merged = Table(title="Merged in")
        for column in ("field", "from", "value"):
            merged.add_column(column)
        for m in st.merged:
            merged.add_row(m.field, m.origin, str(m.value))
        console.print(merged)

    context = Table(title="Merged context (as delivered)")
    context.add_column("field")
    context.add_column("value", overflow="fold")
    for key, value in st.context.items():
        context.add_row(key, str(value))
    console.print(context)

    for d in st.destinations:
        style = STATUS_STYLE.get(d.status, "white")
        info = Table.grid(padding=(0, 2))
        for label, value in (
            ("status", f"[{style}]{d.status}[/]"),
            ("attempts", str(d.attempts)),
            ("reason", d.reason),
            ("error", d.error),
            ("http status", str(d.http_status) if d.http_status else None),
            (
                "first attempt",
                _fmt_time(d.first_attempt_at) if d.first_attempt_at else None,
            ),
            ("delivered at", _fmt_time(d.delivered_at) if d.delivered_at else None),
            ("updated", _fmt_time(d.updated_at)),
        ):
            if value:
                info.add_row(f"[bold]{label}[/]", value)
        console.print(Panel(info, title=f"destination [bold]{d.destination}[/]"))
        if d.request is not None:
            console.print("[bold]payload[/]")
            console.print(_json_block(d.request))
        if d.response is not None:
            console.print("[bold]response[/]")
            console.print(_json_block(d.response))


def trace_cmd(
    key: Annotated[
        str, typer.Argument(help="event_id, dedup key (purchase:T-1) or transaction id")
    ],
    project: ProjectOption = DEFAULT_PROJECT,
    as_json: JsonOption = False,
) -> None:
    """The full story of one business event: sources, merges, deliveries."""
    from truecount.ops import queries

    docs = _reader(project).resolve(key)
    if not docs:
        typer.echo(f"no ledger entry found for {key!r} in {_where(project)}", err=True)
        raise typer.Exit(1)
    stories = [queries.story(doc) for doc in docs]
    if as_json:
        _echo_json([asdict(s) for s in stories])
        return
    console = _console()
    console.print(f"[dim]{_where(project)}: {len(stories)} business event(s)[/]")
    for st in stories:
        render_story(console, st)


# --- replay ------------------------------------------------------------------


def render_replay(console: Console, result: ReplayResult, limit: int = 50) -> None:
    """Print what a replay run did.

    Args:
        console: where to print.
        result: the run's result.
        limit: message lines shown at most.
    """
    from rich.table import Table

    verb = "would replay" if result.dry_run else "replayed"
    done = result.matched if result.dry_run else result.replayed
    console.print(
        f"pulled {result.pulled} dead letter(s); {verb} {done}; "
        f"not matching {result.not_matching}; failed {result.failed}"
        + ("  [dim](dry run: nothing acked)[/]" if result.dry_run else "")
    )
    if result.by_reason:
        reasons = Table(title="Matching dead letters by reason")
        reasons.add_column("reason")
        reasons.add_column("messages", justify="right")
        for reason, count in sorted(result.by_reason.items()):
            reasons.add_row(reason, str(count))
        console.print(reasons)
    if result.messages:
        table = Table(title="Messages")
        for column in (
            "dead-lettered",
            "name",
            "event_id",
            "dedup key",
            "reason",
            "outcome",
        ):
            table.add_column(column, overflow="fold")
        for m in result.messages[:limit]:
            table.add_row(
                _fmt_time(m.dead_lettered_at),
                m.name,
                m.event_id,
                m.dedup_key,
                m.reason[:80],
                m.outcome,
            )
        console.print(table)
        if len(result.messages) > limit:
            console.print(f"... and {len(result.messages) - limit} more")


def replay_cmd(  # noqa: PLR0917 - typer options
    reason: Annotated[
        str | None, typer.Option(help="reason code or prefix, e.g. invalid_event")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="dead-lettered within: 30m, 24h, 7d ...")
    ] = None,
    destination: Annotated[
        str | None,
        typer.Option(help="only events whose ledger entry has this destination undone"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="pull and report; replay and ack nothing")
    ] = False,
    max_messages: Annotated[
        int | None, typer.Option("--max", min=1, help="replay at most N messages")
    ] = None,
    project: ProjectOption = DEFAULT_PROJECT,
    subscription: Annotated[
        str, typer.Option(help="dead-letter pull subscription")
    ] = "truecount-events-dead-letter-sub",
    topic: Annotated[
        str, typer.Option(envvar="TRUECOUNT_EVENTS_TOPIC", help="events topic")
    ] = "truecount-events",
    as_json: JsonOption = False,
) -> None:
    """Move dead letters back to the events topic (the ledger prevents doubles)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
    )

    from truecount.core.dedup import doc_id
    from truecount.ops.replay import (
        PubSubDeadLetters,
        ReplayFilter,
        TopicRepublisher,
        replay,
    )

    now = datetime.now(UTC)
    filt = ReplayFilter(
        reason=reason,
        since=_since(since, now) if since else None,
        destination=destination,
    )
    reader = _reader(project)

    def ledger(key: str) -> dict[str, Any] | None:
        found = reader.get_many([doc_id(key), doc_id(f"debug:{key}")])
        return found[0] if found else None

    source = PubSubDeadLetters(project, subscription)
    publisher = TopicRepublisher(project, topic)
    console = _console()
    if not as_json:
        console.print(f"[dim]{_where(project)}: {subscription} -> {topic}[/]")
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=as_json,
        disable=as_json,
    )
    verb = "checked" if dry_run else "replayed"
    try:
        with progress:
            task = progress.add_task(f"{verb} 0, pulled 0", total=max_messages)

            def tick(result: ReplayResult) -> None:
                done = result.matched if dry_run else result.replayed
                progress.update(
                    task,
                    completed=done,
                    description=f"{verb} {done}, pulled {result.pulled}",
                )

            result = replay(
                source,
                publisher,
                filt,
                dry_run=dry_run,
                max_messages=max_messages,
                ledger=ledger if destination else None,
                on_message=tick,
            )
    finally:
        source.close()
        publisher.close()
    if as_json:
        _echo_json(
            {
                "dry_run": result.dry_run,
                "pulled": result.pulled,
                "matched": result.matched,
                "replayed": result.replayed,
                "failed": result.failed,
                "not_matching": result.not_matching,
                "by_reason": dict(result.by_reason),
                "messages": [asdict(m) for m in result.messages],
            }
        )
    else:
        render_replay(console, result)
    if result.failed:
        raise typer.Exit(1)


# --- retry-failed --------------------------------------------------------------

RETRY_STYLE = {
    "reopened": "green",
    "would_reopen": "cyan",
    "no_event": "red",
    "busy": "yellow",
    "changed": "yellow",
    "over_max": "dim",
}


def render_retry(console: Console, result: RetryResult, limit: int = 50) -> None:
    """Print what a ``retry-failed`` run did.

    Args:
        console: where to print.
        result: the run's result.
        limit: entry lines shown at most.
    """
    from rich.table import Table

    counts = result.counts
    verb = "would re-open" if result.dry_run else "re-opened"
    done = counts["would_reopen"] if result.dry_run else counts["reopened"]
    console.print(
        f"{sum(counts.values())} failed deliveries to [bold]{result.destination}[/] "
        f"since {_fmt_time(result.since)}; {verb} {done}"
        + (
            f"; [red]{counts['no_event']} cannot re-deliver[/]"
            if counts["no_event"]
            else ""
        )
        + (
            f"; {counts['busy'] + counts['changed']} busy or changed"
            if counts["busy"] + counts["changed"]
            else ""
        )
        + (f"; {counts['over_max']} over --max" if counts["over_max"] else "")
        + (
            "  [dim](dry run: nothing written, nothing sent)[/]"
            if result.dry_run
            else ""
        )
    )
    if result.by_error:
        errors = Table(title=f"{verb.capitalize()} by error class")
        errors.add_column("error class")
        errors.add_column("entries", justify="right")
        for klass, count in sorted(result.by_error.items()):
            errors.add_row(klass, str(count))
        console.print(errors)
    if result.entries:
        table = Table(title="Failed entries")
        for column in (
            "failed at",
            "name",
            "dedup key",
            "error",
            "attempts",
            "outcome",
        ):
            table.add_column(column, overflow="fold")
        for e in result.entries[:limit]:
            style = RETRY_STYLE.get(e.outcome, "white")
            outcome = e.outcome + (f": {e.note}" if e.note else "")
            table.add_row(
                _fmt_time(e.failed_at),
                e.name,
                e.dedup_key,
                e.error[:80],
                str(e.attempts),
                f"[{style}]{outcome}[/]",
            )
        console.print(table)
        if len(result.entries) > limit:
            console.print(f"... and {len(result.entries) - limit} more")
    if result.redrive_message_id:
        console.print(
            f"redrive requested (message {result.redrive_message_id}): fanout "
            "republishes the re-opened events and delivers them once"
        )
    elif result.redrive_error:
        console.print(
            f"[red]redrive not sent ({result.redrive_error})[/]: the entries stay "
            "re-opened; the scheduled redrive or `truecount redrive` sends them"
        )


def retry_failed_cmd(  # noqa: PLR0917 - typer options
    destination: Annotated[
        str, typer.Option(help="destination id whose failed deliveries to re-send")
    ],
    since: Annotated[
        str, typer.Option(help="failed within: 30m, 24h, 7d ... (ledger updated_at)")
    ] = "24h",
    error: Annotated[
        str | None,
        typer.Option(
            help="only this error class, as `truecount status` shows it "
            "(http_503, max_attempts, max_attempts/http_503, expired ...)"
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="list what would be re-opened; change nothing"),
    ] = False,
    max_entries: Annotated[
        int | None, typer.Option("--max", min=1, help="re-open at most N entries")
    ] = None,
    project: ProjectOption = DEFAULT_PROJECT,
    topic: Annotated[
        str, typer.Option(envvar="TRUECOUNT_EVENTS_TOPIC", help="events topic")
    ] = "truecount-events",
    include_debug: DebugOption = False,
    as_json: JsonOption = False,
) -> None:
    """Re-send what failed to one destination (after fixing it), exactly once."""
    from truecount.ops.retry import publish_redrive, retry_failed
    from truecount.ops.store import LedgerEditor

    now = datetime.now(UTC)
    start = _since(since, now)
    result = retry_failed(
        _reader(project).updated_since(start, update_time=True),
        LedgerEditor(lambda: _client(project)),
        lambda: publish_redrive(project, topic),
        destination=destination,
        since=start,
        now=now,
        error=error,
        dry_run=dry_run,
        max_entries=max_entries,
        include_debug=include_debug,
    )
    if as_json:
        _echo_json(result.to_dict())
    else:
        console = _console()
        console.print(f"[dim]{_where(project)}[/]")
        render_retry(console, result)
    if result.redrive_error:
        raise typer.Exit(1)


# --- reconcile -----------------------------------------------------------------


def render_reconcile(console: Console, report: queries.ReconcileReport) -> None:
    """Print the reconcile tables.

    Args:
        console: where to print.
        report: the reconcile result.
    """
    from rich.table import Table

    from truecount.ops import queries

    def pct(share: float) -> str:
        return f"{share * 100:.1f}%"

    conv = Table(title=f"Backend vs browser since {_fmt_time(report.since)}")
    for column in (
        "conversion",
        "events",
        "backend + browser",
        "backend only",
        "browser only",
    ):
        conv.add_column(column, justify="left" if column == "conversion" else "right")
    for r in report.conversions:
        conv.add_row(
            r.name,
            str(r.total),
            f"{pct(r.share_both)} ({r.both})",
            f"{pct(r.share_backend_only)} ({r.backend_only})",
            f"{pct(r.share_browser_only)} ({r.browser_only})",
        )
    console.print(conv)
    cov = Table(title="Identifier coverage of delivered conversions")
    cov.add_column("destination")
    cov.add_column("delivered", justify="right")
    for identifier in queries.IDENTIFIERS:
        cov.add_column(identifier, justify="right")
    for c in report.coverage:
        cov.add_row(
            c.destination,
            str(c.delivered),
            *[pct(c.share(i)) for i in queries.IDENTIFIERS],
        )
    console.print(cov)


def reconcile_cmd(  # noqa: PLR0917 - typer options
    since: Annotated[
        str, typer.Option(help="window: 24h, 7d, 4w ... (by ledger created_at)")
    ] = "7d",
    html: Annotated[
        Path | None, typer.Option(help="also write a self-contained HTML report here")
    ] = None,
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--name",
            help="conversion name (repeatable; default: "
            "purchase, refund and the lead events)",
        ),
    ] = None,
    project: ProjectOption = DEFAULT_PROJECT,
    include_debug: DebugOption = False,
    as_json: JsonOption = False,
) -> None:
    """Backend vs browser per conversion; identifier coverage per destination."""
    from truecount.ops import queries

    now = datetime.now(UTC)
    start = _since(since, now)
    names = tuple(name) if name else queries.DEFAULT_CONVERSIONS
    docs = _reader(project).created_since(start, names)
    report = queries.reconcile_report(docs, start, names, include_debug)
    if html is not None:
        from truecount.ops.report import render_html

        html.write_text(render_html(report, project, now), encoding="utf-8")
    if as_json:
        _echo_json(report.to_dict())
        return
    console = _console()
    console.print(f"[dim]{_where(project)}[/]")
    render_reconcile(console, report)
    if html is not None:
        console.print(f"HTML report written to {html}")


ops_app = typer.Typer(
    help="Truecount operations: status, trace, replay, reconcile, retry-failed.",
    no_args_is_help=True,
    add_completion=False,
)
ops_app.command("status")(status_cmd)
ops_app.command("trace")(trace_cmd)
ops_app.command("replay")(replay_cmd)
ops_app.command("reconcile")(reconcile_cmd)
ops_app.command("retry-failed")(retry_failed_cmd)

__all__ = [
    "ops_app",
    "reconcile_cmd",
    "replay_cmd",
    "retry_failed_cmd",
    "status_cmd",
    "trace_cmd",
]
