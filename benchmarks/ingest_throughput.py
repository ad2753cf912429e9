"""Ingest throughput: Truecount ``ingest`` vs a bare functions-framework no-op.

Both run as ``python -m functions_framework`` with the same gunicorn settings
(``WORKERS``/``THREADS`` in :mod:`benchmarks.common`) and are driven by the same
load generator (:mod:`benchmarks.load`) at the same concurrency, in alternating
rounds. Two workloads:

* ``data``: one Data Client event per request (``POST /data``, JSON);
* ``ga4``: a 10-line GA4 batch per request (``POST /g/collect``).

A third side, the "SDK floor" (``floor_publish`` in ``benchmarks/noop/floor.py``),
parses nothing and publishes the raw body (one message per GA4 line) with
Truecount's own publisher and settings, waiting for the ack: the ceiling any
ingest built on google-cloud-pubsub can reach on this machine.

Truecount answers 2xx only after the Pub/Sub emulator acked every event of the
request; a check before the load pulls what a few requests published and
asserts every event arrived.

Run from the repository root::

    .venv/bin/python -m benchmarks.ingest_throughput            # ~2 min
    .venv/bin/python -m benchmarks.ingest_throughput --smoke    # seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from benchmarks import common
from benchmarks.load import LoadResult, build_request, run_load

GOAL_RATIO = 0.70
TOPIC = "truecount-events"
MEASUREMENT_ID = "G-DEV0000001"
BATCH_LINES = 10
VARIANTS = 200


@dataclass(frozen=True)
class Workload:
    """One kind of request and how many events it carries."""

    name: str
    label: str
    events_per_request: int


WORKLOADS = (
    Workload("data", "Data Client, 1 event (POST /data)", 1),
    Workload("ga4", f"GA4 batch, {BATCH_LINES} events (POST /g/collect)", BATCH_LINES),
)


def data_body(i: int, run: str) -> bytes:
    """One Data Client event (JSON)."""
    return json.dumps(
        {
            "event_name": "page_view",
            "event_id": f"bench-{run}-{i}",
            "client_id": f"{1000 + i}.1700000000",
            "ga_session_id": "1700000000",
            "page_location": f"https://shop.example/p/{i}?utm_source=bench",
            "page_title": "Product",
            "consent_state": {"analytics_storage": "granted", "ad_storage": "granted"},
        }
    ).encode()


def ga4_path(i: int) -> str:
    """The GA4 query string (shared parameters) of one batch."""
    location = quote(f"https://shop.example/p/{i}", safe="")
    return (
        f"/g/collect?v=2&tid={MEASUREMENT_ID}&cid={1000 + i}.1700000000"
        f"&sid=1700000000&sct=1&gcs=G111&dl={location}&dt=Product"
    )


def ga4_body(i: int, run: str) -> bytes:
    """``BATCH_LINES`` GA4 hit lines; ``_p`` makes each request distinct."""
    lines = [
        f"en=scroll&_p={run}{i}&_s={s}&epn.percent_scrolled={s * 10}"
        for s in range(1, BATCH_LINES + 1)
    ]
    return "\n".join(lines).encode()


def requests_for(workload: str, port: int, run: str) -> list[bytes]:
    """``VARIANTS`` pre-encoded requests of one workload."""
    if workload == "data":
        return [
            build_request(
                "POST",
                "/data",
                data_body(i, run),
                {"Content-Type": "application/json"},
                port,
            )
            for i in range(VARIANTS)
        ]
    return [
        build_request(
            "POST", ga4_path(i), ga4_body(i, run), {"Content-Type": "text/plain"}, port
        )
        for i in range(VARIANTS)
    ]


def _post(url: str, body: bytes, content_type: str) -> int:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # 127.0.0.1 only
        status: int = response.status
        return status


def check_acked(project: str, ingest_url: str, count: int = 3) -> str:
    """Send a few requests of each workload and pull what they published.

    Returns:
        A one-line summary.

    Raises:
        SystemExit: a request failed or an event is missing on the topic.
    """
    from google.cloud import pubsub_v1

    from truecount import emulators as emu

    sub = emu.ensure_pull_subscription(project, TOPIC, "bench-ack-check")
    try:
        for i in range(count):
            statuses = (
                _post(f"{ingest_url}/data", data_body(i, "ack"), "application/json"),
                _post(ingest_url + ga4_path(i), ga4_body(i, "ack"), "text/plain"),
            )
            if any(not 200 <= s < 300 for s in statuses):
                raise SystemExit(f"ingest answered {statuses} to the ack check")
        expected = count * (1 + BATCH_LINES)
        got = emu.pull(project, sub, max_messages=expected, expect=expected, timeout=15)
    finally:
        pubsub_v1.SubscriberClient().delete_subscription(request={"subscription": sub})
    if len(got) != expected:
        raise SystemExit(f"ack check: {len(got)} of {expected} events on the topic")
    return f"{count} + {count} requests answered 2xx; {expected} events on the topic"


def measure(
    proc: common.FunctionProcess,
    requests: list[bytes],
    concurrency: int,
    duration: float,
) -> tuple[LoadResult, float]:
    """One load run; returns the result and the server CPU seconds it used."""
    cpu_before = proc.cpu_seconds()
    result = run_load(proc.port, requests, concurrency, duration)
    return result, proc.cpu_seconds() - cpu_before


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole comparison and return the results."""
    from truecount import emulators as emu
    from truecount.devstack import DEV_SECRETS, dev_config

    with common.emulators(pubsub=True, firestore=False) as hosts:
        project = common.unique("bench-ingest")
        emu.ensure_topic(project, TOPIC)
        config = common.write_config(dev_config("http://127.0.0.1:9"))
        env = {
            **DEV_SECRETS,
            **hosts,
            "GOOGLE_CLOUD_PROJECT": project,
            "TRUECOUNT_CONFIG": str(config),
            "TRUECOUNT_EVENTS_TOPIC": TOPIC,
        }
        sides = {
            "noop": common.noop("http", env=env),
            "floor": common.floor("http", env=env),
            "truecount": common.truecount("ingest", env=env),
        }
        try:
            for proc in sides.values():
                proc.start()
            for proc in sides.values():
                proc.wait_listening()
            ack = check_acked(project, sides["truecount"].url)
            print(f"ack check: {ack}", flush=True)
            results = _load_rounds(sides, args)
        finally:
            for proc in sides.values():
                proc.stop()
            config.unlink(missing_ok=True)
    return _summarise(results, ack, args)


