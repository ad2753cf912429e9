"""Cold start: process spawn to the first 2xx, per function, vs the bare no-op.

For each function the clock starts just before ``python -m functions_framework``
is spawned and stops at the first 2xx answer to a real request:

* ``ingest``: ``POST /data`` with one event (2xx only after the Pub/Sub
  emulator acked the publish);
* ``webhook``: a signed ``POST /crm`` (idem);
* ``fanout``: a Pub/Sub push body with a new purchase (ledger claim in the
  Firestore emulator, five sends to a loopback capture server, ledger write).

The baseline is the bare no-op (``noop_http`` for the HTTP functions,
``noop_event`` for fanout) given the same request. A third column, the "SDK
floor" (``benchmarks/noop/floor.py``), is a function that does only the Google
SDK work Truecount cannot avoid: ``floor_publish`` (for ingest and webhook)
publishes the body through the same Pub/Sub client and waits for the ack;
``floor_create`` (for fanout) imports ``google.cloud.firestore`` and does one
``create()``. It shows how much of the gap is the SDKs themselves. Runs
alternate the sides; the figure is the median of ``--runs`` runs. A separate run under
``python -X importtime`` lists the imports with the largest cumulative time.

Run from the repository root::

    .venv/bin/python -m benchmarks.cold_start            # ~1 min
    .venv/bin/python -m benchmarks.cold_start --smoke
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks import common, events
from benchmarks.capture_server import tune

GOAL_FACTOR = 2.0
TOPIC = "truecount-events"
FUNCTIONS = ("ingest", "webhook", "fanout")

Request = tuple[str, bytes, dict[str, str]]


def request_for(name: str, project: str) -> Request:
    """A fresh request for function ``name`` (and its no-op)."""
    token = uuid.uuid4().hex[:12]
    if name == "ingest":
        body = json.dumps(
            {"event_name": "page_view", "event_id": f"cold-{token}", "client_id": "1.2"}
        ).encode()
        return "/data", body, {"Content-Type": "application/json"}
    if name == "webhook":
        body, headers = events.crm_request(token)
        return "/crm", body, headers
    envelope = events.push_envelope(
        events.purchase(token), f"projects/{project}/subscriptions/bench-cold", token
    )
    return "/", json.dumps(envelope).encode(), {"Content-Type": "application/json"}


def first_2xx(proc: common.FunctionProcess, request: Request, timeout: float) -> float:
    """Spawn ``proc`` and return seconds from spawn to its first 2xx answer.

    Raises:
        RuntimeError: a non-2xx answer, an exit, or no answer in ``timeout``.
    """
    path, body, headers = request
    proc.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.target} exited:\n{proc.log()}")
        conn = http.client.HTTPConnection(common.LOCALHOST, proc.port, timeout=timeout)
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
        except ConnectionRefusedError:
            time.sleep(0.005)
            continue
        finally:
            conn.close()
        elapsed = time.perf_counter() - proc.started_at
        if not 200 <= response.status < 300:
            raise RuntimeError(
                f"{proc.target} answered {response.status}:\n{proc.log()}"
            )
        return elapsed
    raise RuntimeError(f"{proc.target}: no answer within {timeout}s\n{proc.log()}")


def parse_importtime(text: str, top: int = 8) -> tuple[float, list[tuple[str, float]]]:
    """Total and top top-level imports (cumulative ms) from ``-X importtime``.

    Top-level means imported by the function code or the framework directly
    (no indentation), which includes lazy imports made by the first request.
    """
    entries: list[tuple[str, float]] = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3:
            continue
        name = parts[2].rstrip()
        if name.startswith("  "):
            continue
        entries.append((name.strip(), int(parts[1]) / 1000))
    total = sum(ms for _, ms in entries)
    return total, sorted(entries, key=lambda e: -e[1])[:top]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every function and its baseline; return the results."""
    from truecount import emulators as emu
    from truecount.capture import CaptureServer
    from truecount.devstack import DEV_SECRETS, dev_config

    with common.emulators() as hosts, CaptureServer() as capture:
        project = common.unique("bench-cold")
        tune(capture)
        emu.ensure_topic(project, TOPIC)
        emu.ensure_topic(project, "truecount-events-dead-letter")
        config = common.write_config(dev_config(capture.url))
        env = {
            **DEV_SECRETS,
            **hosts,
            "GOOGLE_CLOUD_PROJECT": project,
            "TRUECOUNT_CONFIG": str(config),
            "TRUECOUNT_EVENTS_TOPIC": TOPIC,
        }
        results: dict[str, Any] = {}
        try:
            for name in FUNCTIONS:
                results[name] = _measure_function(name, project, env, args)
        finally:
            config.unlink(missing_ok=True)
    return _summarise(results, args)


