"""Truecount's exception tree.

::

    MeasurementError
    ├── InvalidPayload             bad input: 4xx, names the fields, nothing published
    │   └── PayloadTooLarge        413
    ├── SignatureVerificationError bad or missing webhook signature: 400, no detail
    ├── ConfigError                bad TOML config or environment: fails at start-up
    ├── PublishError               Pub/Sub did not ack in time: 503, sender retries
    ├── UpstreamError              a lookup the request depends on failed: 503
    ├── RetryableError             fanout: raise so that Pub/Sub redelivers
    └── DeliveryError              a destination answered with an error
"""

from __future__ import annotations


class MeasurementError(Exception):
    """Root of every Truecount error."""


class InvalidPayload(MeasurementError):
    """Input that can never be accepted.

    Args:
        message: a human sentence, free of PII.
        fields: ``[{"path": ..., "message": ...}]`` naming each bad field.
        code: a stable machine code, e.g. ``invalid_payload``.
        status: the HTTP status to answer with.
    """

    def __init__(
        self,
        message: str,
        fields: list[dict[str, str]] | None = None,
        code: str = "invalid_payload",
        status: int = 400,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or []
        self.code = code
        self.status = status

    def to_json(self) -> dict[str, object]:
        """The CONTRACT.md error body."""
        return {
            "error": {"code": self.code, "message": self.message, "fields": self.fields}
        }


class PayloadTooLarge(InvalidPayload):
    """Body or event count over the configured limit."""

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(
            message, [{"path": path, "message": message}], "payload_too_large", 413
        )


class SignatureVerificationError(MeasurementError):
    """A webhook signature is missing, malformed, stale or wrong."""


class ConfigError(MeasurementError):
    """The configuration is invalid; the message names the key and the reason."""


class PublishError(MeasurementError):
    """Pub/Sub did not acknowledge a publish within the timeout."""


class UpstreamError(MeasurementError):
    """A dependency needed to answer the request failed (e.g. a CRM lookup)."""


class RetryableError(MeasurementError):
    """Processing must be retried later: fanout raises it so Pub/Sub redelivers."""


class DeliveryError(MeasurementError):
    """A destination refused or failed a request.

    Args:
        destination: the destination id from the config.
        status_code: the HTTP status, or None for a transport error.
        request_id: the platform's request or trace id, if any.
        retryable: whether trying again later may succeed.
    """

    def __init__(
        self,
        message: str,
        destination: str,
        status_code: int | None = None,
        request_id: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.destination = destination
        self.status_code = status_code
        self.request_id = request_id
        self.retryable = retryable
