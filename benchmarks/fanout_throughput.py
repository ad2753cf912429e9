"""Fan-out throughput: publish to all five platforms at a capture server, exactly once.

Truecount side: ``fanout`` behind a push subscription on the Pub/Sub emulator,
with the Firestore emulator as ledger and identity store, and the dev config's
five platform destinations (GA4, Meta, Google Ads, LinkedIn, TikTok) pointed at
a loopback capture server (the HTTP sink is disabled). ``N`` backend purchases
are published; the run ends when every platform recorded all ``N``, and then
each platform must hold exactly one request per event (no loss, no duplicate).

Baseline: ``noop_event``, a functions-framework CloudEvent function that just
returns, behind its own push subscription on the same emulator, given the same
``N`` messages.

I/O floor: ``fanout_floor`` (``benchmarks/noop/fanout_floor.py``), a push
consumer doing only the I/O every exactly-once fan-out must do, with the plain
SDKs and no Truecount code: one Firestore ``create()``, one POST to each of the
five platform paths of the same capture server (concurrently), one
``update()``. Its deliveries are checked exactly once like Truecount's.

All three processes have the same gunicorn settings, and the rounds alternate
between them. Truecount and the floor are warmed up with ``--warmup`` events
each first: the Firestore emulator is a JVM that needs ~1,000 operations of JIT
warm-up (cold, its CPU per write is 3-4x higher); production Firestore is not.
The CPU of both emulators is measured per round too.

Throughput = ``N`` / (last delivery - first publish).

Run from the repository root::

    .venv/bin/python -m benchmarks.fanout_throughput            # ~1-2 min
    .venv/bin/python -m benchmarks.fanout_throughput --smoke
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import common, events

GOAL_RATIO = 0.50
TOPIC = "truecount-events"
DEAD_LETTER = "truecount-events-dead-letter"
NOOP_TOPIC = "bench-noop-events"
FLOOR_TOPIC = "bench-floor-events"
FLOOR_SOURCE = common.BENCH_DIR / "noop" / "fanout_floor.py"
SIDES = ("noop", "floor", "truecount")
LABELS = {
    "noop": "no-op push consumer",
    "floor": "I/O floor (create + 5 POSTs + update, no Truecount)",
    "truecount": "Truecount fanout (5 platforms)",
}
SETTLE_SECONDS = 1.5


def publish(project: str, topic: str, messages: list[tuple[bytes, dict[str, str]]]):  # type: ignore[no-untyped-def]
    """Publish every message and wait for the acks; return the start time."""
    from google.cloud import pubsub_v1

    client = pubsub_v1.PublisherClient()
    path = client.topic_path(project, topic)
    started = time.time()
    futures = [client.publish(path, data, **attrs) for data, attrs in messages]
    for future in futures:
        future.result(timeout=60)
    return started


def wait_noop_done(proc: common.FunctionProcess, nth: int, timeout: float) -> float:
    """Wait for the ``nth`` ``BENCH_DONE`` line of the no-op; return its time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        marks = re.findall(r"BENCH_DONE ([0-9.]+)", proc.log(tail=100_000))
        if len(marks) >= nth:
            return float(marks[nth - 1])
        time.sleep(0.02)
    raise RuntimeError(f"no-op consumer did not finish round {nth} in {timeout}s")


