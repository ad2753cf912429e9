"""Cloud Function ``ingest``: GA4 client, Data Client and Measurement Protocol.

Routes (CONTRACT.md): ``GET, POST /g/collect``, ``GET, POST /data``,
``POST /mp/collect``, ``OPTIONS`` preflight on each, ``GET /healthz``.
Everything is in :mod:`truecount.apps.ingest`; this file only wires it. The
config and secrets are read on the first request and reused by the instance;
the source modules and the Pub/Sub publisher are loaded on first use. Tests
swap in fakes with ``truecount.apps.ingest.override(publisher=..., clock=...)``.
"""

from __future__ import annotations

import functools
import os

import functions_framework
from flask import Request, Response

from truecount.apps import ingest as ingest_app


@functools.cache
def _app() -> ingest_app.IngestApp:
    return ingest_app.create_app(os.environ)


@functions_framework.http
def ingest(request: Request) -> Response:
    """HTTP entry point (``--entry-point=ingest``)."""
    return _app()(request)
