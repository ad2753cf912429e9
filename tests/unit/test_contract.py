"""Generated contract documents: committed files match the models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from truecount import contract
from truecount.models.event import Event

DOCS = Path(__file__).resolve().parents[2] / "docs"
HINT = "docs are out of date: run python -m truecount.contract --write"


def test_committed_event_schema_matches_the_models() -> None:
    """docs/schema/event.v1.json is exactly what the Event model renders."""
    committed = (DOCS / "schema" / "event.v1.json").read_text(encoding="utf-8")

    assert committed == contract.render_schema(), HINT


def test_committed_config_schema_matches_the_models() -> None:
    """docs/schema/config.json is exactly what the Config model renders."""
    committed = (DOCS / "schema" / "config.json").read_text(encoding="utf-8")

    assert committed == contract.render_config_schema(), HINT


def test_committed_markdown_matches_the_models() -> None:
    """docs/contract.md is exactly what the models render."""
    committed = (DOCS / "contract.md").read_text(encoding="utf-8")

    assert committed == contract.render_markdown(), HINT


def test_check_passes_on_the_committed_docs(capsys: pytest.CaptureFixture[str]) -> None:
    """--check exits 0 when nothing drifted."""
    status = contract.main(["--check", "--docs-dir", str(DOCS)])

    assert status == 0
    assert "up to date" in capsys.readouterr().out


def test_check_fails_when_a_file_drifts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--check exits 1 and names the file that differs or is missing."""
    contract.main(["--write", "--docs-dir", str(tmp_path)])
    schema = tmp_path / "schema" / "event.v1.json"
    schema.write_text(schema.read_text(encoding="utf-8").replace("event_id", "evt"))
    (tmp_path / "contract.md").unlink()
    capsys.readouterr()

    status = contract.main(["--check", "--docs-dir", str(tmp_path)])

    err = capsys.readouterr().err
    assert status == 1
    assert str(schema) in err
    assert str(tmp_path / "contract.md") in err
    assert "config.json" not in err


def test_write_creates_every_document(tmp_path: Path) -> None:
    """--write creates the schema and Markdown files, then --check is clean."""
    assert contract.main(["--write", "--docs-dir", str(tmp_path)]) == 0

    assert (tmp_path / "schema" / "event.v1.json").read_text(encoding="utf-8") == (
        contract.render_schema()
    )
    assert (tmp_path / "contract.md").exists()
    assert contract.drifted_files(tmp_path) == []


def test_schema_is_sorted_indented_and_ends_with_a_newline() -> None:
    """The JSON Schema text is stable: sorted keys, indent 2, trailing newline."""
    text = contract.render_schema()
    data = json.loads(text)

    assert text.endswith("}\n")
    assert text == json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert data["title"] == "Event"
    assert data["additionalProperties"] is False
    assert set(data["required"]) == {
        "event_id",
        "name",
        "source",
        "occurred_at",
        "received_at",
    }


def test_schema_describes_the_contract_fields() -> None:
    """Every top-level Event field and the nested models are in the schema."""
    data = json.loads(contract.render_schema())

    assert set(data["properties"]) == set(Event.model_fields)
    assert {"Client", "Identity", "Commerce", "Item", "Lead"} <= set(data["$defs"])
    sha = data["$defs"]["Identity"]["properties"]["email_sha256"]["anyOf"][0]
    assert sha["pattern"] == "^[0-9a-f]{64}$"


def test_markdown_has_a_table_per_model_and_the_attributes() -> None:
    """The reference lists every model, its fields and the Pub/Sub attributes."""
    text = contract.render_markdown()

    for model in ("Event", "Client", "Page", "Identity", "ClickIds", "Consent"):
        assert f"\n### {model}\n" in text
    for model in ("Commerce", "Item", "Lead"):
        assert f"\n### {model}\n" in text
    assert "| `commerce` | [Commerce](#commerce) \\| null | no |" in text
    assert "| `event_id` | string | yes |  | min length 1; max length 128 |" in text
    assert "## Pub/Sub attributes" in text
    for attribute in Event.model_validate(
        {
            "event_id": "e",
            "name": "n",
            "source": "ga4",
            "occurred_at": "2025-01-01T00:00:00Z",
            "received_at": "2025-01-01T00:00:00Z",
        }
    ).pubsub_attributes():
        assert f"| `{attribute}` |" in text


def test_markdown_escapes_angle_brackets_outside_code() -> None:
    """Text like event:<event_id> survives Markdown rendering."""
    text = contract.render_markdown()

    assert "default event:&lt;event_id&gt;" in text


def test_config_reference_lists_every_section_and_key() -> None:
    """The config reference has each TOML table and its keys."""
    text = contract.render_config_reference()

    for section in (
        "[ingest]",
        "[sources]",
        "[sources.stripe]",
        "[sources.hubspot]",
        "[sources.crm]",
        "[fanout]",
        "[destinations.<id>]",
        "[rules.<event_name>]",
    ):
        assert f"### `{section}`" in text
    assert "| `max_attempts` | integer | no | `8` | >= 1; <= 100 |" in text
    assert '| `type` | "ga4" \\| "meta"' in text
    assert '`[destinations.<id>]` with `type = "http"`' in text
    assert text in contract.render_markdown()
