"""The TOML config: the example parses, bad keys are named, rule defaults."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from pydantic import BaseModel

from truecount.config import Config, load_config, parse_config
from truecount.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.toml"

# The "Config keys (TOML) that must work" snippet of CONTRACT.md, verbatim.
CONTRACT_SNIPPET = """
[destinations.ga4]            # the table name is the destination's id
type = "ga4"                  # ga4 | meta | google_ads | linkedin | tiktok | http
endpoint = "https://www.google-analytics.com"   # optional base-URL override
events = ["page_view", "purchase", "generate_lead"]   # which canonical events go here ("*" = all)
# credentials are named by env var, e.g. api_secret_env = "GA4_API_SECRET"

[rules.purchase]
key = "transaction_id"        # what the dedup key is built from
truth = "backend"             # first | backend
"""


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.toml")
    return str(info.value)


# --- the example file -----------------------------------------------------------


def test_example_config_parses_with_every_destination_type() -> None:
    """config/example.toml is valid and has one destination of each type."""
    config = load_config(EXAMPLE)

    assert {d.type for d in config.destinations.values()} == {
        "ga4",
        "meta",
        "google_ads",
        "linkedin",
        "tiktok",
        "http",
    }
    assert config.sources.stripe is not None
    assert config.sources.hubspot is not None
    assert config.sources.crm is not None


def test_example_config_carries_the_type_specific_keys() -> None:
    """The documented type-specific keys reach each destination's options."""
    config = load_config(EXAMPLE)
    options = {k: d.options for k, d in config.destinations.items()}

    assert options["ga4"]["api_secret_env"] == "TRUECOUNT_GA4_API_SECRET"
    assert options["meta"]["api_version"] == "v26.0"
    assert options["meta"]["access_token_env"] == "TRUECOUNT_META_ACCESS_TOKEN"
    assert set(options["google_ads"]["conversion_actions"]) == {
        "purchase",
        "close_convert_lead",
    }
    assert options["linkedin"]["conversions"]["purchase"] == (
        "urn:lla:llaPartnerConversion:123"
    )
    assert options["linkedin"]["version"] == "202505"
    assert options["tiktok"]["access_token_env"] == "TRUECOUNT_TIKTOK_ACCESS_TOKEN"
    assert options["http"]["secret_env"] == "TRUECOUNT_HTTP_SINK_SECRET"
    assert config.destinations["http"].endpoint == "https://hooks.example.com/truecount"


def test_example_config_options_pass_each_existing_destination_settings() -> None:
    """Where a destination module defines Settings, the example's keys pass it."""
    config = load_config(EXAMPLE)
    checked = []

    for dest_id, dest in config.destinations.items():
        name = f"truecount.destinations.{dest.type}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        settings = getattr(module, "Settings", None)
        if isinstance(settings, type) and issubclass(settings, BaseModel):
            settings.model_validate(dest.options)
            checked.append(dest_id)

    assert "http" in checked
    assert set(checked) <= set(config.destinations)


def test_example_config_rules() -> None:
    """The example's rules: purchase from the backend, page_view without ledger."""
    config = load_config(EXAMPLE)

    assert config.rule("purchase").truth == "backend"
    assert config.rule("purchase").key == "transaction_id"
    assert config.rule("page_view").idempotence == "none"


def test_example_config_sets_no_secret_values() -> None:
    """Credentials are named by environment variable only (*_env keys)."""
    text = EXAMPLE.read_text(encoding="utf-8")

    for forbidden in ("api_secret =", "access_token =", "token =", "secret ="):
        assert forbidden not in text


def test_contract_snippet_parses() -> None:
    """The config snippet CONTRACT.md promises keeps working."""
    config = parse_config(CONTRACT_SNIPPET)

    ga4 = config.destinations["ga4"]
    assert ga4.type == "ga4"
    assert ga4.endpoint == "https://www.google-analytics.com"
    assert ga4.events == ["page_view", "purchase", "generate_lead"]
    assert config.rule("purchase").truth == "backend"


def test_empty_config_has_defaults() -> None:
    """An empty file and no file give the same defaults."""
    assert parse_config("") == Config()
    assert load_config(None) == Config()


# --- errors name the key ----------------------------------------------------------


def test_unknown_key_names_its_path() -> None:
    """A misspelt key is an error naming section and key."""
    message = config_error("[ingest]\nmax_body_byte = 1\n")

    assert "test.toml" in message
    assert "ingest.max_body_byte" in message


def test_unknown_section_names_it() -> None:
    """An unknown top-level table is an error naming it."""
    assert "destination" in config_error("[destination.ga4]\ntype = 'ga4'\n")


