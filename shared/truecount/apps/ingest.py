"""The ``ingest`` function: browser and server-to-server intake.

Routes (CONTRACT.md):

* ``GET, POST /g/collect``: the GA4 client (:mod:`truecount.sources.ga4`); 204.
* ``GET, POST /data``: the Data Client (:mod:`truecount.sources.data_client`);
  200 ``{"accepted": [event_id, ...]}``.
* ``POST /mp/collect``: Measurement Protocol JSON (:mod:`truecount.sources.mp`),
  authenticated by ``api_secret``; 204.
* ``OPTIONS`` on each of them: CORS preflight, 204.
* ``GET /healthz``: 200 ``{"status": "ok"}``.

Every event gets its dedup key from the config's rules, then
:func:`truecount.web.dispatch` publishes the whole request and answers only
after Pub/Sub acked every event (503 with ``Retry-After`` otherwise). A request
with any bad event is rejected whole (4xx) and publishes nothing.

CORS: an ``Origin`` listed in ``ingest.cors_origins`` (or any origin when the
list holds ``"*"``) is echoed with ``Access-Control-Allow-Credentials: true``
and ``Vary: Origin``; other origins get no CORS headers.

Cold start: the source modules are imported by the first request that needs
them, and the Pub/Sub client is created on the first publish.

Test seam: :func:`override` swaps in a fake publisher or clock for the function
built by ``functions/ingest/main.py``, without patching any SDK::

    with ingest.override(publisher=fake, clock=lambda: fixed_now):
        client = functions_framework.create_app("ingest", source).test_client()
        client.get("/g/collect?v=2&tid=G-1&en=page_view")
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Request, Response

from truecount.config import Config, load_config
from truecount.core.dedup import with_dedup_key
from truecount.errors import InvalidPayload, PayloadTooLarge
from truecount.log import (
    configure,
    get_logger,
    log_context,
    register_secret,
    trace_fields,
)
from truecount.models.event import Event
from truecount.ports import EventPublisher
from truecount.settings import get_settings, read_secret_list
from truecount.sources.browser import HttpInput
from truecount.web import DEBUG_HEADER, Reply, Route, dispatch, read_body

GA4_PATH = "/g/collect"
DATA_PATH = "/data"
MP_PATH = "/mp/collect"
BROWSER_METHODS = frozenset({"GET", "POST", "OPTIONS"})
MP_METHODS = frozenset({"POST", "OPTIONS"})
ALLOW_HEADERS = f"Content-Type, {DEBUG_HEADER}"
PREFLIGHT_MAX_AGE = "86400"
#: distinct event names whose dedup rule is kept (names come from clients)
RULE_CACHE_SIZE = 256

_log = get_logger(__name__)

Clock = Callable[[], datetime]
PublisherFactory = Callable[[], EventPublisher]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


# --- test seam ----------------------------------------------------------------


@dataclass
class _Overrides:
    publisher: EventPublisher | None = None
    clock: Clock | None = None


_overrides = _Overrides()


@contextmanager
def override(
    *, publisher: EventPublisher | None = None, clock: Clock | None = None
) -> Iterator[None]:
    """Use a fake publisher or clock instead of Pub/Sub and ``datetime.now``.

    Applies to every :class:`IngestApp` for the duration of the block; both are
    consulted per request. Tests only.

    Args:
        publisher: replaces the Pub/Sub publisher.
        clock: replaces ``datetime.now(UTC)``.

    Yields:
        None.
    """
    global _overrides
    previous = _overrides
    _overrides = _Overrides(publisher, clock)
    try:
        yield
    finally:
        _overrides = previous


# --- the application ------------------------------------------------------------


class IngestApp:
    """Routes and handlers of the ``ingest`` function.

    Args:
        config: the validated config.
        mp_secrets: accepted ``api_secret`` values for ``/mp/collect``.
        publisher: returns the (cached) events publisher.
        clock: returns the current UTC time.
    """

    def __init__(
        self,
        config: Config,
        mp_secrets: Sequence[str],
        publisher: PublisherFactory,
        clock: Clock = utc_now,
    ) -> None:
        self.config = config
        self._mp_secrets = tuple(mp_secrets)
        self._publisher = publisher
        self._clock = clock
        self._origins = frozenset(config.ingest.cors_origins)
        # the effective rule of a name never changes: compute it once per name
        self._rule = functools.lru_cache(maxsize=RULE_CACHE_SIZE)(config.rule)
        self.routes: tuple[Route, ...] = (
            Route(GA4_PATH, BROWSER_METHODS, self.ga4),
            Route(DATA_PATH, BROWSER_METHODS, self.data),
            Route(MP_PATH, MP_METHODS, self.mp),
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
        with log_context(function="ingest", route=request.path, **trace):
            return dispatch(request, self.routes, self._current_publisher, self.cors)

    # seams ---------------------------------------------------------------------

    def _current_publisher(self) -> EventPublisher:
        return _overrides.publisher or self._publisher()

    def _now(self) -> datetime:
        return (_overrides.clock or self._clock)()

    # helpers ---------------------------------------------------------------------

    def _origin_allowed(self, request: Request) -> str | None:
        origin = request.headers.get("Origin")
        if origin and (origin in self._origins or "*" in self._origins):
            return origin
        return None

    def cors(self, request: Request) -> Mapping[str, str]:
        """CORS headers for an allow-listed ``Origin``; none for others.

        Args:
            request: the incoming request.

        Returns:
            ``Access-Control-Allow-Origin`` (the origin echoed),
            ``Access-Control-Allow-Credentials`` and ``Vary``, or nothing.
        """
        origin = self._origin_allowed(request)
        if origin is None:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    def _preflight(self, request: Request, methods: frozenset[str]) -> Reply:
        if self._origin_allowed(request) is None:
            return Reply(status=204)
        headers = {
            "Access-Control-Allow-Methods": ", ".join(sorted(methods)),
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        }
        return Reply(status=204, headers=headers)

    def _input(self, request: Request) -> HttpInput:
        limit = self.config.ingest.max_body_bytes
        query = request.query_string
        if len(query) > limit:
            raise PayloadTooLarge(
                f"query string is larger than {limit} bytes", "$query"
            )
        body = read_body(request, limit) if request.method == "POST" else b""
        return HttpInput(
            method=request.method,
            query=query,
            body=body,
            headers={key.lower(): value for key, value in request.headers.items()},
            cookies=dict(request.cookies),
            remote_addr=request.remote_addr,
        )

    def _keyed(self, events: Sequence[Event]) -> list[Event]:
        return [with_dedup_key(e, self._rule(e.name)) for e in events]

    @staticmethod
    def _rejected(source: str, exc: InvalidPayload) -> None:
        _log.info(
            "ingest request rejected",
            extra={
                "source": source,
                "outcome": exc.code,
                "status": exc.status,
                "paths": [entry.get("path", "") for entry in exc.fields][:20],
            },
        )

    # handlers ------------------------------------------------------------------

    def healthz(self, request: Request) -> Reply:
        """``GET /healthz``: 200 while the instance can serve."""
        return Reply(body={"status": "ok"})

    def ga4(self, request: Request) -> Reply:
        """``GET, POST /g/collect``: GA4 hits, one event per body line; 204."""
        if request.method == "OPTIONS":
            return self._preflight(request, BROWSER_METHODS)
        from truecount.sources import ga4

        cfg = self.config.ingest
        try:
            events = ga4.parse_request(
                self._input(request),
                self._now(),
                trusted_proxies=cfg.trusted_proxies,
                max_events=cfg.max_events_per_request,
            )
        except InvalidPayload as exc:
            self._rejected("ga4", exc)
            raise
        return Reply(events=self._keyed(events), status=204)

    def data(self, request: Request) -> Reply:
        """``GET, POST /data``: Data Tag events; 200 with the accepted ids."""
        if request.method == "OPTIONS":
            return self._preflight(request, BROWSER_METHODS)
        from truecount.sources import data_client

        cfg = self.config.ingest
        try:
            events = data_client.parse_request(
                self._input(request),
                self._now(),
                trusted_proxies=cfg.trusted_proxies,
                max_events=cfg.max_events_per_request,
            )
        except InvalidPayload as exc:
            self._rejected("data", exc)
            raise
        keyed = self._keyed(events)
        return Reply(events=keyed, body={"accepted": [e.event_id for e in keyed]})

    def mp(self, request: Request) -> Reply:
        """``POST /mp/collect``: Measurement Protocol JSON, by ``api_secret``; 204."""
        if request.method == "OPTIONS":
            return self._preflight(request, MP_METHODS)
        from truecount.sources import mp

        cfg = self.config.ingest
        try:
            mp.check_api_secret(request.query_string, self._mp_secrets)
            events = mp.parse_body(
                self._input(request).body,
                self._now(),
                max_events=cfg.max_events_per_request,
            )
        except InvalidPayload as exc:
            self._rejected("mp", exc)
            raise
        return Reply(events=self._keyed(events), status=204)


#: comma-separated origins added to ``[ingest].cors_origins`` (set by Terraform)
CORS_ENV = "TRUECOUNT_CORS_ALLOWED_ORIGINS"


def create_app(env: Mapping[str, str]) -> IngestApp:
    """Build the function from the environment: config, secrets, lazy publisher.

    The Pub/Sub publisher is created on the first publish and then reused by
    every request of the instance.

    Args:
        env: the environment, e.g. ``os.environ``.

    Returns:
        The application, callable with a Flask request.

    Raises:
        truecount.errors.ConfigError: the config is invalid.
    """
    settings = get_settings()
    configure(project=settings.google_cloud_project)  # trace links in logs
    config = load_config(settings.truecount_config)
    extra = [o.strip() for o in env.get(CORS_ENV, "").split(",") if o.strip()]
    if extra:  # Terraform's cors_allowed_origins, added to the config's
        origins = list(dict.fromkeys([*config.ingest.cors_origins, *extra]))
        ingest_cfg = config.ingest.model_copy(update={"cors_origins": origins})
        config = config.model_copy(update={"ingest": ingest_cfg})
    secrets = [
        s.get_secret_value()
        for s in read_secret_list(env, config.ingest.mp_api_secrets_env)
    ]
    for secret in secrets:
        register_secret(secret)

    def publisher() -> EventPublisher:
        from truecount.adapters.pubsub import get_publisher

        return get_publisher(
            settings.google_cloud_project,
            settings.truecount_events_topic,
            config.ingest.publish_timeout_seconds,
        )

    return IngestApp(config, secrets, publisher)
