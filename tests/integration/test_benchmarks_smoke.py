"""Smoke test of the benchmark scripts: each runs end to end with a tiny load.

The benchmarks are not part of the test run (they take minutes and need a
quiet machine); this keeps them from rotting. ``benchmarks.run_all --smoke``
runs every script against the session's emulators, writing its results to a
temporary directory, and each test checks one result file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from truecount import emulators as emu

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke_results(
    emulators: emu.Emulators, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Run ``python -m benchmarks.run_all --smoke`` once; load its result files."""
    results = tmp_path_factory.mktemp("bench-results")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRUECOUNT_")},
        **emulators.env(),
        "BENCH_RESULTS_DIR": str(results),
    }
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--smoke"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert completed.returncode == 0, (
        completed.stdout[-3000:] + completed.stderr[-3000:]
    )
    return {p.stem: json.loads(p.read_text()) for p in results.glob("*.json")}


def test_ingest_throughput_smoke_answers_every_request_on_both_sides(
    smoke_results: dict[str, Any],
) -> None:
    """Both workloads ran on the no-op and Truecount, every request got a 2xx."""
    result = smoke_results["ingest_throughput"]
    assert set(result["results"]) == {"data", "ga4"}
    for workload in result["results"].values():
        for side in ("noop", "truecount"):
            assert workload[side]["ok"] > 0
            assert workload[side]["non_2xx"] == 0
            assert workload[side]["errors"] == 0
    assert "events on the topic" in result["ack_check"]
    assert result["ratios"]["data"] > 0


def test_cold_start_smoke_measures_every_function_and_its_baseline(
    smoke_results: dict[str, Any],
) -> None:
    """Each function has a positive median on both sides and an import breakdown."""
    result = smoke_results["cold_start"]
    assert set(result["results"]) == {"ingest", "webhook", "fanout"}
    for measured in result["results"].values():
        assert measured["median_ms"]["noop"] > 0
        assert measured["median_ms"]["truecount"] > 0
        assert measured["imports"]["truecount"]["top"]
        assert measured["imports"]["truecount"]["total_ms"] > 0


def test_fanout_throughput_smoke_delivers_exactly_once_to_five_platforms(
    smoke_results: dict[str, Any],
) -> None:
    """Every platform received each smoke event exactly once."""
    result = smoke_results["fanout_throughput"]
    rounds = result["rounds"]["truecount"]
    assert rounds
    assert all(r["exactly_once"] for r in rounds)
    assert all(
        f"{p} {r['events']}" in r["detail"]
        for r in rounds
        for p in ("ga4", "meta", "google-ads", "linkedin", "tiktok")
    )
    assert result["aggregate"]["noop"]["events_per_s"] > 0


def test_firestore_ops_smoke_counts_ledger_writes_and_skips_them_for_funnel(
    smoke_results: dict[str, Any],
) -> None:
    """A conversion claims and records the ledger; a plain funnel event does not."""
    per = {
        k: v["per_event"] for k, v in smoke_results["firestore_ops"]["results"].items()
    }
    assert per["conversion"]["writes"] >= 2
    assert per["funnel"]["writes"] == 0
    assert per["funnel"]["reads"] == 0
    assert per["backend_lookup"]["reads_found"] >= 1
    assert per["conversion_redelivered"]["failed_writes"] == 1


def test_cost_smoke_prices_both_event_classes(smoke_results: dict[str, Any]) -> None:
    """The cost model produced a positive price per million for both classes."""
    result = smoke_results["cost"]
    assert result["per_million"]["funnel"] > 0
    assert result["per_million"]["conversion"] > result["per_million"]["funnel"]
    assert result["sgtm_monthly"] > 100
