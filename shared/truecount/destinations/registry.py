"""Build the configured destinations.

Each type lives in ``truecount.destinations.<type>`` and is imported only when a
destination of that type is configured, so fanout pays at cold start only for
the platforms it uses. A module exposes ``Settings`` and
``create(dest_id, cfg, env) -> Destination``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Protocol, cast

from truecount.config import Config, DestinationConfig
from truecount.errors import ConfigError
from truecount.ports import Destination


class _Factory(Protocol):
    def __call__(
        self, dest_id: str, cfg: DestinationConfig, env: Mapping[str, str]
    ) -> Destination: ...


def factory(dest_type: str) -> _Factory:
    """The ``create`` function of a destination type, imported lazily.

    Args:
        dest_type: ``ga4``, ``meta``, ``google_ads``, ``linkedin``, ``tiktok``
            or ``http``.

    Returns:
        The module's ``create``.

    Raises:
        ConfigError: no module for that type.
    """
    try:
        module = importlib.import_module(f"truecount.destinations.{dest_type}")
    except ModuleNotFoundError:
        raise ConfigError(f"unknown destination type {dest_type!r}") from None
    return cast(_Factory, module.create)


def build_destinations(config: Config, env: Mapping[str, str]) -> list[Destination]:
    """Create every enabled destination, in config order.

    Args:
        config: the validated config.
        env: the environment holding the secrets the config names.

    Returns:
        The destinations.

    Raises:
        ConfigError: a bad type-specific key (``destinations.<id>.<key>``) or a
            missing secret (naming the variable).
    """
    return [
        factory(cfg.type)(dest_id, cfg, env)
        for dest_id, cfg in config.destinations.items()
        if cfg.enabled
    ]


class _AnySecret(Mapping[str, str]):
    """An environment in which every variable is set: checks keys, not secrets."""

    def __getitem__(self, key: str) -> str:
        return "placeholder"

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __contains__(self, key: object) -> bool:
        return True


def validate_config(config: Config, env: Mapping[str, str] | None = None) -> list[str]:
    """Check every destination, enabled or not, for ``truecount config check``.

    Args:
        config: the validated config.
        env: the environment to check secrets against; None skips the secret
            checks (they are not available where the check runs).

    Returns:
        One message per problem, each naming the key or variable; empty when
        all is well.
    """
    problems: list[str] = []
    check_env: Mapping[str, str] = _AnySecret() if env is None else env
    for dest_id, cfg in config.destinations.items():
        try:
            factory(cfg.type)(dest_id, cfg, check_env)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems
