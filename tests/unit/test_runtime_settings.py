"""RuntimeSettings and the pure secret readers."""

from __future__ import annotations

from pathlib import Path

from truecount.settings import (
    RuntimeSettings,
    get_settings,
    read_secret,
    read_secret_list,
)


def test_defaults_apply_when_the_environment_is_empty():
    """Without variables: local project, default topic, no config, no emulators."""
    settings = RuntimeSettings()

    assert settings.google_cloud_project == "truecount-local"
    assert settings.truecount_events_topic == "truecount-events"
    assert settings.truecount_config is None
    assert settings.pubsub_emulator_host is None
    assert settings.firestore_emulator_host is None


def test_environment_variables_are_read(monkeypatch):
    """Each CONTRACT variable fills its field."""
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "prod-1")
    monkeypatch.setenv("TRUECOUNT_CONFIG", "/etc/truecount.toml")
    monkeypatch.setenv("TRUECOUNT_EVENTS_TOPIC", "events-2")
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085")
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:8080")

    settings = get_settings()

    assert settings.google_cloud_project == "prod-1"
    assert settings.truecount_config == Path("/etc/truecount.toml")
    assert settings.truecount_events_topic == "events-2"
    assert settings.pubsub_emulator_host == "127.0.0.1:8085"
    assert settings.firestore_emulator_host == "127.0.0.1:8080"
    assert get_settings() is settings


def test_read_secret_trims_and_treats_blank_as_missing():
    """read_secret returns a trimmed SecretStr, or None for unset or blank."""
    env = {"A": "  s3cret \n", "B": "   "}

    secret = read_secret(env, "A")

    assert secret is not None
    assert secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(secret)
    assert read_secret(env, "B") is None
    assert read_secret(env, "C") is None


def test_read_secret_list_splits_trims_and_drops_empty_entries():
    """Comma-separated secrets come back trimmed, in order, without empties."""
    env = {"KEYS": " whsec_old , ,whsec_new,, "}

    values = [s.get_secret_value() for s in read_secret_list(env, "KEYS")]

    assert values == ["whsec_old", "whsec_new"]
    assert read_secret_list(env, "MISSING") == []
