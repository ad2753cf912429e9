"""Shared harness of the benchmarks: processes, emulators, CPU time, results, docs.

Every benchmark runs a baseline and Truecount side by side in one run and
reports their ratio: the machine is shared and noisy, so absolute numbers do
not carry from one run to the next, ratios do.

Function processes are started exactly as ``truecount.devstack`` starts them
(``python -m functions_framework --target X --source ... --signature-type ...``),
which on Linux serves with gunicorn's threaded worker. Both sides get the same
server settings through the variables functions-framework reads: ``WORKERS``
and ``THREADS`` (see :data:`SERVER_WORKERS`, :data:`SERVER_THREADS`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "benchmarks"
NOOP_SOURCE = BENCH_DIR / "noop" / "main.py"
FLOOR_SOURCE = BENCH_DIR / "noop" / "floor.py"
FUNCTIONS_DIR = REPO_ROOT / "functions"
DOCS_PATH = REPO_ROOT / "docs" / "benchmarks.md"
LOCALHOST = "127.0.0.1"

#: gunicorn workers and threads per function process, identical on both sides.
#: functions-framework's own default is 1 worker and 4 threads per CPU.
SERVER_WORKERS = 1
SERVER_THREADS = 8

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def results_dir() -> Path:
    """Where result JSON files go: ``BENCH_RESULTS_DIR`` or benchmarks/results."""
    path = Path(os.environ.get("BENCH_RESULTS_DIR") or BENCH_DIR / "results")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_result(name: str, data: dict[str, Any]) -> Path:
    """Write ``<results>/<name>.json`` and return its path."""
    path = results_dir() / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path


def load_result(name: str) -> dict[str, Any] | None:
    """Read ``<results>/<name>.json``, or None when it does not exist."""
    path = results_dir() / f"{name}.json"
    if not path.exists():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def today() -> str:
    """The UTC date, ISO format."""
    return dt.datetime.now(dt.UTC).date().isoformat()


def machine() -> str:
    """One line describing the machine and runtime."""
    return (
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}"
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    """The median of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


# --- function processes --------------------------------------------------------


def server_env() -> dict[str, str]:
    """The server settings both sides get."""
    return {
        "WORKERS": str(SERVER_WORKERS),
        "THREADS": str(SERVER_THREADS),
        "GUNICORN_LOG_LEVEL": "error",
        "PYTHONUNBUFFERED": "1",
    }


