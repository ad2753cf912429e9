"""Runtime settings read from the environment, and pure secret readers.

:class:`RuntimeSettings` holds what every function needs and no secret.
Secrets are read with :func:`read_secret` / :func:`read_secret_list`, which take
the environment as an argument so that callers (and tests) decide where it
comes from; the core never reads ``os.environ``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator


class RuntimeSettings(BaseModel):
    """Environment shared by the three functions (CONTRACT.md, no secrets).

    Each field is read from the environment variable of the same name, in any
    case; empty variables are ignored; keyword arguments win over the
    environment. (A plain model rather than pydantic-settings, whose import
    alone cost every function ~20 ms of cold start for five strings.)
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    google_cloud_project: str = "truecount-local"
    truecount_config: Path | None = None
    truecount_events_topic: str = "truecount-events"
    pubsub_emulator_host: str | None = None
    firestore_emulator_host: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, data: Any) -> Any:
        env = {key.lower(): value for key, value in os.environ.items() if value}
        values: dict[str, Any] = {
            name: env[name] for name in cls.model_fields if name in env
        }
        if isinstance(data, Mapping):
            values.update(data)
        return values


@functools.cache
def get_settings() -> RuntimeSettings:
    """Build the settings once per process.

    Returns:
        The cached :class:`RuntimeSettings`; tests call
        ``get_settings.cache_clear()`` after changing the environment.
    """
    return RuntimeSettings()


def read_secret(env: Mapping[str, str], name: str) -> SecretStr | None:
    """Read one secret from an environment mapping.

    Args:
        env: the environment, e.g. ``os.environ``.
        name: the variable name, e.g. ``TRUECOUNT_GA4_API_SECRET``.

    Returns:
        The trimmed value, or None when unset or blank.
    """
    value = env.get(name, "").strip()
    return SecretStr(value) if value else None


def read_secret_list(env: Mapping[str, str], name: str) -> list[SecretStr]:
    """Read a comma-separated list of secrets (e.g. during a rotation).

    Args:
        env: the environment, e.g. ``os.environ``.
        name: the variable name, e.g. ``TRUECOUNT_STRIPE_SIGNING_SECRETS``.

    Returns:
        The trimmed, non-empty entries in order; empty when unset.
    """
    entries = (part.strip() for part in env.get(name, "").split(","))
    return [SecretStr(entry) for entry in entries if entry]
