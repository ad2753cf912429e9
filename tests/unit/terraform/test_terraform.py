"""Structure and security of terraform/, checked by parsing the HCL.

`terraform init`/`validate` need the google provider, which these machines
cannot download (STYLE §7), so the rules that matter are asserted on the parsed
files: one service account per function, no primitive roles, the push
subscription's retry/dead-letter/OIDC settings, TTL policies, secrets only as
Secret Manager references, typed and documented variables. `terraform fmt` runs
for real when the binary is present.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[3]
TERRAFORM = ROOT / "terraform"
FUNCTION_MODULE = TERRAFORM / "modules" / "function"
ROOT_MODULE = TERRAFORM / "modules" / "truecount"
ENVS = ("dev", "prod")
FUNCTIONS = ("ingest", "webhook", "fanout")

_OPTIONS = hcl2.SerializationOptions(
    strip_string_quotes=True, with_comments=False, explicit_blocks=False
)
_PRIMITIVE = re.compile(r"roles/(owner|editor|viewer)\b")

# CONTRACT.md, "Secrets, by default name": env var => function that reads it.
CONTRACT_SECRETS = {
    "TRUECOUNT_STRIPE_SIGNING_SECRETS": "webhook",
    "TRUECOUNT_HUBSPOT_CLIENT_SECRET": "webhook",
    "TRUECOUNT_HUBSPOT_TOKEN": "webhook",
    "TRUECOUNT_CRM_KEYS": "webhook",
    "TRUECOUNT_MP_API_SECRETS": "ingest",
    "TRUECOUNT_GA4_API_SECRET": "fanout",
    "TRUECOUNT_META_ACCESS_TOKEN": "fanout",
    "TRUECOUNT_GOOGLE_ADS_DEVELOPER_TOKEN": "fanout",
    "TRUECOUNT_GOOGLE_ADS_CLIENT_ID": "fanout",
    "TRUECOUNT_GOOGLE_ADS_CLIENT_SECRET": "fanout",
    "TRUECOUNT_GOOGLE_ADS_REFRESH_TOKEN": "fanout",
    "TRUECOUNT_LINKEDIN_TOKEN": "fanout",
    "TRUECOUNT_TIKTOK_ACCESS_TOKEN": "fanout",
    "TRUECOUNT_HTTP_SINK_SECRET": "fanout",
}


def _tf_files(directory: Path = TERRAFORM) -> list[Path]:
    return sorted(p for p in directory.rglob("*.tf") if ".terraform" not in p.parts)


@pytest.fixture(scope="module")
def parsed() -> dict[Path, dict[str, Any]]:
    """Every .tf file under terraform/, parsed."""
    result = {}
    for path in _tf_files():
        with path.open(encoding="utf-8") as handle:
            result[path] = hcl2.load(handle, serialization_options=_OPTIONS)
    return result


def _blocks(
    parsed: dict[Path, dict[str, Any]], kind: str, directory: Path | None = None
) -> Iterator[tuple[Path, str, str, dict[str, Any]]]:
    """Yield (file, type, name, body) for resource/data blocks of a directory."""
    for path, doc in parsed.items():
        if directory is not None and path.parent != directory:
            continue
        for entry in doc.get(kind, []):
            for type_name, named in entry.items():
                for name, body in named.items():
                    yield path, type_name, name, body


def _resources(
    parsed: dict[Path, dict[str, Any]], type_name: str, directory: Path | None = None
) -> dict[str, dict[str, Any]]:
    return {
        name: body
        for _, t, name, body in _blocks(parsed, "resource", directory)
        if t == type_name
    }


def _single_blocks(
    parsed: dict[Path, dict[str, Any]], kind: str, directory: Path
) -> dict[str, dict[str, Any]]:
    """variable/output/module blocks of one directory: name => body."""
    found: dict[str, dict[str, Any]] = {}
    for path, doc in parsed.items():
        if path.parent == directory:
            for entry in doc.get(kind, []):
                found.update(entry)
    return found


def _locals(parsed: dict[Path, dict[str, Any]], directory: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path, doc in parsed.items():
        if path.parent == directory:
            for entry in doc.get("locals", []):
                found.update(entry)
    return found


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _one(block: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    """A nested block parsed as a one-element list."""
    if isinstance(block, dict):
        return block
    assert len(block) == 1
    return block[0]


def test_layout_has_function_module_root_module_and_two_envs() -> None:
    """STYLE §8 layout: modules/function (4 files), a root module, dev and prod."""
    names = {p.name for p in FUNCTION_MODULE.glob("*.tf")}
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= names
    assert (ROOT_MODULE / "main.tf").is_file()
    assert (TERRAFORM / "envs" / "dev" / "terraform.tfvars.example").is_file()


def test_dev_tfvars_example_sets_only_declared_variables(parsed: dict) -> None:
    """terraform.tfvars.example parses and names only variables dev declares,
    with no secret-looking value."""
    path = TERRAFORM / "envs" / "dev" / "terraform.tfvars.example"
    with path.open(encoding="utf-8") as handle:
        example = hcl2.load(handle, serialization_options=_OPTIONS)
    declared = _single_blocks(parsed, "variable", TERRAFORM / "envs" / "dev")
    assert example
    assert set(example) <= set(declared)
    assert example["project_id"]
    assert not [k for k in example if re.search("secret|token|key", k)]


def test_both_envs_instantiate_the_same_root_module(parsed: dict) -> None:
    """dev and prod reuse modules/truecount rather than copying resources."""
    for env in ENVS:
        modules = _single_blocks(parsed, "module", TERRAFORM / "envs" / env)
        assert modules["truecount"]["source"] == "../../modules/truecount"
        assert not list(_blocks(parsed, "resource", TERRAFORM / "envs" / env))


def test_every_function_has_its_own_service_account(parsed: dict) -> None:
    """The function module creates one SA per instance and runs the function as
    it; the root module instantiates the module once per function."""
    accounts = _resources(parsed, "google_service_account", FUNCTION_MODULE)
    functions = _resources(parsed, "google_cloudfunctions2_function", FUNCTION_MODULE)
    assert list(accounts) == ["main"]
    assert list(functions) == ["main"]
    assert accounts["main"]["account_id"] == "${var.name}"
    service = _one(functions["main"]["service_config"])
    assert service["service_account_email"] == "${google_service_account.main.email}"

    module = _single_blocks(parsed, "module", ROOT_MODULE)["function"]
    assert module["for_each"] == "${local.functions}"
    assert module["name"] == "${var.name_prefix}-${each.key}"
    assert module["entry_point"] == "${each.key}"
    assert set(_locals(parsed, ROOT_MODULE)["functions"]) == set(FUNCTIONS)


def test_no_gen1_functions_and_a_python_runtime(parsed: dict) -> None:
    """Only gen2 functions, on a python3.11+ runtime by default."""
    assert not _resources(parsed, "google_cloudfunctions_function")
    runtime = _single_blocks(parsed, "variable", ROOT_MODULE)["runtime"]
    assert runtime["default"] in {"python311", "python312"}


def test_no_primitive_roles_anywhere() -> None:
    """roles/owner, roles/editor and roles/viewer appear in no .tf file."""
    offenders = [
        str(p.relative_to(ROOT))
        for p in _tf_files()
        if _PRIMITIVE.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_iam_is_additive_and_project_grants_are_only_firestore(parsed: dict) -> None:
    """No authoritative *_iam_binding/_policy; the one project-level grant is
    roles/datastore.user for fanout, conditioned on the (default) database."""
    types = {t for _, t, _, _ in _blocks(parsed, "resource")}
    assert not {t for t in types if t.endswith(("_iam_binding", "_iam_policy"))}
    grants = _resources(parsed, "google_project_iam_member")
    assert list(grants) == ["fanout_firestore"]
    grant = grants["fanout_firestore"]
    assert grant["role"] == "roles/datastore.user"
    assert 'module.function["fanout"]' in grant["member"]
    assert "databases/(default)" in _one(grant["condition"])["expression"]


def test_edge_functions_publish_only_to_the_events_topic(parsed: dict) -> None:
    """ingest and webhook get publisher on the events topic; fanout on the
    dead-letter topic and, for its redrive, on the events topic."""
    topic_grants = _resources(parsed, "google_pubsub_topic_iam_member", ROOT_MODULE)
    edge = topic_grants["edge_publisher"]
    assert edge["for_each"] == '${toset(["ingest", "webhook"])}'
    assert edge["topic"] == "${google_pubsub_topic.events.name}"
    assert edge["role"] == "roles/pubsub.publisher"
    fanout = topic_grants["fanout_dead_letter_publisher"]
    assert fanout["topic"] == "${google_pubsub_topic.dead_letter.name}"
    assert 'module.function["fanout"]' in fanout["member"]
    redrive = topic_grants["fanout_redrive_publisher"]
    assert redrive["topic"] == "${google_pubsub_topic.events.name}"
    assert 'module.function["fanout"]' in redrive["member"]


def test_scheduler_job_sends_the_redrive_command_to_the_events_topic(
    parsed: dict,
) -> None:
    """Every 15 min a Cloud Scheduler job publishes truecount_command=redrive to
    the events topic, as its service agent, which may publish there only."""
    job = _resources(parsed, "google_cloud_scheduler_job", ROOT_MODULE)["redrive"]
    target = _one(job["pubsub_target"])
    assert target["topic_name"] == "${google_pubsub_topic.events.id}"
    assert target["attributes"] == {"truecount_command": "redrive"}
    assert target["data"] == '${base64encode("{}")}'
    assert job["schedule"] == "${var.redrive_schedule}"
    schedule = _single_blocks(parsed, "variable", ROOT_MODULE)["redrive_schedule"]
    assert schedule["default"] == "*/15 * * * *"
    grant = _resources(parsed, "google_pubsub_topic_iam_member", ROOT_MODULE)[
        "scheduler_redrive_publisher"
    ]
    assert grant["topic"] == "${google_pubsub_topic.events.name}"
    assert grant["role"] == "roles/pubsub.publisher"
    assert grant["member"] == "${local.cloud_scheduler_agent}"
    agent = _locals(parsed, ROOT_MODULE)["cloud_scheduler_agent"]
    assert agent.endswith("@gcp-sa-cloudscheduler.iam.gserviceaccount.com")
    services = " ".join(_strings(_locals(parsed, ROOT_MODULE)["services"]))
    assert "cloudscheduler.googleapis.com" in services


def test_bigquery_subscription_leaves_out_redrive_messages(parsed: dict) -> None:
    """Command messages and republished copies never reach the BigQuery table."""
    sub = _resources(parsed, "google_pubsub_subscription", ROOT_MODULE)["bigquery"]
    assert "NOT attributes:truecount_command" in sub["filter"]
    assert "NOT attributes:truecount_redrive" in sub["filter"]


def test_fanout_is_private_and_only_the_push_account_invokes_it(
    parsed: dict,
) -> None:
    """ingest/webhook are public with ALLOW_ALL ingress; fanout is internal-only
    and its invoker is the dedicated push service account."""
    functions = _locals(parsed, ROOT_MODULE)["functions"]
    assert functions["ingest"]["public"] is True
    assert functions["webhook"]["public"] is True
    assert functions["fanout"]["public"] is False
    assert functions["fanout"]["ingress"] == "ALLOW_INTERNAL_ONLY"
    module = _single_blocks(parsed, "module", ROOT_MODULE)["function"]
    assert "google_service_account.push_invoker.email" in module["invoker_members"]
    assert 'each.key == "fanout"' in module["invoker_members"]
    invoker = _resources(
        parsed, "google_cloud_run_v2_service_iam_member", FUNCTION_MODULE
    )["invoker"]
    assert invoker["role"] == "roles/run.invoker"
    assert "if var.public" in invoker["for_each"]


def test_push_subscription_has_dead_letter_retry_and_oidc(parsed: dict) -> None:
    """The fanout push subscription: OIDC as the push SA with the function URL
    as audience, exponential backoff 10s..600s, dead-letter policy."""
    subscriptions = _resources(parsed, "google_pubsub_subscription", ROOT_MODULE)
    push = subscriptions["fanout_push"]
    config = _one(push["push_config"])
    assert config["push_endpoint"] == '${module.function["fanout"].function_uri}'
    oidc = _one(config["oidc_token"])
    assert oidc["service_account_email"] == (
        "${google_service_account.push_invoker.email}"
    )
    assert oidc["audience"] == config["push_endpoint"]

    retry = _one(push["retry_policy"])
    assert retry["minimum_backoff"] == "${var.retry_minimum_backoff_seconds}s"
    assert retry["maximum_backoff"] == "${var.retry_maximum_backoff_seconds}s"
    variables = _single_blocks(parsed, "variable", ROOT_MODULE)
    assert variables["retry_minimum_backoff_seconds"]["default"] == 10
    assert variables["retry_maximum_backoff_seconds"]["default"] == 600

    dead_letter = _one(push["dead_letter_policy"])
    assert dead_letter["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert dead_letter["max_delivery_attempts"] == "${var.max_delivery_attempts}"


def test_max_delivery_attempts_is_validated_between_5_and_100(parsed: dict) -> None:
    """The variable has a default inside Pub/Sub's 5..100 range and a validation
    that enforces it."""
    variable = _single_blocks(parsed, "variable", ROOT_MODULE)["max_delivery_attempts"]
    assert 5 <= variable["default"] <= 100
    condition = _one(variable["validation"])["condition"]
    assert "var.max_delivery_attempts >= 5" in condition
    assert "var.max_delivery_attempts <= 100" in condition


def test_dead_letter_subscription_keeps_messages_for_replay(parsed: dict) -> None:
    """The DLQ pull subscription retains acked messages 7 days by default."""
    subscription = _resources(parsed, "google_pubsub_subscription", ROOT_MODULE)[
        "dead_letter"
    ]
    assert subscription["topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert "push_config" not in subscription
    assert subscription["retain_acked_messages"] is True
    assert subscription["message_retention_duration"] == (
        "${var.dead_letter_retention_days * 86400}s"
    )
    variables = _single_blocks(parsed, "variable", ROOT_MODULE)
    assert variables["dead_letter_retention_days"]["default"] == 7


def test_pubsub_service_agent_can_forward_dead_letters(parsed: dict) -> None:
    """Publisher on the DLQ topic, subscriber on the push subscription, token
    creator on the push SA only."""
    agent = _locals(parsed, ROOT_MODULE)["pubsub_service_agent"]
    assert agent.endswith("@gcp-sa-pubsub.iam.gserviceaccount.com")
    assert "data.google_project.this.number" in agent
    topic = _resources(parsed, "google_pubsub_topic_iam_member", ROOT_MODULE)[
        "dead_letter_agent_publisher"
    ]
    assert (topic["topic"], topic["role"], topic["member"]) == (
        "${google_pubsub_topic.dead_letter.name}",
        "roles/pubsub.publisher",
        "${local.pubsub_service_agent}",
    )
    subscription = _resources(
        parsed, "google_pubsub_subscription_iam_member", ROOT_MODULE
    )["push_agent_subscriber"]
    assert subscription["subscription"] == (
        "${google_pubsub_subscription.fanout_push.name}"
    )
    assert subscription["role"] == "roles/pubsub.subscriber"
    token = _resources(parsed, "google_service_account_iam_member", ROOT_MODULE)[
        "push_agent_token_creator"
    ]
    assert token["service_account_id"] == "${google_service_account.push_invoker.name}"


def test_topic_names_default_to_the_contract_and_reach_the_functions(
    parsed: dict,
) -> None:
    """truecount-events / truecount-events-dead-letter by default; every function
    gets GOOGLE_CLOUD_PROJECT, TRUECOUNT_CONFIG and TRUECOUNT_EVENTS_TOPIC."""
    variables = _single_blocks(parsed, "variable", ROOT_MODULE)
    assert variables["events_topic_name"]["default"] == "truecount-events"
    assert variables["dead_letter_topic_name"]["default"] == (
        "truecount-events-dead-letter"
    )
    common = _locals(parsed, ROOT_MODULE)["common_env"]
    assert common == {
        "GOOGLE_CLOUD_PROJECT": "${var.project_id}",
        "TRUECOUNT_CONFIG": "${var.config_path_in_source}",
        "TRUECOUNT_EVENTS_TOPIC": "${google_pubsub_topic.events.name}",
    }
    functions = _locals(parsed, ROOT_MODULE)["functions"]
    assert functions["fanout"]["env"] == "${local.common_env}"
    assert functions["webhook"]["env"] == "${local.common_env}"
    assert "local.common_env" in functions["ingest"]["env"]


def test_ttl_on_expire_at_for_ledger_and_identities(parsed: dict) -> None:
    """A TTL policy on expire_at for both collection groups."""
    assert _locals(parsed, ROOT_MODULE)["ttl_collections"] == (
        '${toset(["ledger", "identities"])}'
    )
    field = _resources(parsed, "google_firestore_field", ROOT_MODULE)["expire_at_ttl"]
    assert field["for_each"] == "${local.ttl_collections}"
    assert field["collection"] == "${each.value}"
    assert field["field"] == "expire_at"
    assert "ttl_config" in field


def test_firestore_is_native_with_ledger_indexes(parsed: dict) -> None:
    """Native-mode (default) database and composite indexes on ledger."""
    database = _resources(parsed, "google_firestore_database", ROOT_MODULE)["main"]
    assert database["type"] == "FIRESTORE_NATIVE"
    assert database["name"] == "(default)"
    index = _resources(parsed, "google_firestore_index", ROOT_MODULE)["ledger"]
    assert index["collection"] == "ledger"
    default = _single_blocks(parsed, "variable", ROOT_MODULE)["ledger_indexes"][
        "default"
    ]
    assert all(len(fields) >= 2 for fields in default)
    # truecount.ops.store reconcile: name in [...] and created_at >= since
    assert [(f["field_path"], f.get("order", "ASCENDING")) for f in default[0]] == [
        ("name", "ASCENDING"),
        ("created_at", "ASCENDING"),
    ]


def test_no_secret_versions_or_values_in_terraform(parsed: dict) -> None:
    """Secrets exist as google_secret_manager_secret only: no versions, no
    secret_data, no data source reading a value."""
    types = {t for _, t, _, _ in _blocks(parsed, "resource")}
    types |= {t for _, t, _, _ in _blocks(parsed, "data")}
    assert "google_secret_manager_secret_version" not in types
    assert "google_secret_manager_secret" in types
    for path in _tf_files():
        text = path.read_text(encoding="utf-8")
        assert "secret_data" not in text, path
        assert "google_secret_manager_secret_version" not in text, path


def test_secret_catalog_covers_the_contract_names(parsed: dict) -> None:
    """Every CONTRACT.md secret env var has a secret, read by the right function."""
    catalog = _locals(parsed, ROOT_MODULE)["secret_catalog"]
    assert {s["env_var"]: s["function"] for s in catalog.values()} == (CONTRACT_SECRETS)


def test_secrets_reach_functions_only_as_secret_environment_variables(
    parsed: dict,
) -> None:
    """Secret env var names appear only in the catalog, never as plain
    environment_variables; the function mounts them via
    secret_environment_variables with version latest."""
    for path in _tf_files():
        if path.name == "secrets.tf":
            continue
        text = path.read_text(encoding="utf-8")
        assert not [name for name in CONTRACT_SECRETS if name in text], path
    function = _resources(parsed, "google_cloudfunctions2_function", FUNCTION_MODULE)[
        "main"
    ]
    service = _one(function["service_config"])
    assert service["environment_variables"] == "${var.environment_variables}"
    dynamic = _one(service["dynamic"])["secret_environment_variables"]
    assert dynamic["for_each"] == "${var.secret_environment_variables}"
    content = _one(dynamic["content"])
    assert content["secret"] == "${secret_environment_variables.value}"
    assert content["version"] == "latest"
    module = _single_blocks(parsed, "module", ROOT_MODULE)["function"]
    assert module["secret_environment_variables"] == (
        "${local.function_secrets[each.key]}"
    )


def test_secret_access_is_granted_per_secret_to_its_function(parsed: dict) -> None:
    """secretAccessor only through secret-level members for the function's own
    secrets; no project-level secret access."""
    members = _resources(
        parsed, "google_secret_manager_secret_iam_member", FUNCTION_MODULE
    )
    accessor = members["accessor"]
    assert accessor["for_each"] == "${toset(values(var.secret_environment_variables))}"
    assert accessor["role"] == "roles/secretmanager.secretAccessor"
    assert accessor["member"] == ("serviceAccount:${google_service_account.main.email}")
    assert set(_resources(parsed, "google_secret_manager_secret_iam_member")) == {
        "accessor"
    }
    function_secrets = _locals(parsed, ROOT_MODULE)["function_secrets"]
    assert "if contains(s.functions, fn)" in function_secrets


def test_every_variable_has_a_type_and_a_description(parsed: dict) -> None:
    """All modules and envs: typed, documented variables."""
    missing = [
        f"{path.relative_to(ROOT)}:{name}"
        for path, doc in parsed.items()
        for entry in doc.get("variable", [])
        for name, body in entry.items()
        if not body.get("type") or not str(body.get("description", "")).strip()
    ]
    assert missing == []
    assert sum(len(doc.get("variable", [])) for doc in parsed.values()) > 30


def test_validated_variables(parsed: dict) -> None:
    """enabled_destinations is validated against the six destination types and
    the per-function settings objects have optional() defaults."""
    variables = _single_blocks(parsed, "variable", ROOT_MODULE)
    condition = _one(variables["enabled_destinations"]["validation"])["condition"]
    for kind in ("ga4", "meta", "google_ads", "linkedin", "tiktok", "http"):
        assert f'"{kind}"' in condition
    for fn in FUNCTIONS:
        settings = variables[f"{fn}_settings"]
        assert "optional(number" in settings["type"]
        assert settings["default"] == {}
    assert (
        "validation" in _single_blocks(parsed, "variable", FUNCTION_MODULE)["settings"]
    )


def test_outputs_exist(parsed: dict) -> None:
    """Module and env outputs the docs and GTM setup rely on."""
    function = _single_blocks(parsed, "output", FUNCTION_MODULE)
    assert {"function_uri", "function_name", "service_account_email"} <= set(function)
    root = _single_blocks(parsed, "output", ROOT_MODULE)
    assert {"ingest_url", "webhook_urls", "dead_letter_subscription"} <= set(root)
    assert '"stripe", "hubspot", "crm"' in root["webhook_urls"]["value"]
    for env in ENVS:
        outputs = _single_blocks(parsed, "output", TERRAFORM / "envs" / env)
        assert {"ingest_url", "webhook_urls", "dead_letter_subscription"} <= set(
            outputs
        )
    assert all(
        str(body.get("description", "")).strip()
        for path, doc in parsed.items()
        for entry in doc.get("output", [])
        for body in entry.values()
    )


def test_required_apis_are_enabled(parsed: dict) -> None:
    """google_project_service for every API the system uses."""
    services = " ".join(_strings(_locals(parsed, ROOT_MODULE)["services"]))
    for api in (
        "cloudfunctions",
        "run",
        "cloudbuild",
        "artifactregistry",
        "pubsub",
        "firestore",
        "secretmanager",
        "eventarc",
        "logging",
        "monitoring",
        "iam",
    ):
        assert f"{api}.googleapis.com" in services


def test_log_metrics_follow_the_log_contract(parsed: dict) -> None:
    """Per-destination metrics from jsonPayload.destination, filtered on
    jsonPayload.outcome, and a publish_failed metric for the edges."""
    metrics = _resources(parsed, "google_logging_metric", ROOT_MODULE)
    delivery = metrics["delivery"]
    assert delivery["label_extractors"] == {
        "destination": "EXTRACT(jsonPayload.destination)"
    }
    assert "jsonPayload.outcome" in delivery["filter"]
    outcomes = _locals(parsed, ROOT_MODULE)["delivery_outcomes"]
    for outcome in ("delivered", "failed", "skipped"):
        assert f'"{outcome}"' in outcomes
    assert (
        'jsonPayload.outcome="publish_failed"' in (metrics["publish_failed"]["filter"])
    )


def test_alerts_cover_dead_letters_failures_and_5xx(parsed: dict) -> None:
    """DLQ backlog, delivery failure ratio and edge 5xx alert policies, all
    notifying var.alert_notification_channels."""
    policies = _resources(parsed, "google_monitoring_alert_policy", ROOT_MODULE)
    conditions = {
        name: _one(_one(body["conditions"])["condition_threshold"])
        for name, body in policies.items()
    }
    assert (
        "subscription/num_undelivered_messages"
        in (conditions["dead_letter_backlog"]["filter"])
    )
    assert (
        "google_pubsub_subscription.dead_letter.name"
        in (conditions["dead_letter_backlog"]["filter"])
    )
    assert "denominator_filter" in conditions["delivery_failure_ratio"]
    http = conditions["http_5xx"]["filter"]
    assert "run.googleapis.com/request_count" in http
    assert 'response_code_class="5xx"' in http
    for body in policies.values():
        assert body["notification_channels"] == "${var.alert_notification_channels}"
    assert _resources(parsed, "google_monitoring_dashboard", ROOT_MODULE)["main"]


def test_bigquery_subscription_is_opt_in(parsed: dict) -> None:
    """The BigQuery subscription exists only with enable_bigquery_subscription."""
    variables = _single_blocks(parsed, "variable", ROOT_MODULE)
    assert variables["enable_bigquery_subscription"]["default"] is False
    bigquery = _resources(parsed, "google_pubsub_subscription", ROOT_MODULE)["bigquery"]
    assert bigquery["count"] == "${local.bigquery_count}"


def test_source_object_is_named_by_content_hash(parsed: dict) -> None:
    """archive_file zips build/<fn>; the GCS object name starts with its md5."""
    archive = next(
        body
        for _, t, name, body in _blocks(parsed, "data", FUNCTION_MODULE)
        if t == "archive_file"
    )
    assert archive["source_dir"] == "${var.source_dir}"
    obj = _resources(parsed, "google_storage_bucket_object", FUNCTION_MODULE)["source"]
    assert obj["name"] == "${data.archive_file.source.output_md5}-${var.name}.zip"


def test_checkov_skips_are_justified() -> None:
    """Every inline checkov skip names the check and gives a real reason."""
    pattern = re.compile(r"checkov:skip=(\S+?)(?::\s*(.*))?$", re.MULTILINE)
    skips = [m for p in _tf_files() for m in pattern.finditer(p.read_text("utf-8"))]
    assert skips
    for match in skips:
        assert re.fullmatch(r"CKV2?_GCP_\d+", match.group(1))
        assert len((match.group(2) or "").strip()) >= 40, match.group(0)


def test_terraform_fmt_check_passes() -> None:
    """`terraform fmt -check -recursive terraform/` is clean (a missing binary
    skips locally and fails in CI)."""
    binary = shutil.which("terraform")
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("terraform is not installed (required when CI=true)")
        pytest.skip("terraform binary not installed")
    result = subprocess.run(
        [binary, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout


# --- review follow-ups (issue 7) ---------------------------------------------

STORE_PY = ROOT / "shared" / "truecount" / "ops" / "store.py"
CHECKS_TF = ROOT_MODULE / "checks.tf"


def _queried_ledger_fields() -> set[str]:
    """Fields truecount.ops.store filters on, read from its source and constants."""
    from truecount.ops import store

    source = STORE_PY.read_text(encoding="utf-8")
    literal = set(re.findall(r'_field_filter\(\s*"(\w+)"', source))
    trace = re.search(
        r"for field in \(([^)]*)\):\s*\n\s*add\(self\.where_equal", source
    )
    assert trace is not None
    literal |= set(re.findall(r'"(\w+)"', trace.group(1)))
    return literal | {store.EVENT_IDS_FIELD, *store.LEGACY_EVENT_ID_FIELDS}


def test_ops_queried_fields_are_the_expected_ones() -> None:
    """The field list the index exemptions are checked against really comes out
    of ops/store.py (guards the parsing helper)."""
    assert {
        "updated_at",
        "created_at",
        "name",
        "transaction_id",
        "lead_id",
        "event_ids",
        "event_id",
    } <= _queried_ledger_fields()


def test_large_map_fields_are_exempt_from_single_field_indexes(parsed: dict) -> None:
    """ledger's context/destinations/duplicates/sources/stitched and identities'
    fields get a google_firestore_field with an empty index_config each."""
    unindexed = _locals(parsed, ROOT_MODULE)["unindexed_fields"]
    assert {c: set(f) for c, f in unindexed.items()} == {
        "ledger": {"context", "destinations", "duplicates", "sources", "stitched"},
        "identities": {"fields"},
    }
    pairs = _locals(parsed, ROOT_MODULE)["unindexed_field_pairs"]
    assert "local.unindexed_fields" in pairs
    assert '"${collection}.${field}"' in pairs  # one resource per (collection, field)
    field = _resources(parsed, "google_firestore_field", ROOT_MODULE)["unindexed"]
    assert field["for_each"] == "${local.unindexed_field_pairs}"
    assert field["collection"] == "${each.value.collection}"
    assert field["field"] == "${each.value.field}"
    assert field["database"] == "(default)"
    assert _one(field["index_config"]) == {}
    assert "ttl_config" not in field


def test_no_queried_field_is_exempt_from_indexing(parsed: dict) -> None:
    """No field the ops CLI queries (or a composite index uses) is exempted, and
    expire_at keeps its own TTL resource only."""
    unindexed = _locals(parsed, ROOT_MODULE)["unindexed_fields"]
    exempt_ledger = set(unindexed["ledger"])
    assert not exempt_ledger & _queried_ledger_fields()
    composite = _single_blocks(parsed, "variable", ROOT_MODULE)["ledger_indexes"]
    composite_fields = {f["field_path"] for idx in composite["default"] for f in idx}
    assert composite_fields == {"name", "created_at", "updated_at"}
    assert not exempt_ledger & composite_fields
    assert all("expire_at" not in fields for fields in unindexed.values())


def test_cors_env_is_documented_as_read_by_ingest(parsed: dict) -> None:
    """Terraform sets the variable ingest reads (CORS_ENV), and neither the
    variable description nor docs/deploy.md says ingest ignores it."""
    from truecount.apps.ingest import CORS_ENV

    ingest_env = _locals(parsed, ROOT_MODULE)["functions"]["ingest"]["env"]
    assert f"{CORS_ENV} = join" in ingest_env
    description = _single_blocks(parsed, "variable", ROOT_MODULE)[
        "cors_allowed_origins"
    ]["description"]
    assert "adds them to the config's [ingest].cors_origins" in description
    assert "reads today" not in description
    deploy = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "does not read it" not in deploy
    assert "adds those origins to `[ingest].cors_origins`" in deploy


def test_topics_take_an_optional_customer_managed_key(parsed: dict) -> None:
    """Both topics use var.pubsub_kms_key_name (default null); the Pub/Sub agent
    is granted the key only when one is set."""
    variable = _single_blocks(parsed, "variable", ROOT_MODULE)["pubsub_kms_key_name"]
    assert variable["default"] is None
    assert (
        "var.pubsub_kms_key_name == null ||"
        in _one(variable["validation"])["condition"]
    )
    topics = _resources(parsed, "google_pubsub_topic", ROOT_MODULE)
    for name in ("events", "dead_letter"):
        assert topics[name]["kms_key_name"] == "${var.pubsub_kms_key_name}"
        assert (
            "${google_kms_crypto_key_iam_member.pubsub_agent}"
            in (topics[name]["depends_on"])
        )
    grant = _resources(parsed, "google_kms_crypto_key_iam_member", ROOT_MODULE)[
        "pubsub_agent"
    ]
    assert grant["count"] == "${var.pubsub_kms_key_name == null ? 0 : 1}"
    assert grant["crypto_key_id"] == "${var.pubsub_kms_key_name}"
    assert grant["role"] == "roles/cloudkms.cryptoKeyEncrypterDecrypter"
    assert grant["member"] == "${local.pubsub_service_agent}"
    for env in ENVS:
        module = _single_blocks(parsed, "module", TERRAFORM / "envs" / env)
        assert module["truecount"]["pubsub_kms_key_name"] == (
            "${var.pubsub_kms_key_name}"
        )


def test_topic_encryption_skip_does_not_claim_hashed_identifiers_only() -> None:
    """The CKV_GCP_83 justifications name IP and user agent and the CMEK
    variable instead of claiming the messages hold hashed identifiers only."""
    text = (ROOT_MODULE / "pubsub.tf").read_text(encoding="utf-8")
    skips = re.findall(r"checkov:skip=CKV_GCP_83:(.*)$", text, re.MULTILINE)
    assert len(skips) == 2
    for skip in skips:
        assert "identifiers only" not in skip
        assert "user agent" in skip
        assert "var.pubsub_kms_key_name" in skip


def test_max_delivery_attempts_default_exceeds_fanout_attempts(parsed: dict) -> None:
    """Module and env defaults leave a margin over [fanout].max_attempts' default
    of 8, and the description says why."""
    from truecount.config import FanoutConfig

    fanout_default = FanoutConfig.model_fields["max_attempts"].default
    assert fanout_default == 8
    variable = _single_blocks(parsed, "variable", ROOT_MODULE)["max_delivery_attempts"]
    assert variable["default"] >= fanout_default + 2
    assert "max_attempts" in variable["description"]
    for env in ENVS:
        env_variable = _single_blocks(parsed, "variable", TERRAFORM / "envs" / env)[
            "max_delivery_attempts"
        ]
        assert env_variable["default"] == variable["default"]


def test_check_warns_when_dead_letter_comes_before_fanout_gives_up(
    parsed: dict,
) -> None:
    """A check block compares max_delivery_attempts with the largest
    max_attempts read from var.config_file."""
    checks: dict[str, Any] = {}
    for entry in parsed[CHECKS_TF].get("check", []):
        checks.update(entry)
    condition = _one(checks["dead_letter_after_fanout_attempts"]["assert"])["condition"]
    assert condition == "${var.max_delivery_attempts > local.config_max_attempts}"
    found = _locals(parsed, ROOT_MODULE)
    assert "local.config_fanout_max_attempts" in found["config_max_attempts"]
    assert "regexall" in found["config_max_attempts"]
    assert '"8"' in found["config_fanout_max_attempts"]
    assert "file(var.config_file)" in found["config_text"]


_FANOUT_3 = '[fanout]\nmax_attempts = 3\n\n[destinations.ga4]\ntype = "ga4"\n'
_DEST_15 = "[fanout]\nledger_ttl_days = 35\n[destinations.meta]\nmax_attempts = 15\n"
_COMMENTED = (
    "[fanout] # delivery\nmax_attempts = 4\n[destinations.x]\n# max_attempts = 40\n"
)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("", 8),  # no [fanout]: truecount.config's default
        ((ROOT / "config" / "example.toml").read_text(encoding="utf-8"), 8),
        ('[destinations.ga4]\ntype = "ga4"\nmax_attempts = 2\n', 8),
        (_FANOUT_3, 3),
        (_DEST_15, 15),
        (_COMMENTED, 4),
        ("[fanout]\nmax_attempts = 9\n[destinations.a]\nmax_attempts = 6\n", 9),
    ],
)
def test_config_max_attempts_is_the_largest_effective_limit(
    tmp_path: Path, toml: str, expected: int
) -> None:
    """Evaluated by `terraform console` on the locals of checks.tf: [fanout]'s
    max_attempts (8 when absent) or a larger per-destination override; comment
    lines do not count (a missing binary skips locally and fails in CI)."""
    binary = shutil.which("terraform")
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("terraform is not installed (required when CI=true)")
        pytest.skip("terraform binary not installed")
    text = CHECKS_TF.read_text(encoding="utf-8")
    match = re.search(r"^locals \{\n.*?^\}\n", text, re.MULTILINE | re.DOTALL)
    assert match is not None
    module = tmp_path / "module"
    module.mkdir()
    (module / "main.tf").write_text(
        'variable "config_file" {\n  type = string\n}\n\n' + match.group(0),
        encoding="utf-8",
    )
    config = tmp_path / "truecount.toml"
    config.write_text(toml, encoding="utf-8")
    result = subprocess.run(
        [binary, "console", f"-var=config_file={config}"],
        input="local.config_max_attempts\n",
        capture_output=True,
        text=True,
        cwd=module,
        timeout=60,
        check=False,
        env={**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(expected)