@dataclass
class FunctionProcess:
    """One ``python -m functions_framework`` process in its own process group.

    Args:
        target: the entry point.
        source: the ``main.py``.
        signature: ``http`` or ``cloudevent``.
        env: extra environment (merged over ``os.environ`` and :func:`server_env`).
        port: the port; a free one when 0.
        python_args: interpreter options, e.g. ``["-X", "importtime"]``.
        log_path: where stdout and stderr go; a temporary file when None.
            Removed by :meth:`stop` unless ``BENCH_KEEP_LOGS`` is set.
    """

    target: str
    source: Path
    signature: str = "http"
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    python_args: list[str] = field(default_factory=list)
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port()
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"bench-{self.target}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{LOCALHOST}:{self.port}"

    def command(self) -> list[str]:
        """The command line, as ``truecount.devstack`` builds it."""
        return [
            sys.executable,
            *self.python_args,
            "-m",
            "functions_framework",
            "--target",
            self.target,
            "--source",
            str(self.source),
            "--signature-type",
            self.signature,
            "--host",
            LOCALHOST,
            "--port",
            str(self.port),
        ]

    def start(self) -> FunctionProcess:
        """Spawn the process (does not wait for it to listen)."""
        assert self.log_path is not None
        env = {**os.environ, **server_env(), **self.env}
        with self.log_path.open("wb") as log:
            self.started_at = time.perf_counter()
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        return self

    def wait_listening(self, timeout: float = 60.0) -> None:
        """Block until the port accepts connections.

        Raises:
            RuntimeError: the process exited or did not listen in time.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.target} exited with {self.proc.returncode}:\n{self.log()}"
                )
            with contextlib.suppress(OSError):
                socket.create_connection((LOCALHOST, self.port), timeout=0.5).close()
                return
            time.sleep(0.02)
        raise RuntimeError(f"{self.target} did not listen within {timeout}s")

    def log(self, tail: int = 40) -> str:
        """The last lines of the process output."""
        assert self.log_path is not None
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])

    def pids(self) -> list[int]:
        """Every live process in this process group (gunicorn arbiter and worker)."""
        if self.proc is None:
            return []
        pgid = self.proc.pid
        found: list[int] = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[2]) == pgid:
                found.append(int(entry))
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by the live group members."""
        total = 0
        for pid in self.pids():
            fields = _stat_fields(pid)
            if fields is not None:
                total += int(fields[11]) + int(fields[12])
        return total / _CLK_TCK

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL it after 5 s; safe to call twice."""
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        self.proc = None
        if self.log_path is not None and not os.environ.get("BENCH_KEEP_LOGS"):
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> FunctionProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state is [0])."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def noop(signature: str = "http", **kwargs: Any) -> FunctionProcess:
    """The bare no-op baseline (``noop_http`` or ``noop_event``)."""
    target = "noop_http" if signature == "http" else "noop_event"
    return FunctionProcess(target, NOOP_SOURCE, signature, **kwargs)


def floor(signature: str = "http", **kwargs: Any) -> FunctionProcess:
    """The SDK floor (``benchmarks/noop/floor.py``): the SDK work and nothing else.

    ``floor_publish`` (HTTP: publish the raw body, wait for the ack) or
    ``floor_create`` (CloudEvent: one Firestore ``create()``).
    """
    target = "floor_publish" if signature == "http" else "floor_create"
    return FunctionProcess(target, FLOOR_SOURCE, signature, **kwargs)


def truecount(name: str, **kwargs: Any) -> FunctionProcess:
    """One Truecount function: ``ingest``, ``webhook`` or ``fanout``."""
    signature = "cloudevent" if name == "fanout" else "http"
    return FunctionProcess(name, FUNCTIONS_DIR / name / "main.py", signature, **kwargs)


# --- emulators -------------------------------------------------------------------


@contextlib.contextmanager
def emulators(pubsub: bool = True, firestore: bool = True) -> Iterator[dict[str, str]]:
    """Yield ``*_EMULATOR_HOST`` values, starting the emulators unless set.

    When ``PUBSUB_EMULATOR_HOST`` / ``FIRESTORE_EMULATOR_HOST`` are already in
    the environment (the CI smoke test passes its session emulators), they are
    reused; otherwise they are started on free ports and stopped at the end.
    The values are also put into ``os.environ`` for the SDK clients of this
    process.
    """
    from truecount import emulators as emu

    wanted = {"PUBSUB_EMULATOR_HOST": pubsub, "FIRESTORE_EMULATOR_HOST": firestore}
    hosts = {k: os.environ[k] for k, on in wanted.items() if on and os.environ.get(k)}
    started = None
    if len(hosts) < sum(wanted.values()):
        problem = emu.check_prerequisites()
        if problem is not None:
            raise SystemExit(problem)
        started = emu.start_emulators(
            pubsub=pubsub and "PUBSUB_EMULATOR_HOST" not in hosts,
            firestore=firestore and "FIRESTORE_EMULATOR_HOST" not in hosts,
        )
        hosts.update(started.env())
    os.environ.update(hosts)
    try:
        yield hosts
    finally:
        if started is not None:
            started.stop()


def unique(prefix: str) -> str:
    """A short unique name, e.g. for a project id on the emulators."""
    return f"{prefix}-{os.getpid()}-{time.time_ns() % 10**9:x}"


def write_config(text: str) -> Path:
    """Write a TOML config to a temporary file and return its path."""
    fd, name = tempfile.mkstemp(prefix="bench-config-", suffix=".toml")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return Path(name)


# --- docs --------------------------------------------------------------------------


def update_docs(section: str, markdown: str, path: Path = DOCS_PATH) -> None:
    """Replace the text between ``<!-- bench:<section> -->`` markers.

    Args:
        section: the section id, e.g. ``ingest``.
        markdown: the new content.
        path: the document.

    Raises:
        SystemExit: the markers are missing.
    """
    text = path.read_text()
    start, end = f"<!-- bench:{section} -->", f"<!-- /bench:{section} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{path}: markers {start} ... {end} not found")
    replacement = f"{start}\n{markdown.strip()}\n{end}"
    path.write_text(pattern.sub(lambda _: replacement, text))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    """``met`` or ``MISSED``."""
    return "met" if ok else "MISSED"


OAUTH_TOKEN = {"access_token": "dev-token", "expires_in": 3600, "token_type": "Bearer"}
TIKTOK_OK = {"code": 0, "message": "OK", "request_id": "bench"}


def script_platform_answers(capture: Any) -> None:
    """Make a capture server answer like the platforms on success.

    The Google Ads OAuth token exchange gets a token, TikTok gets its
    ``{"code": 0}`` envelope; the others accept the default ``{"ok": true}``.

    Args:
        capture: an in-process ``truecount.capture.CaptureServer``.
    """
    capture.script("/oauth/token", [], body=OAUTH_TOKEN)
    capture.script("/tiktok", [], body=TIKTOK_OK)
