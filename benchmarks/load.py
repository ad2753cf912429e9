"""A small closed-loop HTTP/1.1 load generator (asyncio, keep-alive).

``concurrency`` connections each send a request, wait for the whole answer,
and send the next, until ``duration`` seconds passed or ``max_requests`` were
sent, whichever comes first. Requests are pre-encoded bytes, cycled in order,
so the generator spends little CPU per request (it shares the machine with the
server). Only 127.0.0.1 may be targeted.

Used for both sides of every comparison, with the same settings.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from benchmarks.common import LOCALHOST, percentile

#: Seconds a run may overrun its duration before in-flight requests are dropped.
GRACE_SECONDS = 10.0


def build_request(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    port: int = 80,
) -> bytes:
    """Encode one HTTP/1.1 request.

    Args:
        method: e.g. ``POST``.
        path: path and query.
        body: the body.
        headers: extra headers.
        port: the server port (for the Host header).

    Returns:
        The raw request bytes.
    """
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {LOCALHOST}:{port}",
        "User-Agent: truecount-bench/1",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class LoadResult:
    """What one load run measured."""

    requests: int = 0
    duration: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0  # connection errors and timeouts

    @property
    def ok(self) -> int:
        """Answers with a 2xx status."""
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)

    @property
    def rps(self) -> float:
        """2xx answers per second."""
        return self.ok / self.duration if self.duration else 0.0

    def p(self, pct: float) -> float:
        """Latency percentile in milliseconds."""
        return percentile(self.latencies, pct) * 1000

    def merge(self, other: LoadResult) -> LoadResult:
        """Add another run (durations add up)."""
        return LoadResult(
            self.requests + other.requests,
            self.duration + other.duration,
            self.statuses + other.statuses,
            self.latencies + other.latencies,
            self.errors + other.errors,
        )


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    chunked = close = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        if key == "content-length":
            length = int(value.strip())
        elif key == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif key == "connection" and value.strip().lower() == "close":
            close = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, close


async def _connection(
    port: int,
    requests: Iterator[bytes],
    deadline: float,
    budget: list[int],
    result: LoadResult,
) -> None:
    reader = writer = None
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            if writer is None:
                reader, writer = await asyncio.open_connection(LOCALHOST, port)
            assert reader is not None
            started = time.perf_counter()
            try:
                writer.write(next(requests))
                status, close = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                result.errors += 1
                writer.close()
                writer = None
                continue
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] += 1
            result.requests += 1
            if close:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


async def _run(
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    duration: float,
    max_requests: int,
) -> LoadResult:
    result = LoadResult()
    cycle = itertools.cycle(requests)
    budget = [max_requests]
    started = time.perf_counter()
    deadline = started + duration
    tasks = [
        asyncio.create_task(_connection(port, cycle, deadline, budget, result))
        for _ in range(concurrency)
    ]
    _, pending = await asyncio.wait(tasks, timeout=duration + GRACE_SECONDS)
    for task in pending:
        task.cancel()
    result.duration = time.perf_counter() - started
    return result


def run_load(
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    duration: float,
    max_requests: int = 1_000_000,
) -> LoadResult:
    """Drive ``127.0.0.1:port`` with ``requests`` (cycled) for ``duration`` s.

    Args:
        port: the server port on 127.0.0.1.
        requests: pre-encoded requests (see :func:`build_request`).
        concurrency: connections, each with one request in flight.
        duration: seconds to run.
        max_requests: an upper bound on requests sent.

    Returns:
        The counts, statuses and latencies.
    """
    if not requests:
        raise ValueError("no requests to send")
    return asyncio.run(_run(port, requests, concurrency, duration, max_requests))
