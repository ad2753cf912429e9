"""The ``webhook`` function: ``POST /stripe``, ``POST /hubspot``, ``POST /crm``,
``GET /healthz``.

Each handler reads the raw body (``sources.max_body_bytes``, 413), verifies the
signature on those bytes (400 ``invalid_signature``, no detail), parses, maps to
canonical events with PII hashed, and sets each event's dedup key from the
config's rules. :func:`truecount.web.dispatch` publishes and answers 2xx only
after the Pub/Sub ack (503 when the publish or a HubSpot lookup fails).

A source whose ``[sources.<name>]`` section is absent, or whose secret is not
set, answers 404 ``source_not_configured``: nothing is accepted unauthenticated.
Verified events of types that are not mapped answer 200 and are logged (type,
reason, provider event id; never PII) but not published.

Test seam: :func:`override` swaps in a fake publisher, HubSpot reader or clock
for the function built by ``functions/webhook/main.py``, without patching any
SDK::

    with webhook.override(publisher=fake):
        client = functions_framework.create_app("webhook", source).test_client()
        client.post("/crm", ...)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from flask import Request, Response

from truecount.config import Config, load_config
from truecount.core.dedup import with_dedup_key
from truecount.errors import InvalidPayload, SignatureVerificationError
from truecount.log import (
    configure,
    get_logger,
    log_context,
    register_secret,
    trace_fields,
)
from truecount.models.event import Event
from truecount.ports import EventPublisher
from truecount.settings import get_settings, read_secret, read_secret_list
from truecount.web import Reply, Route, decode_utf8, dispatch, read_body
from truecount.webhooks.signatures import (
    parse_crm_keys,
    verify_crm,
    verify_hubspot_v3,
    verify_stripe,
)

if TYPE_CHECKING:  # each mapping is imported by the first request of its route
    from truecount.webhooks import hubspot as hubspot_mapping

STRIPE_SIGNATURE_HEADER = "Stripe-Signature"
HUBSPOT_SIGNATURE_HEADER = "X-HubSpot-Signature-v3"
HUBSPOT_TIMESTAMP_HEADER = "X-HubSpot-Request-Timestamp"
CRM_SIGNATURE_HEADER = "Truecount-Signature"
CRM_KEY_ID_HEADER = "Truecount-Key-Id"
POST = frozenset({"POST"})

_log = get_logger(__name__)

Clock = Callable[[], datetime]
PublisherFactory = Callable[[], EventPublisher]
LookupFactory = Callable[[], "hubspot_mapping.HubSpotLookup"]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class WebhookSecrets:
    """The secrets the webhook function reads at start-up (never logged)."""

    stripe: tuple[str, ...] = ()
    #: the app's client secrets: two while one is being rotated
    hubspot_client_secrets: tuple[str, ...] = ()
    hubspot_token: str | None = None
    crm_keys: Mapping[str, str] = field(default_factory=dict)


def load_secrets(config: Config, env: Mapping[str, str]) -> WebhookSecrets:
    """Read each configured source's secrets from the environment.

    Every value is registered with the log redactor.

    Args:
        config: the validated config (names the variables).
        env: the environment, e.g. ``os.environ``.

    Returns:
        The secrets; empty for sources that are not configured.

    Raises:
        truecount.errors.ConfigError: ``TRUECOUNT_CRM_KEYS`` is malformed.
    """
    sources = config.sources
    secrets = WebhookSecrets()
    if sources.stripe is not None:
        values = read_secret_list(env, sources.stripe.signing_secrets_env)
        secrets = replace(secrets, stripe=tuple(v.get_secret_value() for v in values))
    if sources.hubspot is not None:
        clients = read_secret_list(env, sources.hubspot.client_secret_env)
        token = read_secret(env, sources.hubspot.token_env)
        secrets = replace(
            secrets,
            hubspot_client_secrets=tuple(c.get_secret_value() for c in clients),
            hubspot_token=token.get_secret_value() if token else None,
        )
    if sources.crm is not None:
        entries = read_secret_list(env, sources.crm.keys_env)
        keys = parse_crm_keys(v.get_secret_value() for v in entries)
        secrets = replace(secrets, crm_keys=keys)
    for value in (
        *secrets.stripe,
        *secrets.hubspot_client_secrets,
        secrets.hubspot_token,
        *secrets.crm_keys.values(),
    ):
        register_secret(value)
    return secrets


# --- test seam ----------------------------------------------------------------


@dataclass
class _Overrides:
    publisher: EventPublisher | None = None
    hubspot: hubspot_mapping.HubSpotLookup | None = None
    clock: Clock | None = None


_overrides = _Overrides()


@contextmanager
def override(
    *,
    publisher: EventPublisher | None = None,
    hubspot: hubspot_mapping.HubSpotLookup | None = None,
    clock: Clock | None = None,
) -> Iterator[None]:
    """Use fakes instead of Pub/Sub, the HubSpot API or the clock (tests only).

    Applies to every :class:`WebhookApp` built by :func:`create_app`, for the
    duration of the block; each is consulted per request.

    Args:
        publisher: replaces the Pub/Sub publisher.
        hubspot: replaces the HubSpot API reader.
        clock: replaces ``datetime.now(UTC)``.

    Yields:
        None.
    """
    global _overrides
    previous = _overrides
    _overrides = _Overrides(publisher, hubspot, clock)
    try:
        yield
    finally:
        _overrides = previous


# --- helpers ------------------------------------------------------------------


def _not_configured(source: str) -> InvalidPayload:
    message = f"source {source!r} is not configured"
    return InvalidPayload(message, [], "source_not_configured", 404)


def _parse_json(body: bytes) -> Any:
    text = decode_utf8(body)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidPayload(
            "body is not valid JSON",
            [{"path": "$", "message": "not valid JSON"}],
            "invalid_json",
        ) from None


def _first(value: str | None) -> str | None:
    head = (value or "").split(",")[0].strip()
    return head or None


def public_uri(request: Request, public_url: str | None) -> str:
    """The URL HubSpot called, for v3 signatures.

    The path and query are taken raw, as sent (``RAW_URI``/``REQUEST_URI``),
    so the query keeps its order and encoding. The base is ``public_url`` when
    configured (the function's public base URL, up to but excluding the route
    path), else ``X-Forwarded-Proto``/``X-Forwarded-Host``, else the request's
    own scheme and host.

    Args:
        request: the incoming request.
        public_url: ``sources.hubspot.public_url``.

    Returns:
        e.g. ``https://hooks.example.com/hubspot?src=prod``.
    """
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if not isinstance(raw, str) or not raw.startswith("/"):
        query = request.query_string.decode("latin-1")
        raw = quote(request.path) + (f"?{query}" if query else "")
    if public_url:
        return public_url.rstrip("/") + raw
    proto = _first(request.headers.get("X-Forwarded-Proto")) or request.scheme
    host = _first(request.headers.get("X-Forwarded-Host")) or request.host
    return f"{proto}://{host}{raw}"


class _LazyLookup:
    """Creates the HubSpot client on the first lookup only."""

    def __init__(self, factory: LookupFactory) -> None:
        self._factory = factory
        self._lookup: hubspot_mapping.HubSpotLookup | None = None
        self._lock = threading.Lock()

    def _get(self) -> hubspot_mapping.HubSpotLookup:
        with self._lock:
            if self._lookup is None:
                self._lookup = self._factory()
            return self._lookup

    def get_deals(
        self, deal_ids: Sequence[str], deadline: float | None = None
    ) -> dict[str, hubspot_mapping.HubSpotDeal | None]:
        return self._get().get_deals(deal_ids, deadline)

    def get_contacts(
        self, contact_ids: Sequence[str], deadline: float | None = None
    ) -> dict[str, hubspot_mapping.HubSpotContact | None]:
        return self._get().get_contacts(contact_ids, deadline)


# --- the application -------------------------------------------------------------


class WebhookApp:
    """Routes and handlers of the ``webhook`` function.

    Args:
        config: the validated config.
        secrets: the secrets read at start-up.
        publisher: returns the (cached) events publisher.
        hubspot: returns the (cached) HubSpot API reader; called on first use.
        clock: returns the current UTC time.
    """

    def __init__(
        self,
        config: Config,
        secrets: WebhookSecrets,
        publisher: PublisherFactory,
        hubspot: LookupFactory | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.config = config
        self.secrets = secrets
        self._publisher = publisher
        self._hubspot = _LazyLookup(hubspot or _no_hubspot)
        self._clock = clock
        self.routes: tuple[Route, ...] = (
            Route("/stripe", POST, self.stripe),
            Route("/hubspot", POST, self.hubspot),
            Route("/crm", POST, self.crm),
            Route("/healthz", frozenset({"GET"}), self.healthz),
        )

    def __call__(self, request: Request) -> Response:
        """Handle one HTTP request.

        Args:
            request: the Flask request.

        Returns:
            The response (see CONTRACT.md for the error body).
        """
        trace = trace_fields(request.headers.get("X-Cloud-Trace-Context"))
        with log_context(function="webhook", route=request.path, **trace):
            return dispatch(request, self.routes, self._current_publisher)

    # seams ---------------------------------------------------------------------

    def _current_publisher(self) -> EventPublisher:
        return _overrides.publisher or self._publisher()

    def _now(self) -> datetime:
        return (_overrides.clock or self._clock)()

    def _lookup(self) -> hubspot_mapping.HubSpotLookup:
        return _overrides.hubspot or self._hubspot

    def _finish(
        self, source: str, events: Sequence[Event], ignored: Sequence[dict[str, str]]
    ) -> Reply:
        keyed = [with_dedup_key(e, self.config.rule(e.name)) for e in events]
        for item in ignored:
            _log.info("webhook event ignored", extra={"source": source, **item})
        for event in keyed:
            _log.info(
                "webhook event mapped",
                extra={
                    "source": source,
                    "event_id": event.event_id,
                    "event_name": event.name,
                    "dedup_key": event.dedup_key,
                },
            )
        body = {"status": "ok", "published": len(keyed), "ignored": len(ignored)}
        return Reply(events=keyed, body=body)

    @staticmethod
    def _reject(source: str, exc: SignatureVerificationError) -> None:
        _log.warning(
            "webhook signature rejected",
            extra={
                "source": source,
                "reason": str(exc),
                "outcome": "invalid_signature",
            },
        )

    # handlers ------------------------------------------------------------------

    def healthz(self, request: Request) -> Reply:
        """``GET /healthz``: 200 while the instance can serve."""
        return Reply(body={"status": "ok"})

    def stripe(self, request: Request) -> Reply:
        """``POST /stripe``: one signed Stripe event."""
        cfg = self.config.sources.stripe
        if cfg is None or not self.secrets.stripe:
            raise _not_configured("stripe")
        body = read_body(request, self.config.sources.max_body_bytes)
        now = self._now()
        try:
            verify_stripe(
                body,
                request.headers.get(STRIPE_SIGNATURE_HEADER),
                self.secrets.stripe,
                now.timestamp(),
                cfg.tolerance_seconds,
            )
        except SignatureVerificationError as exc:
            self._reject("stripe", exc)
            raise
        from truecount.webhooks import stripe as stripe_mapping

        envelope = stripe_mapping.parse_envelope(_parse_json(body))
        result = stripe_mapping.map_event(envelope, cfg, now)
        if isinstance(result, stripe_mapping.Ignored):
            ignored = {
                "provider_event_id": envelope.id,
                "provider_type": envelope.type,
                "reason": result.reason,
            }
            return self._finish("stripe", [], [ignored])
        return self._finish("stripe", [result], [])

    def hubspot(self, request: Request) -> Reply:
        """``POST /hubspot``: a signed batch of HubSpot webhook events."""
        cfg = self.config.sources.hubspot
        secrets = self.secrets.hubspot_client_secrets
        if cfg is None or not secrets or not self.secrets.hubspot_token:
            raise _not_configured("hubspot")
        body = read_body(request, self.config.sources.max_body_bytes)
        now = self._now()
        try:
            verify_hubspot_v3(
                method=request.method,
                uri=public_uri(request, cfg.public_url),
                payload=body,
                signature=request.headers.get(HUBSPOT_SIGNATURE_HEADER),
                timestamp=request.headers.get(HUBSPOT_TIMESTAMP_HEADER),
                secret=secrets,
                now=now.timestamp(),
                tolerance=cfg.tolerance_seconds,
            )
        except SignatureVerificationError as exc:
            self._reject("hubspot", exc)
            raise
        from truecount.webhooks import hubspot as hubspot_mapping

        batch = hubspot_mapping.parse_batch(_parse_json(body))
        deadline = time.monotonic() + cfg.lookup_budget_seconds
        events, skipped = hubspot_mapping.map_batch(
            batch, cfg, self._lookup(), now, deadline
        )
        ignored = [
            {
                "provider_event_id": s.event_id,
                "provider_type": s.subscription_type,
                "reason": s.reason,
            }
            for s in skipped
        ]
        return self._finish("hubspot", events, ignored)

    def crm(self, request: Request) -> Reply:
        """``POST /crm``: one event in Truecount's signed CRM contract."""
        cfg = self.config.sources.crm
        if cfg is None or not self.secrets.crm_keys:
            raise _not_configured("crm")
        body = read_body(request, self.config.sources.max_body_bytes)
        now = self._now()
        try:
            verify_crm(
                body,
                request.headers.get(CRM_SIGNATURE_HEADER),
                key_id=request.headers.get(CRM_KEY_ID_HEADER),
                keys=self.secrets.crm_keys,
                now=now.timestamp(),
                tolerance=cfg.tolerance_seconds,
            )
        except SignatureVerificationError as exc:
            self._reject("crm", exc)
            raise
        from truecount.webhooks import crm as crm_mapping

        parsed = crm_mapping.parse_crm(_parse_json(body))
        tolerance = timedelta(seconds=cfg.tolerance_seconds)
        return self._finish("crm", [crm_mapping.map_crm(parsed, now, tolerance)], [])