def _load_rounds(
    sides: dict[str, common.FunctionProcess], args: argparse.Namespace
) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for workload in WORKLOADS:
        reqs = {
            name: requests_for(workload.name, proc.port, "r")
            for name, proc in sides.items()
        }
        counted = [n for n in sides if not (args.no_floor and n == "floor")]
        totals = {name: (LoadResult(), 0.0) for name in counted}
        for name in counted:  # warm-up, not counted
            run_load(sides[name].port, reqs[name], args.concurrency, args.warmup)
        for rnd in range(args.rounds):
            order = list(sides) if rnd % 2 == 0 else list(reversed(sides))
            if args.no_floor:
                order = [name for name in order if name != "floor"]
            for name in order:
                profiler = None
                if args.profile and name == "truecount":
                    from benchmarks.profile import Profiler

                    pid = sides[name].proc.pid  # type: ignore[union-attr]
                    profiler = Profiler(pid).start()
                result, cpu = measure(
                    sides[name], reqs[name], args.concurrency, args.duration
                )
                if profiler is not None:
                    from benchmarks.profile import markdown as profile_md
                    from benchmarks.profile import summarise

                    print(profile_md(summarise(profiler.stop()), workload.label))
                merged, cpu_total = totals[name]
                totals[name] = (merged.merge(result), cpu_total + cpu)
                print(
                    f"  {workload.name:5} round {rnd + 1} {name:9} "
                    f"{result.rps:8.1f} req/s  p50 {result.p(50):6.1f} ms  "
                    f"p99 {result.p(99):6.1f} ms  non-2xx "
                    f"{result.requests - result.ok}  errors {result.errors}",
                    flush=True,
                )
        out[workload.name] = {
            name: {
                "requests": res.requests,
                "ok": res.ok,
                "non_2xx": res.requests - res.ok,
                "errors": res.errors,
                "statuses": dict(res.statuses),
                "duration_s": round(res.duration, 3),
                "rps": round(res.rps, 1),
                "events_per_s": round(res.rps * workload.events_per_request, 1),
                "p50_ms": round(res.p(50), 2),
                "p99_ms": round(res.p(99), 2),
                "cpu_ms_per_request": round(1000 * cpu / res.ok, 3) if res.ok else None,
            }
            for name, (res, cpu) in totals.items()
        }
    return out


