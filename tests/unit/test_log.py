"""Structured JSON logging: Cloud Logging fields, context, redaction."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from truecount import log

TRACE_ID = "105445aa7843bc8bf206b12000100000"
PROJECT = "tc-test"


@pytest.fixture(autouse=True)
def _clean_state() -> Iterator[None]:
    saved = dict(log._state)
    log.clear_secrets()
    yield
    log.clear_secrets()
    log._state.update(saved)


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_get_logger_writes_one_json_line_with_severity_and_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each record is one JSON object with Cloud Logging's severity and message."""
    logger = log.get_logger("truecount.tests.one")

    logger.warning("publish slow: %d ms", 812)

    (entry,) = lines(capsys.readouterr().out)
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "publish slow: 812 ms"
    assert entry["logger"] == "truecount.tests.one"
    assert entry["time"].endswith("Z")
    assert entry[log.SOURCE_KEY]["function"] == (
        "test_get_logger_writes_one_json_line_with_severity_and_message"
    )


def test_get_logger_is_idempotent(capsys: pytest.CaptureFixture[str]) -> None:
    """Asking again adds no second handler, so nothing is written twice."""
    first = log.get_logger("truecount.tests.twice")
    second = log.get_logger("truecount.tests.twice")
    log.get_logger("truecount")

    second.info("once")

    assert first is second
    handlers = logging.getLogger("truecount").handlers
    assert sum(isinstance(h.formatter, log.JsonFormatter) for h in handlers) == 1
    assert len(lines(capsys.readouterr().out)) == 1


def test_log_context_binds_fields_until_the_block_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bound fields appear on every line inside the block, and only there."""
    logger = log.get_logger("truecount.tests.context")

    with log.log_context(event_id="evt-1", source="stripe"):
        with log.log_context(destination="meta", source=None):
            logger.info("inner", extra={"status_code": 200})
        logger.info("outer")
    logger.info("after")

    inner, outer, after = lines(capsys.readouterr().out)
    assert inner["event_id"] == "evt-1"
    assert inner["source"] == "stripe"
    assert inner["destination"] == "meta"
    assert inner["status_code"] == 200
    assert outer["event_id"] == "evt-1"
    assert "destination" not in outer
    assert "event_id" not in after


def test_trace_header_becomes_the_cloud_logging_trace_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """X-Cloud-Trace-Context links the line to projects/<p>/traces/<id>."""
    logger = log.get_logger("truecount.tests.trace")
    fields = log.trace_fields(f"{TRACE_ID}/1;o=1", PROJECT)

    with log.log_context(**fields):
        logger.info("traced")

    (entry,) = lines(capsys.readouterr().out)
    assert entry[log.TRACE_KEY] == f"projects/{PROJECT}/traces/{TRACE_ID}"
    assert entry[log.SPAN_KEY] == "0000000000000001"
    assert entry[log.SAMPLED_KEY] is True


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"{TRACE_ID}/1;o=1", (TRACE_ID, "0000000000000001", True)),
        (f"{TRACE_ID}/2093458893;o=0", (TRACE_ID, "000000007cc7a5cd", False)),
        (f"{TRACE_ID.upper()}/12", (TRACE_ID, "000000000000000c", None)),
        (TRACE_ID, (TRACE_ID, None, None)),
        (f"{TRACE_ID}/0;o=1", (TRACE_ID, None, True)),
        ("", None),
        (None, None),
        ("not-a-trace", None),
        (f"{TRACE_ID[:-1]}/1;o=1", None),
    ],
)
def test_parse_trace_header(
    header: str | None, expected: tuple[str, str | None, bool | None] | None
) -> None:
    """TRACE_ID/SPAN;o=N parses; the decimal span becomes 16 hex digits."""
    assert log.parse_trace_header(header) == expected


def test_trace_fields_without_a_project_log_the_bare_trace_id() -> None:
    """Without a known project the id is kept, but not as the linked field."""
    fields = log.trace_fields(TRACE_ID, None)

    assert fields == {"trace_id": TRACE_ID}


def test_trace_fields_use_the_configured_project() -> None:
    """configure(project=...) supplies the project for trace links."""
    log.configure(project="configured-proj")

    fields = log.trace_fields(TRACE_ID)

    assert fields[log.TRACE_KEY] == f"projects/configured-proj/traces/{TRACE_ID}"


def test_trace_fields_of_a_bad_header_are_empty() -> None:
    """A malformed header adds nothing."""
    assert log.trace_fields("garbage", PROJECT) == {}


def test_raw_email_never_appears_in_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Emails in the message, fields, context and tracebacks are redacted."""
    logger = log.get_logger("truecount.tests.email")

    with log.log_context(user="jane.doe@example.com"):
        try:
            raise ValueError("bad address jane.doe@example.com")
        except ValueError:
            logger.exception(
                "rejected %s",
                "Jane.Doe@Example.COM",
                extra={"params": {"to": ["jane.doe%40example.com"]}},
            )

    out = capsys.readouterr().out
    (entry,) = lines(out)
    assert "example.com" not in out.lower()
    assert entry["message"].startswith("rejected [email]")
    assert "ValueError: bad address [email]" in entry["message"]
    assert entry["user"] == "[email]"
    assert entry["params"] == {"to": ["[email]"]}


def test_registered_secret_never_appears_in_a_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A registered secret is replaced, also in URL-encoded form."""
    secret = "sk_live_s3cr3t/value+1"
    log.register_secret(secret)
    logger = log.get_logger("truecount.tests.secret")

    logger.error(
        "auth failed with %s",
        secret,
        extra={"url": "https://x.test/?api_secret=sk_live_s3cr3t%2Fvalue%2B1"},
    )

    out = capsys.readouterr().out
    (entry,) = lines(out)
    assert "s3cr3t" not in out
    assert entry["message"] == "auth failed with [secret]"
    assert entry["url"] == "https://x.test/?api_secret=[secret]"


def test_register_secret_ignores_blank_and_tiny_values() -> None:
    """Empty or very short values are not treated as secrets."""
    log.register_secret(None)
    log.register_secret("")
    log.register_secret("ab")

    assert log.redact("ab cd") == "ab cd"


def test_redact_replaces_every_occurrence() -> None:
    """redact() is the safety net applied to every emitted value."""
    log.register_secret("topsecret")

    text = log.redact("a@b.co topsecret x topsecret y c.d@e.org")

    assert text == "[email] [secret] x [secret] y [email]"


def test_non_json_field_values_are_stringified_and_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Objects that JSON cannot encode are logged as redacted strings."""
    logger = log.get_logger("truecount.tests.objects")

    class Thing:
        def __repr__(self) -> str:
            return "Thing(owner=x@y.com)"

    logger.info("object", extra={"thing": Thing(), "tags": ("a", "b")})

    (entry,) = lines(capsys.readouterr().out)
    assert entry["thing"] == "Thing(owner=[email])"
    assert entry["tags"] == ["a", "b"]


def test_configure_sets_the_level(capsys: pytest.CaptureFixture[str]) -> None:
    """configure(level=...) changes the level of configured loggers."""
    logger = log.get_logger("truecount.tests.level")
    log.configure(level="WARNING")
    try:
        logger.info("hidden")
        logger.warning("shown")
    finally:
        log.configure(level="INFO")

    assert [e["message"] for e in lines(capsys.readouterr().out)] == ["shown"]


def test_configure_rejects_an_unknown_level() -> None:
    """A typo in the level is an error, not silently ignored."""
    with pytest.raises(ValueError, match="LOUD"):
        log.configure(level="LOUD")