def _no_hubspot() -> hubspot_mapping.HubSpotLookup:
    raise RuntimeError("no HubSpot reader configured")


def create_app(env: Mapping[str, str]) -> WebhookApp:
    """Build the function from the environment: config, secrets, lazy clients.

    The Pub/Sub publisher and the HubSpot client are created on first use and
    then reused by every request of the instance.

    Args:
        env: the environment, e.g. ``os.environ``.

    Returns:
        The application, callable with a Flask request.

    Raises:
        truecount.errors.ConfigError: the config or a secret is malformed.
    """
    settings = get_settings()
    configure(project=settings.google_cloud_project)  # trace links in logs
    config = load_config(settings.truecount_config)
    secrets = load_secrets(config, env)

    def publisher() -> EventPublisher:
        from truecount.adapters.pubsub import get_publisher

        return get_publisher(
            settings.google_cloud_project,
            settings.truecount_events_topic,
            config.ingest.publish_timeout_seconds,
        )

    def hubspot() -> hubspot_mapping.HubSpotLookup:
        from truecount.adapters.hubspot_api import make_hubspot_api

        cfg = config.sources.hubspot
        if cfg is None or not secrets.hubspot_token:
            return _no_hubspot()
        return make_hubspot_api(
            cfg.api_base_url, secrets.hubspot_token, cfg.lookup_timeout_seconds
        )

    return WebhookApp(config, secrets, publisher, hubspot)