def _summarise(
    results: dict[str, dict[str, dict[str, Any]]], ack: str, args: argparse.Namespace
) -> dict[str, Any]:
    rows = []
    ratios = {}
    floor_ratios: dict[str, dict[str, float]] = {}
    for workload in WORKLOADS:
        noop, tc = results[workload.name]["noop"], results[workload.name]["truecount"]
        floor = results[workload.name].get("floor")
        ratio = tc["rps"] / noop["rps"] if noop["rps"] else 0.0
        ratios[workload.name] = round(ratio, 3)
        shown = [("no-op", noop), ("SDK floor", floor), ("Truecount", tc)]
        for name, r in shown:
            if r is None:
                continue
            rows.append(
                [
                    workload.label,
                    name,
                    r["rps"],
                    r["events_per_s"],
                    r["p50_ms"],
                    r["p99_ms"],
                    r["cpu_ms_per_request"],
                    r["non_2xx"] + r["errors"],
                ]
            )
        rows.append(
            [
                workload.label,
                "**ratio**",
                f"**{ratio:.0%}**",
                "",
                "",
                "",
                "",
                f"goal ≥ {GOAL_RATIO:.0%}: {common.verdict(ratio >= GOAL_RATIO)}",
            ]
        )
        if floor is not None and noop["rps"] and floor["rps"]:
            floor_ratios[workload.name] = {
                "floor_vs_noop": round(floor["rps"] / noop["rps"], 3),
                "truecount_vs_floor": round(tc["rps"] / floor["rps"], 3),
            }
            for label, value in (
                ("SDK floor / no-op", floor["rps"] / noop["rps"]),
                ("Truecount / SDK floor", tc["rps"] / floor["rps"]),
            ):
                rows.append([workload.label, f"*{label}*", f"*{value:.0%}*"] + [""] * 5)
    return {
        "date": common.today(),
        "machine": common.machine(),
        "settings": {
            "workers": common.SERVER_WORKERS,
            "threads": common.SERVER_THREADS,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "warmup_s": args.warmup,
        },
        "ack_check": ack,
        "results": results,
        "ratios": ratios,
        "floor_ratios": floor_ratios,
        "goal_ratio": GOAL_RATIO,
        "table": common.table(
            [
                "workload",
                "server",
                "req/s",
                "events/s",
                "p50 ms",
                "p99 ms",
                "server CPU ms/req",
                "failed",
            ],
            rows,
        ),
    }


def markdown(summary: dict[str, Any], command: str) -> str:
    """The docs section."""
    s = summary["settings"]
    return f"""Measured {summary["date"]} on {summary["machine"]}.
Command: `{command}`

Settings (both sides): gunicorn via `python -m functions_framework`, \
{s["workers"]} worker x {s["threads"]} threads; load: {s["concurrency"]} keep-alive \
connections, {s["rounds"]} alternating rounds of {s["duration_s"]} s per side \
after a {s["warmup_s"]} s warm-up. Ack check: {summary["ack_check"]}. \
The SDK floor (`benchmarks/noop/floor.py`) parses nothing and publishes the raw \
body (one message per GA4 line) with Truecount's publisher, acked before the \
204: the ceiling of any ingest built on google-cloud-pubsub here.

{summary["table"]}"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="s per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--smoke", action="store_true", help="a tiny load (CI)")
    parser.add_argument("--profile", action="store_true", help="py-spy Truecount")
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the SDK floor side (faster)"
    )
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.rounds, args.warmup, args.concurrency = 0.5, 1, 0.2, 2
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    summary = run(args)
    common.save_result("ingest_throughput", summary)
    print()
    print(summary["table"])
    if args.write_docs:
        command = "python -m benchmarks.ingest_throughput" + (
            " --smoke" if args.smoke else ""
        )
        common.update_docs("ingest", markdown(summary, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