def wait_delivered(
    capture: Any, start: int, count: int, timeout: float
) -> dict[str, int]:
    """Wait until every platform got ``count`` requests after index ``start``.

    Only counts by path prefix while waiting (cheap: the capture server shares
    this process); the exactly-once check runs once at the end.

    Returns:
        Requests per platform.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = dict.fromkeys(events.PLATFORMS, 0)
        for request in capture.requests[start:]:
            for platform in events.PLATFORMS:
                if request.path.startswith(platform):
                    got[platform] += 1
                    break
        if all(n >= count for n in got.values()):
            return got
        if time.monotonic() >= deadline:
            raise RuntimeError(f"fanout delivered {got} of {count} per platform")
        time.sleep(0.1)


def tokens_by_platform(
    capture: Any, pattern: re.Pattern[str]
) -> dict[str, Counter[str]]:
    """Per platform, the event tokens of the captured requests of this round."""
    seen: dict[str, Counter[str]] = {p: Counter() for p in events.PLATFORMS}
    for request in capture.requests:
        platform = next(
            (p for p in events.PLATFORMS if request.path.startswith(p)), None
        )
        if platform is None:
            continue
        found = set(pattern.findall(request.raw))
        if len(found) == 1:
            seen[platform][found.pop()] += 1
        elif found:
            seen[platform]["<several>"] += 1
    return seen


def last_delivery(capture: Any, pattern: re.Pattern[str]) -> float:
    """The capture time of the last platform request of this round."""
    return max(
        r.at
        for r in capture.requests
        if r.path.startswith(events.PLATFORMS) and pattern.search(r.raw)
    )


class EmulatorCpu:
    """CPU seconds of each emulator's process group (gcloud + its JVM)."""

    def __init__(self, hosts: dict[str, str]) -> None:
        self.groups: dict[str, int] = {}
        for var, host in hosts.items():
            port = host.rsplit(":", 1)[-1]
            pgid = _emulator_pgid(port)
            if pgid is not None:
                self.groups[var.split("_")[0].lower()] = pgid

    def seconds(self) -> dict[str, float]:
        """Per emulator (``pubsub``, ``firestore``): CPU seconds so far."""
        totals = dict.fromkeys(self.groups, 0)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            fields = _stat(entry)
            if fields is None:
                continue
            for name, pgid in self.groups.items():
                if int(fields[2]) == pgid:
                    totals[name] += int(fields[11]) + int(fields[12])
        return {k: v / _CLK_TCK for k, v in totals.items()}


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(entry: Path) -> list[str] | None:
    try:
        text = (entry / "stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _emulator_pgid(port: str) -> int | None:
    """The process group of the emulator JVM listening on ``port``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(args).decode(errors="replace")
        if "java" in text and "emulator" in text and re.search(rf"\b{port}\b", text):
            fields = _stat(entry)
            return int(fields[2]) if fields else None
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the comparison and return the results."""
    from truecount import emulators as emu
    from truecount.capture import CaptureServer
    from truecount.config import parse_config
    from truecount.devstack import DEV_SECRETS, dev_config

    with common.emulators() as hosts, CaptureServer() as capture:
        project = common.unique("bench-fanout")
        common.script_platform_answers(capture)
        text = dev_config(capture.url, overrides="enabled = false")
        if parse_config(text).destinations["sink"].enabled:
            raise SystemExit("could not disable the HTTP sink of the dev config")
        config = common.write_config(text)
        env = {
            **DEV_SECRETS,
            **hosts,
            "GOOGLE_CLOUD_PROJECT": project,
            "TRUECOUNT_CONFIG": str(config),
            "TRUECOUNT_EVENTS_TOPIC": TOPIC,
            "BENCH_EXPECT": str(args.events),
            "BENCH_CAPTURE_URL": capture.url,
        }
        sides = {
            "noop": common.noop("cloudevent", env=env),
            "floor": common.FunctionProcess(
                "fanout_floor", FLOOR_SOURCE, "cloudevent", env=env
            ),
            "truecount": common.truecount("fanout", env=env),
        }
        try:
            for proc in sides.values():
                proc.start()
            for proc in sides.values():
                proc.wait_listening()
            for topic in (TOPIC, DEAD_LETTER, NOOP_TOPIC, FLOOR_TOPIC):
                emu.ensure_topic(project, topic)
            for sub, topic, proc in (
                ("bench-fanout-push", TOPIC, sides["truecount"]),
                ("bench-noop-push", NOOP_TOPIC, sides["noop"]),
                ("bench-floor-push", FLOOR_TOPIC, sides["floor"]),
            ):
                emu.ensure_push_subscription(
                    project,
                    topic,
                    sub,
                    push_endpoint=f"{proc.url}/",
                    dead_letter_topic=DEAD_LETTER,
                    max_delivery_attempts=5,
                    min_backoff_s=1,
                    max_backoff_s=5,
                )
            rounds = _rounds(project, sides, capture, EmulatorCpu(hosts), args)
        finally:
            for proc in sides.values():
                proc.stop()
            config.unlink(missing_ok=True)
    return _summarise(rounds, args)


def _rounds(
    project: str,
    sides: dict[str, common.FunctionProcess],
    capture: Any,
    emulator_cpu: EmulatorCpu,
    args: argparse.Namespace,
) -> dict[str, list[dict[str, Any]]]:
    run_id = uuid.uuid4().hex[:8]
    out: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    topics = {"noop": NOOP_TOPIC, "floor": FLOOR_TOPIC, "truecount": TOPIC}
    profiles: list[Path] = []
    # warm-up, not counted: imports, clients, connections, the emulators' JIT
    warm = [events.purchase(f"b{run_id}w{i}z") for i in range(args.events)]
    publish(
        project, NOOP_TOPIC, [(e.to_json_bytes(), e.pubsub_attributes()) for e in warm]
    )
    wait_noop_done(sides["noop"], 1, args.timeout)
    for side in ("floor", "truecount"):
        start = len(capture.requests)
        warm = [events.purchase(f"b{run_id}w{side[0]}{i}z") for i in range(args.warmup)]
        publish(
            project,
            topics[side],
            [(e.to_json_bytes(), e.pubsub_attributes()) for e in warm],
        )
        wait_delivered(capture, start, len(warm), args.timeout)
        time.sleep(0.5)
    for rnd in range(args.rounds):
        order = list(SIDES) if rnd % 2 == 0 else list(reversed(SIDES))
        for side in order:
            proc = sides[side]
            prefix = f"b{run_id}{side[0]}{rnd}n"
            pattern = re.compile(re.escape(prefix) + r"\d+z")
            evts = [events.purchase(f"{prefix}{i}z") for i in range(args.events)]
            messages = [(e.to_json_bytes(), e.pubsub_attributes()) for e in evts]
            cpu_before = proc.cpu_seconds()
            emu_before = emulator_cpu.seconds()
            profiler = None
            if args.profile and side == "truecount":
                from benchmarks.profile import Profiler

                profiler = Profiler(proc.proc.pid).start()  # type: ignore[union-attr]
                time.sleep(0.5)
            if side == "noop":
                started = publish(project, NOOP_TOPIC, messages)
                ended = wait_noop_done(proc, len(out["noop"]) + 2, args.timeout)
                exact = True
                detail = "consumed"
            else:
                start = len(capture.requests)
                started = publish(project, topics[side], messages)
                wait_delivered(capture, start, args.events, args.timeout)
                ended = last_delivery(capture, pattern)
            cpu = proc.cpu_seconds() - cpu_before
            emu_after = emulator_cpu.seconds()
            if side != "noop":
                time.sleep(SETTLE_SECONDS)
                seen = tokens_by_platform(capture, pattern)
                exact = all(
                    len(c) == args.events and set(c.values()) == {1}
                    for c in seen.values()
                )
                detail = ", ".join(
                    f"{p.strip('/')} {sum(c.values())}" for p, c in seen.items()
                )
            if profiler is not None:
                profiles.append(profiler.stop())
            elapsed = ended - started
            record = {
                "events": args.events,
                "seconds": round(elapsed, 3),
                "events_per_s": round(args.events / elapsed, 1),
                "cpu_ms_per_event": round(1000 * cpu / args.events, 3),
                "emulator_cpu_ms_per_event": {
                    k: round(
                        1000 * (emu_after[k] - emu_before.get(k, 0)) / args.events, 3
                    )
                    for k in emu_after
                },
                "exactly_once": exact,
                "detail": detail,
            }
            out[side].append(record)
            emus = "  ".join(
                f"{k} {v:.2f}" for k, v in record["emulator_cpu_ms_per_event"].items()
            )
            print(
                f"  round {rnd + 1} {side:9} {record['events_per_s']:7.1f} events/s "
                f"({elapsed:.2f} s)  cpu {record['cpu_ms_per_event']:.2f} ms/event  "
                f"emulators ms/event: {emus}  exactly once: {exact}  [{detail}]",
                flush=True,
            )
            if not exact:
                raise SystemExit(f"{side} did not deliver exactly once: " + detail)
    if profiles:
        from benchmarks.profile import summarise

        merged = profiles[0]
        for extra in profiles[1:]:
            with merged.open("a") as handle:
                handle.write(extra.read_text())
        args.profile_summary = summarise(merged)
    return out


def _summarise(
    rounds: dict[str, list[dict[str, Any]]], args: argparse.Namespace
) -> dict[str, Any]:
    agg: dict[str, dict[str, Any]] = {}
    for side, records in rounds.items():
        seconds = sum(r["seconds"] for r in records)
        count = sum(r["events"] for r in records)
        emulators = sorted({k for r in records for k in r["emulator_cpu_ms_per_event"]})
        agg[side] = {
            "events_per_s": round(count / seconds, 1) if seconds else 0.0,
            "cpu_ms_per_event": round(
                sum(r["cpu_ms_per_event"] for r in records) / len(records), 3
            ),
            "emulator_cpu_ms_per_event": {
                k: round(
                    sum(r["emulator_cpu_ms_per_event"].get(k, 0) for r in records)
                    / len(records),
                    2,
                )
                for k in emulators
            },
        }

    def ratio_of(a: str, b: str) -> float:
        den = agg[b]["events_per_s"]
        return agg[a]["events_per_s"] / den if den else 0.0

    ratio = ratio_of("truecount", "noop")
    vs_floor = ratio_of("truecount", "floor")
    floor_ratio = ratio_of("floor", "noop")

    def emu(side: str, name: str) -> str:
        value = agg[side]["emulator_cpu_ms_per_event"].get(name)
        return "" if value is None else f"{value:.2f}"

    def exactly(side: str) -> str:
        return "yes" if all(r["exactly_once"] for r in rounds[side]) else "NO"

    rows: list[list[Any]] = [
        [
            LABELS[side],
            agg[side]["events_per_s"],
            agg[side]["cpu_ms_per_event"],
            emu(side, "firestore"),
            emu(side, "pubsub"),
            "n/a" if side == "noop" else exactly(side),
        ]
        for side in SIDES
    ]
    rows += [
        [
            "**Truecount / no-op**",
            f"**{ratio:.0%}**",
            "",
            "",
            "",
            f"goal ≥ {GOAL_RATIO:.0%}: {common.verdict(ratio >= GOAL_RATIO)}",
        ],
        ["I/O floor / no-op", f"{floor_ratio:.0%}", "", "", "", ""],
        ["**Truecount / I/O floor**", f"**{vs_floor:.0%}**", "", "", "", ""],
    ]
    return {
        "profile": getattr(args, "profile_summary", None),
        "date": common.today(),
        "machine": common.machine(),
        "settings": {
            "events_per_round": args.events,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "workers": common.SERVER_WORKERS,
            "threads": common.SERVER_THREADS,
        },
        "rounds": rounds,
        "aggregate": agg,
        "ratio": round(ratio, 3),
        "ratio_vs_floor": round(vs_floor, 3),
        "floor_ratio": round(floor_ratio, 3),
        "goal_ratio": GOAL_RATIO,
        "table": common.table(
            [
                "consumer",
                "events/s",
                "consumer CPU ms/event",
                "Firestore emulator CPU ms/event",
                "Pub/Sub emulator CPU ms/event",
                "exactly once",
            ],
            rows,
        ),
    }


def markdown(summary: dict[str, Any], command: str) -> str:
    """The docs section."""
    s = summary["settings"]
    return f"""Measured {summary["date"]} on {summary["machine"]}.
Command: `{command}`

{s["rounds"]} alternating rounds of {s["events_per_round"]} backend purchases per \
side, published at once, after an uncounted warm-up ({s.get("warmup", 0)} events \
each for the floor and Truecount: the Firestore emulator's JIT); same gunicorn \
settings \
({s["workers"]} worker x {s["threads"]} threads) and the same emulator push \
subscription settings. Events/s = \
events / (last platform request captured - first publish). Exactly once: each of \
the five platforms received one request per event, checked {SETTLE_SECONDS} s after \
the last one. The I/O floor (`benchmarks/noop/fanout_floor.py`) does only the \
I/O every exactly-once fan-out must do, with the plain SDKs: one Firestore \
`create()`, one POST to each of the five platform paths (concurrently), one \
`update()`. Emulator CPU is that of the emulator's process group during the round.

{summary["table"]}"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=500, help="events per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument(
        "--warmup",
        type=int,
        default=300,
        help="warm-up events of the floor and Truecount (the emulator's JIT)",
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny load (CI)")
    parser.add_argument("--profile", action="store_true", help="py-spy fanout")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.events, args.rounds, args.timeout, args.warmup = 5, 1, 60.0, 2
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    summary = run(args)
    common.save_result("fanout_throughput", summary)
    print()
    print(summary["table"])
    if summary["profile"]:
        from benchmarks.profile import markdown as profile_md

        print()
        print(profile_md(summary["profile"], "fanout under load (py-spy)"))
    if args.write_docs:
        command = "python -m benchmarks.fanout_throughput" + (
            " --smoke" if args.smoke else ""
        )
        common.update_docs("fanout", markdown(summary, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
