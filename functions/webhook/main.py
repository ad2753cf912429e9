"""Cloud Function ``webhook``: Stripe, HubSpot and signed CRM intake.

Routes (CONTRACT.md): ``POST /stripe``, ``POST /hubspot``, ``POST /crm``,
``GET /healthz``. Everything is in :mod:`truecount.apps.webhook`; this file only
wires it. The config, the secrets and the application are built on the first
request and reused by the instance; the Pub/Sub publisher and the HubSpot
client are created on first use. Tests swap in fakes with
``truecount.apps.webhook.override(...)``.
"""

from __future__ import annotations

import functools
import os

import functions_framework
from flask import Request, Response

from truecount.apps import webhook as webhook_app


@functools.cache
def _app() -> webhook_app.WebhookApp:
    return webhook_app.create_app(os.environ)


@functions_framework.http
def webhook(request: Request) -> Response:
    """HTTP entry point (``--entry-point=webhook``)."""
    return _app()(request)
