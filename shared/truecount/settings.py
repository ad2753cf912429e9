"""Runtime settings read from the environment, and pure secret readers.

:class:`RuntimeSettings` holds what every function needs and no secret.
Secrets are read with :func:`read_secret` / :func:`read_secret_list`, which take
the environment as an argument so that callers (and tests) decide where it
comes from; the core never reads ``os.environ``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class RuntimeSettings(BaseSettings):
    """Environment shared by the three functions (CONTRACT.md, no secrets)."""

    model_config = SettingsConfigDict(
        env_prefix="", env_ignore_empty=True, extra="ignore", frozen=True
    )

    google_cloud_project: str = "truecount-local"
    truecount_config: Path | None = None
    truecount_events_topic: str = "truecount-events"
    pubsub_emulator_host: str | None = None
    firestore_emulator_host: str | None = None


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
