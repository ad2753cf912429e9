"""Structured logging for Cloud Logging: one JSON object per line on stdout.

Cloud Run functions parse JSON lines written to stdout: ``severity`` sets the log
level, ``message`` the text, ``logging.googleapis.com/trace`` links the entry to
its request trace, and every other key becomes a ``jsonPayload`` field.

Usage at an edge::

    log = get_logger(__name__)
    with log_context(**trace_fields(request.headers.get(TRACE_HEADER), project)):
        with log_context(event_id=event.event_id):
            log.info("published", extra={"dedup_key": event.dedup_key})

Safety net: every message and field value goes through :func:`redact`, which
replaces email addresses with ``[email]`` and every secret registered with
:func:`register_secret` with ``[secret]``. Code must still never log raw PII:
this catches mistakes, it is not a licence.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

TRACE_HEADER = "X-Cloud-Trace-Context"
TRACE_KEY = "logging.googleapis.com/trace"
SPAN_KEY = "logging.googleapis.com/spanId"
SAMPLED_KEY = "logging.googleapis.com/trace_sampled"
SOURCE_KEY = "logging.googleapis.com/sourceLocation"

EMAIL_MARK = "[email]"
SECRET_MARK = "[secret]"  # noqa: S105 (the replacement text, not a secret)
_SECRET_MIN_LENGTH = 4

# Also matches the URL-encoded form (``name%40example.com``).
_EMAIL = re.compile(r"[\w.+'%-]+(?:@|%40)[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}")
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d+))?(?:;o=([01]))?$")
_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "truecount_log_context", default=MappingProxyType({})
)
_lock = threading.Lock()
_secrets: set[str] = set()
_secret_pattern: re.Pattern[str] | None = None
_state: dict[str, Any] = {"project": None, "level": logging.INFO}
_configured: set[str] = set()


def register_secret(value: str | None) -> None:
    """Register a secret so that it never appears in a log line.

    Functions call this at start-up for every secret they load. Values shorter
    than 4 characters are ignored: they are not real secrets, and redacting them
    would mangle ordinary text.

    Args:
        value: the secret (None and blanks are ignored).
    """
    global _secret_pattern
    if value is None or len(value.strip()) < _SECRET_MIN_LENGTH:
        return
    with _lock:
        _secrets.update({value, quote(value, safe="")})
        alternatives = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(map(re.escape, alternatives)))


def clear_secrets() -> None:
    """Forget every registered secret (for tests)."""
    global _secret_pattern
    with _lock:
        _secrets.clear()
        _secret_pattern = None


def redact(value: str) -> str:
    """Replace email addresses and registered secrets in a text.

    Args:
        value: any text about to be logged.

    Returns:
        The text with ``[email]`` and ``[secret]`` in their place.
    """
    pattern = _secret_pattern
    if pattern is not None:
        value = pattern.sub(SECRET_MARK, value)
    if "@" in value or "%40" in value:
        value = _EMAIL.sub(EMAIL_MARK, value)
    return value


def _scrub(value: Any) -> Any:
    """Make a value JSON-safe and redacted, recursively."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    return redact(str(value))


def parse_trace_header(
    header: str | None,
) -> tuple[str, str | None, bool | None] | None:
    """Parse ``X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1``.

    Args:
        header: the header value, or None.

    Returns:
        ``(trace_id, span_id_hex, sampled)``, or None if absent or malformed. The
        decimal span id is turned into the 16-digit hex Cloud Logging expects.
    """
    if not header:
        return None
    match = _CLOUD_TRACE.match(header.strip())
    if match is None:
        return None
    trace_id, span, sampled = match.groups()
    span_hex = None
    if span is not None and 0 < int(span) < 2**64:
        span_hex = format(int(span), "016x")
    return trace_id.lower(), span_hex, None if sampled is None else sampled == "1"


def trace_fields(header: str | None, project: str | None = None) -> dict[str, Any]:
    """Log fields that tie entries to the request's trace.

    Args:
        header: the ``X-Cloud-Trace-Context`` value.
        project: the Google Cloud project id; defaults to the one given to
            :func:`configure`. Without a project the trace id is logged as
            ``trace_id``, which Cloud Logging does not link.

    Returns:
        Fields for :func:`log_context`; empty if there is no valid header.
    """
    parsed = parse_trace_header(header)
    if parsed is None:
        return {}
    trace_id, span_id, sampled = parsed
    project = project or _state["project"]
    fields: dict[str, Any] = (
        {TRACE_KEY: f"projects/{project}/traces/{trace_id}"}
        if project
        else {"trace_id": trace_id}
    )
    if span_id is not None:
        fields[SPAN_KEY] = span_id
    if sampled is not None:
        fields[SAMPLED_KEY] = sampled
    return fields


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind fields to every log line written inside the block (this context only).

    Nested blocks add to, and may override, the outer fields; ``None`` values
    are left out.

    Args:
        **fields: e.g. ``event_id="e-1"`` or ``**trace_fields(header)``.

    Yields:
        None.
    """
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    """The fields bound by the enclosing :func:`log_context` blocks."""
    return dict(_context.get())


class JsonFormatter(logging.Formatter):
    """Format a record as one redacted JSON line for Cloud Logging."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record.

        Args:
            record: the log record; ``extra=`` keys become fields.

        Returns:
            One line of JSON without the trailing newline.
        """
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": message,
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "logger": record.name,
        }
        for key, value in _context.get().items():
            entry.setdefault(key, value)
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                entry.setdefault(key, value)
        entry[SOURCE_KEY] = {
            "file": record.pathname,
            "line": str(record.lineno),
            "function": record.funcName,
        }
        return json.dumps(_scrub(entry), ensure_ascii=False, separators=(",", ":"))


class _StdoutHandler(logging.Handler):
    """Write to the current ``sys.stdout`` (looked up per record, so that test
    capture and stream replacement work)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = sys.stdout
            stream.write(line + "\n")
            stream.flush()
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


def configure(level: int | str | None = None, project: str | None = None) -> None:
    """Set the log level and the project used for trace links.

    Args:
        level: e.g. ``"INFO"`` or ``logging.DEBUG``; None keeps the current one.
        project: the Google Cloud project id; None keeps the current one.
    """
    if level is not None:
        value = logging.getLevelName(level) if isinstance(level, str) else level
        if not isinstance(value, int):
            raise ValueError(f"unknown log level {level!r}")
        _state["level"] = value
        for name in _configured:
            logging.getLogger(name).setLevel(value)
    if project is not None:
        _state["project"] = project


def get_logger(name: str) -> logging.Logger:
    """Return a logger that writes redacted JSON lines to stdout.

    The handler is installed once on the top-level logger of ``name`` (e.g.
    ``truecount``), which stops propagating to the root logger so that no line
    is written twice. Calling it again is cheap and changes nothing.

    Args:
        name: the logger name, usually ``__name__``.

    Returns:
        The logger.
    """
    top = name.split(".", 1)[0]
    if top not in _configured:
        with _lock:
            if top not in _configured:
                base = logging.getLogger(top)
                handler = _StdoutHandler()
                handler.setFormatter(JsonFormatter())
                base.addHandler(handler)
                base.setLevel(_state["level"])
                base.propagate = False
                _configured.add(top)
    return logging.getLogger(name)
