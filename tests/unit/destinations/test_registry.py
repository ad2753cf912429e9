"""Building destinations from the config."""

from __future__ import annotations

from datetime import timedelta

import pytest

from truecount.config import parse_config
from truecount.destinations.registry import build_destinations, validate_config
from truecount.errors import ConfigError

from .conftest import ENV

CONFIG = """
[destinations.ga4]
type = "ga4"
measurement_id = "G-ABC1234567"

[destinations.meta]
type = "meta"
pixel_id = "1234567890"
events = ["purchase", "generate_lead"]
consent = ["ad_user_data"]
unknown_consent = "allow"
max_attempts = 3

[destinations.ads]
type = "google_ads"
customer_id = "1234567890"
conversion_actions = { purchase = "1" }

[destinations.li]
type = "linkedin"
conversions = { purchase = "2" }

[destinations.tt]
type = "tiktok"
pixel_code = "C1ABCDEF23GHIJ"

[destinations.sink]
type = "http"
endpoint = "http://127.0.0.1:8099/events"

[destinations.off]
type = "meta"
enabled = false
pixel_id = "123456"
"""


def test_build_destinations_creates_enabled_ones_in_order():
    """Every enabled destination is built with its id and type."""
    dests = build_destinations(parse_config(CONFIG), ENV)
    assert [(d.id, d.type) for d in dests] == [
        ("ga4", "ga4"),
        ("meta", "meta"),
        ("ads", "google_ads"),
        ("li", "linkedin"),
        ("tt", "tiktok"),
        ("sink", "http"),
    ]


def test_common_keys_override_type_defaults():
    """consent, unknown_consent, max_attempts and events come from the config."""
    meta = build_destinations(parse_config(CONFIG), ENV)[1]
    assert meta.required_consent == ("ad_user_data",)
    assert meta.unknown_consent == "allow"
    assert meta.max_age == timedelta(days=7)
    assert meta.max_attempts == 3  # type: ignore[attr-defined]
    assert meta.accepts("purchase")
    assert not meta.accepts("page_view")


def test_bad_type_specific_key_is_named():
    """An unknown or invalid key names destinations.<id>.<key>."""
    text = '[destinations.fb]\ntype = "meta"\npixel_id = "123456"\npixle = 1\n'
    with pytest.raises(ConfigError, match=r"destinations\.fb\.pixle: Extra inputs"):
        build_destinations(parse_config(text), ENV)
    text = '[destinations.fb]\ntype = "meta"\npixel_id = "abc"\n'
    with pytest.raises(ConfigError, match=r"destinations\.fb\.pixel_id"):
        build_destinations(parse_config(text), ENV)
    text = '[destinations.g]\ntype = "ga4"\n'
    with pytest.raises(
        ConfigError, match=r"destinations\.g\.measurement_id: Field required"
    ):
        build_destinations(parse_config(text), ENV)


def test_missing_secret_names_the_env_var():
    """A missing secret names the variable, never a value."""
    env = {k: v for k, v in ENV.items() if k != "TRUECOUNT_TIKTOK_ACCESS_TOKEN"}
    with pytest.raises(ConfigError, match="TRUECOUNT_TIKTOK_ACCESS_TOKEN") as info:
        build_destinations(parse_config(CONFIG), env)
    assert "destinations.tt" in str(info.value)
    assert not any(v in str(info.value) for v in ENV.values())


def test_custom_secret_env_name_is_used():
    """api_secret_env names another variable."""
    text = (
        '[destinations.g]\ntype = "ga4"\nmeasurement_id = "G-ABC1234567"\n'
        'api_secret_env = "MY_GA4"\n'
    )
    with pytest.raises(ConfigError, match="MY_GA4"):
        build_destinations(parse_config(text), ENV)
    assert len(build_destinations(parse_config(text), {"MY_GA4": "x"})) == 1


def test_validate_config_without_env_checks_keys_only():
    """config check: keys are checked (disabled ones too), secrets are not."""
    assert validate_config(parse_config(CONFIG)) == []
    text = CONFIG.replace('pixel_id = "123456"\n', 'pixel_id = "1"\nbogus = true\n')
    problems = validate_config(parse_config(text))
    assert problems == [
        "destinations.off.pixel_id: String should match pattern '^[0-9]{5,20}$'; "
        "destinations.off.bogus: Extra inputs are not permitted"
    ]


def test_validate_config_with_env_reports_missing_secrets():
    """With an environment, each missing secret is one problem."""
    problems = validate_config(parse_config(CONFIG), env={})
    assert problems == [
        "destinations.ga4: environment variable TRUECOUNT_GA4_API_SECRET is not set",
        "destinations.meta: environment variable TRUECOUNT_META_ACCESS_TOKEN is not set",
        "destinations.ads: environment variable TRUECOUNT_GOOGLE_ADS_DEVELOPER_TOKEN "
        "is not set",
        "destinations.li: environment variable TRUECOUNT_LINKEDIN_TOKEN is not set",
        "destinations.tt: environment variable TRUECOUNT_TIKTOK_ACCESS_TOKEN is not set",
        "destinations.off: environment variable TRUECOUNT_META_ACCESS_TOKEN is not set",
    ]
