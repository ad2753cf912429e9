"""Run every benchmark in order, then the cost model; optionally update the docs.

Run from the repository root::

    .venv/bin/python -m benchmarks.run_all --write-docs    # < 5 min
    .venv/bin/python -m benchmarks.run_all --smoke

The emulators are started once and shared by every benchmark (through
``PUBSUB_EMULATOR_HOST`` / ``FIRESTORE_EMULATOR_HOST``).
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks import (
    cold_start,
    common,
    cost,
    fanout_throughput,
    firestore_ops,
    ingest_throughput,
)

MODULES = (ingest_throughput, cold_start, fanout_throughput, firestore_ops)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    extra = [
        a
        for a, on in (("--smoke", args.smoke), ("--write-docs", args.write_docs))
        if on
    ]
    started = time.monotonic()
    with common.emulators():
        for module in MODULES:
            print(f"\n== {module.__name__} ==", flush=True)
            module.main(extra)
    print("\n== benchmarks.cost ==", flush=True)
    cost.main(["--write-docs"] if args.write_docs else [])
    print(f"\nall benchmarks: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