def _measure_function(
    name: str, project: str, env: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    signature = "cloudevent" if name == "fanout" else "http"
    factories: dict[str, Callable[..., common.FunctionProcess]] = {
        "noop": lambda **kw: common.noop(signature, env=env, **kw),
        "floor": lambda **kw: common.floor(signature, env=env, **kw),
        "truecount": lambda **kw: common.truecount(name, env=env, **kw),
    }
    times: dict[str, list[float]] = {side: [] for side in factories}
    for rnd in range(args.runs):
        order = list(factories) if rnd % 2 == 0 else list(reversed(factories))
        for side in order:
            proc = factories[side]()
            try:
                times[side].append(first_2xx(proc, request_for(name, project), 60))
            finally:
                proc.stop()
        print(
            f"  {name:8} run {rnd + 1}: no-op {times['noop'][-1] * 1000:7.0f} ms  "
            f"SDK floor {times['floor'][-1] * 1000:7.0f} ms  "
            f"truecount {times['truecount'][-1] * 1000:7.0f} ms",
            flush=True,
        )
    imports: dict[str, Any] = {}
    for side, factory in factories.items():
        proc = factory(python_args=["-X", "importtime"])
        try:
            first_2xx(proc, request_for(name, project), 60)
            time.sleep(0.2)
            total, top = parse_importtime(proc.log(tail=100_000))
        finally:
            proc.stop()
        imports[side] = {"total_ms": round(total, 1), "top": top}
    return {
        "runs_ms": {k: [round(v * 1000, 1) for v in vs] for k, vs in times.items()},
        "median_ms": {k: round(common.median(vs) * 1000, 1) for k, vs in times.items()},
        "imports": imports,
    }


def _summarise(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    factors = {}
    floor_factors: dict[str, float] = {}
    for name, r in results.items():
        noop, tc = r["median_ms"]["noop"], r["median_ms"]["truecount"]
        floor = r["median_ms"].get("floor", 0.0)
        factor = tc / noop if noop else 0.0
        factors[name] = round(factor, 2)
        floor_factors[name] = round(floor / noop, 2) if noop else 0.0
        rows.append(
            [
                name,
                noop,
                floor,
                tc,
                f"{factor:.2f}x",
                f"{floor / noop:.2f}x" if noop else "",
                common.verdict(factor <= GOAL_FACTOR),
                r["imports"]["noop"]["total_ms"],
                r["imports"].get("floor", {}).get("total_ms", ""),
                r["imports"]["truecount"]["total_ms"],
            ]
        )
    imports = []
    for name, r in results.items():
        top = ", ".join(f"`{m}` {ms:.0f}" for m, ms in r["imports"]["truecount"]["top"])
        imports.append(f"- **{name}** (ms, cumulative): {top}")
    return {
        "date": common.today(),
        "machine": common.machine(),
        "runs": args.runs,
        "results": results,
        "factors": factors,
        "floor_factors": floor_factors,
        "goal_factor": GOAL_FACTOR,
        "table": common.table(
            [
                "function",
                "no-op median ms",
                "SDK floor median ms",
                "Truecount median ms",
                "factor",
                "SDK floor factor",
                f"goal ≤ {GOAL_FACTOR:g}x",
                "no-op imports ms",
                "SDK floor imports ms",
                "Truecount imports ms",
            ],
            rows,
        ),
        "imports": "\n".join(imports),
    }


def markdown(summary: dict[str, Any], command: str) -> str:
    """The docs section."""
    return f"""Measured {summary["date"]} on {summary["machine"]}.
Command: `{command}`

Spawn of `python -m functions_framework` to the first 2xx, median of \
{summary["runs"]} alternating runs per side; same gunicorn settings \
({common.SERVER_WORKERS} worker x {common.SERVER_THREADS} threads). \
"imports ms" is the sum of top-level cumulative times under `python -X importtime` \
(a separate run; importtime itself slows imports down). The SDK floor \
(`benchmarks/noop/floor.py`) does only the Google SDK work: for ingest and \
webhook it publishes the body through the same Pub/Sub client and waits for the \
ack, for fanout it imports `google.cloud.firestore` and does one `create()`.

{summary["table"]}

Largest top-level imports of each Truecount function under `-X importtime`:

{summary["imports"]}"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="one run (CI)")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs = 1
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    summary = run(args)
    common.save_result("cold_start", summary)
    print()
    print(summary["table"])
    print()
    print(summary["imports"])
    if args.write_docs:
        command = "python -m benchmarks.cold_start" + (" --smoke" if args.smoke else "")
        common.update_docs("cold_start", markdown(summary, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