def test_wrong_type_names_its_path() -> None:
    """A string where a number belongs names the key."""
    message = config_error("[fanout]\nmax_attempts = 'many'\n")

    assert "fanout.max_attempts" in message


def test_out_of_range_value_names_its_path() -> None:
    """Limits are checked and the key named."""
    assert "ingest.max_body_bytes" in config_error("[ingest]\nmax_body_bytes = 1\n")


def test_bad_destination_type_names_its_path() -> None:
    """An unknown destination type names destinations.<id>.type."""
    message = config_error("[destinations.x]\ntype = 'snapchat'\n")

    assert "destinations.x.type" in message


def test_missing_destination_type_names_its_path() -> None:
    """type is required on every destination."""
    assert "destinations.x.type" in config_error("[destinations.x]\nenabled = true\n")


def test_bad_event_name_in_events_names_the_destination_and_index() -> None:
    """An invalid event name in events names the destination and its position."""
    message = config_error(
        "[destinations.meta]\ntype = 'meta'\nevents = ['purchase', 'bad name']\n"
    )

    assert "destinations.meta" in message
    assert "events[1]" in message


def test_bad_destination_id_is_named() -> None:
    """Destination ids must be snake_case."""
    assert "Meta-Main" in config_error("[destinations.Meta-Main]\ntype = 'meta'\n")


def test_bad_rules_name_is_named() -> None:
    """A rules table whose name is not an event name is named."""
    assert "rules.bad-name" in config_error('[rules."bad-name"]\nkey = "event_id"\n')


def test_bad_rule_value_names_its_path() -> None:
    """An unknown dedup key field names rules.<name>.key."""
    message = config_error("[rules.purchase]\nkey = 'order_id'\n")

    assert "rules.purchase.key" in message


def test_env_key_must_name_an_environment_variable() -> None:
    """*_env keys take variable names, never secret values."""
    message = config_error("[sources.stripe]\nsigning_secrets_env = 'whsec_abc'\n")

    assert "sources.stripe.signing_secrets_env" in message


def test_invalid_toml_is_a_config_error() -> None:
    """Broken TOML is reported as such, with the file name."""
    message = config_error("[ingest\n")

    assert "test.toml" in message
    assert "invalid TOML" in message


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing config file is a ConfigError naming the path."""
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_config(missing)


# --- rule defaults ----------------------------------------------------------------


def test_purchase_truth_is_backend_when_stripe_is_configured() -> None:
    """With Stripe, the backend that reports purchases, it is their truth."""
    config = parse_config("[sources.stripe]\n")

    assert config.rule("purchase").truth == "backend"
    assert config.rule("purchase").key == "transaction_id"


def test_purchase_truth_is_first_without_a_backend_source() -> None:
    """Without a backend source, the first event wins."""
    assert parse_config("").rule("purchase").truth == "first"


def test_lead_only_backends_do_not_hold_browser_purchases() -> None:
    """HubSpot and a CRM never send purchases: holding browser purchases for
    them would hold them forever, so purchase stays first-wins."""
    config = parse_config("[sources.hubspot]\n[sources.crm]\n")

    assert config.rule("purchase").truth == "first"


def test_other_events_default_to_first_even_with_a_backend() -> None:
    """Only purchase switches to backend truth by default."""
    config = parse_config("[sources.hubspot]\n")

    assert config.rule("refund").truth == "first"
    assert config.rule("close_convert_lead").truth == "first"
    assert config.rule("page_view").truth == "first"


def test_generate_lead_defaults_to_lead_prefix_and_lead_id() -> None:
    """generate_lead dedups on lead:<lead_id>."""
    rule = parse_config("").rule("generate_lead")

    assert rule.key == "lead_id"
    assert rule.prefix == "lead"


def test_unconfigured_event_defaults_to_event_id_with_the_ledger() -> None:
    """Anything else dedups on its event_id, through the ledger."""
    rule = parse_config("").rule("view_item")

    assert rule.key == "event_id"
    assert rule.idempotence == "ledger"
    assert rule.truth == "first"


def test_explicit_rule_overrides_the_default() -> None:
    """A [rules.<name>] table wins over the built-in default."""
    config = parse_config("[sources.crm]\n[rules.purchase]\ntruth = 'first'\n")

    assert config.rule("purchase").truth == "first"


def test_explicit_rule_keeps_default_keys_it_does_not_set() -> None:
    """Setting only truth on purchase keeps deduping by transaction_id."""
    rule = parse_config("[rules.purchase]\ntruth = 'first'\n").rule("purchase")

    assert rule.key == "transaction_id"
