"""Bare functions-framework no-op functions: the baselines of every benchmark.

* ``noop_http``: answers 204 to any request, reading nothing (ingest, webhook).
* ``noop_event``: a CloudEvent function that just returns (fanout). It counts
  the messages it saw and, each time the count reaches a multiple of
  ``BENCH_EXPECT`` (when set), prints ``BENCH_DONE <unix time>``, so the
  harness knows when the last message of a round was consumed. A counter and
  one comparison per call: nothing a real consumer would not also pay.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import functions_framework

_lock = threading.Lock()
_seen = 0
_expect = int(os.environ.get("BENCH_EXPECT", "0") or 0)


@functions_framework.http
def noop_http(request: Any) -> tuple[str, int]:
    """Answer 204 with no body."""
    return "", 204


@functions_framework.cloud_event
def noop_event(cloud_event: Any) -> None:
    """Return at once; report when ``BENCH_EXPECT`` messages were seen."""
    global _seen
    with _lock:
        _seen += 1
        done = _expect > 0 and _seen % _expect == 0
    if done:
        print(f"BENCH_DONE {time.time():.6f}", flush=True)
