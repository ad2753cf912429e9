"""Local Pub/Sub and Firestore emulators: start, wait, stop, reset, admin helpers.

Used by the test fixtures (``tests/conftest.py``) and by the ``truecount dev``
local stack. Each emulator runs ``gcloud ... emulators ... start`` in its own
process group, so :meth:`EmulatorProcess.stop` can end ``gcloud`` and the Java
server it spawns together.

The Pub/Sub admin helpers (:func:`ensure_topic`, :func:`pull`, ...) talk to the
emulator named by ``PUBSUB_EMULATOR_HOST`` and refuse to run without it, so a
test can never touch a real project by accident. The SDK is imported lazily.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

if TYPE_CHECKING:
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

EmulatorKind = Literal["pubsub", "firestore"]

#: The host every emulator binds to: never a public interface.
LOCALHOST = "127.0.0.1"
DEFAULT_STARTUP_TIMEOUT = 60.0
DEFAULT_STOP_GRACE = 5.0
_LOG_TAIL_LINES = 30

SETUP_HINT = (
    "Install the Google Cloud CLI with its emulator components and a Java 11+ "
    "runtime, e.g. `apt-get install google-cloud-cli google-cloud-cli-pubsub-emulator "
    "google-cloud-cli-firestore-emulator openjdk-17-jre-headless` or "
    "`gcloud components install beta pubsub-emulator cloud-firestore-emulator`."
)

#: SDK sub-directories that hold each emulator's server.
_COMPONENT_DIRS: dict[EmulatorKind, str] = {
    "pubsub": "platform/pubsub-emulator",
    "firestore": "platform/cloud-firestore-emulator",
}


class EmulatorError(RuntimeError):
    """An emulator could not be started or did not answer."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    Returns:
        The port number. Another process may take it before you bind it;
        :class:`EmulatorProcess` retries with a new port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


# --- prerequisites ----------------------------------------------------------


def _sdk_root(gcloud: str) -> Path | None:
    """Find the Cloud SDK root from the ``gcloud`` executable, or None."""
    candidate = Path(gcloud).resolve().parent.parent
    if (candidate / "platform").is_dir():
        return candidate
    try:
        result = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    root = result.stdout.strip()
    return Path(root) if result.returncode == 0 and root else None


def check_prerequisites(
    kinds: tuple[EmulatorKind, ...] = ("pubsub", "firestore"),
) -> str | None:
    """Say what is missing to run the emulators, if anything.

    Args:
        kinds: the emulators that will be started.

    Returns:
        None when ``gcloud``, ``java`` and the emulator components are
        installed; otherwise a human message naming what is missing, with a
        setup hint.
    """
    missing: list[str] = []
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        missing.append("`gcloud` is not on PATH")
    if shutil.which("java") is None:
        missing.append("`java` is not on PATH")
    if gcloud is not None:
        root = _sdk_root(gcloud)
        if root is None:
            missing.append("the Cloud SDK root could not be found")
        else:
            missing.extend(
                f"the {kind} emulator component ({root / _COMPONENT_DIRS[kind]})"
                " is not installed"
                for kind in kinds
                if not (root / _COMPONENT_DIRS[kind]).is_dir()
            )
    if not missing:
        return None
    return "Emulators unavailable: " + "; ".join(missing) + ". " + SETUP_HINT


# --- one emulator process ---------------------------------------------------


def _http_get(url: str, timeout: float) -> tuple[int, str]:
    request = urllib.request.Request(url, method="GET")  # noqa: S310 - http://127.0.0.1
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        status: int = response.status
        return status, response.read().decode(errors="replace")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a reused id owned by someone else
        return False
    return True


class EmulatorProcess:
    """One ``gcloud`` emulator, run in its own process group.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with EmulatorProcess("pubsub") as emulator:
            os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host

    Args:
        kind: ``"pubsub"`` or ``"firestore"``.
        port: the port to bind on 127.0.0.1; a free one when None.
        project: the project passed to ``gcloud`` (Pub/Sub only).
        log_path: where the emulator's output goes; a temporary file when None.
        startup_timeout: seconds to wait for the emulator to answer.
        stop_grace: seconds between SIGTERM and SIGKILL in :meth:`stop`.
    """

    def __init__(
        self,
        kind: EmulatorKind,
        *,
        port: int | None = None,
        project: str = "truecount-local",
        log_path: Path | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        stop_grace: float = DEFAULT_STOP_GRACE,
    ) -> None:
        if kind not in _COMPONENT_DIRS:
            raise ValueError(f"unknown emulator kind {kind!r}")
        self.kind: EmulatorKind = kind
        self.project = project
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self._workdir = Path(tempfile.mkdtemp(prefix=f"truecount-{kind}-"))
        self.log_path = log_path or self._workdir / f"{kind}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        #: seconds from launch until the emulator answered
        self.startup_seconds: float | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the value for ``*_EMULATOR_HOST``."""
        return f"{LOCALHOST}:{self.port}"

    @property
    def pgid(self) -> int | None:
        """The process group id (the ``gcloud`` pid), or None before launch."""
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        """The ``gcloud`` command line that starts this emulator."""
        host_port = f"--host-port={self.host}"
        if self.kind == "pubsub":
            data_dir = self._workdir / "pubsub-data"
            data_dir.mkdir(exist_ok=True)
            return [
                "gcloud",
                "beta",
                "emulators",
                "pubsub",
                "start",
                host_port,
                f"--data-dir={data_dir}",
                f"--project={self.project}",
                "--quiet",
            ]
        return ["gcloud", "emulators", "firestore", "start", host_port, "--quiet"]

    def launch(self) -> None:
        """Start the process without waiting for it to answer."""
        if self._process is not None:
            raise EmulatorError(f"{self.kind} emulator already launched")
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.endswith("_EMULATOR_HOST")
        }
        env["CLOUDSDK_CORE_DISABLE_PROMPTS"] = "1"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._started_at = time.monotonic()
        atexit.register(self.stop)

    def wait_ready(self) -> None:
        """Block until the emulator answers ``Ok`` on HTTP GET ``/``.

        Raises:
            EmulatorError: the process exited, or did not answer within
                ``startup_timeout``; the message holds the end of its log.
        """
        process = self._process
        if process is None:
            raise EmulatorError(f"{self.kind} emulator was not launched")
        deadline = self._started_at + self.startup_timeout
        url = f"http://{self.host}/"
        while True:
            if process.poll() is not None:
                raise EmulatorError(
                    f"{self.kind} emulator exited with code {process.returncode} "
                    f"before answering on {self.host}.\n{self.log_tail()}"
                )
            try:
                status, body = _http_get(url, timeout=2.0)
            except (OSError, urllib.error.URLError):
                pass
            else:
                if status == 200 and body.strip() == "Ok":
                    self.startup_seconds = time.monotonic() - self._started_at
                    return
            if time.monotonic() >= deadline:
                raise EmulatorError(
                    f"{self.kind} emulator did not answer on {self.host} within "
                    f"{self.startup_timeout:.0f}s.\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def start(self) -> Self:
        """Launch the emulator and wait until it answers.

        When the port was chosen automatically and someone else took it first,
        it tries once more on a new port.

        Returns:
            self, started.

        Raises:
            EmulatorError: the emulator did not come up (log tail included).
        """
        self.launch()
        try:
            self.wait_ready()
        except EmulatorError:
            if self._fixed_port or "already in use" not in self.log_tail().lower():
                self.stop()
                raise
            self.stop(cleanup=False)
            self._process = None
            self.port = free_port()
            self.launch()
            try:
                self.wait_ready()
            except EmulatorError:
                self.stop()
                raise
        return self

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the emulator's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last lines of {self.log_path} ---\n{tail}"

    def stop(self, cleanup: bool = True) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after the grace.

        Safe to call more than once. Java children of ``gcloud`` are in the
        same group, so none survives.

        Args:
            cleanup: also remove the temporary work directory.
        """
        process = self._process
        if process is not None:
            atexit.unregister(self.stop)
            pgid = process.pid
            if _group_alive(pgid):
                _signal_group(pgid, signal.SIGTERM)
                if not _wait_group(process, pgid, self.stop_grace):
                    _signal_group(pgid, signal.SIGKILL)
                    _wait_group(process, pgid, self.stop_grace)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=self.stop_grace)
        if cleanup:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_group(process: subprocess.Popen[bytes], pgid: int, timeout: float) -> bool:
    """Reap ``process`` and wait until no member of ``pgid`` is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()  # reap the direct child so it leaves the group
        if not _group_alive(pgid):
            return True
        time.sleep(0.05)
    process.poll()
    return not _group_alive(pgid)


# --- both emulators ---------------------------------------------------------


@dataclass
class Emulators:
    """The running emulators of a test session or a local stack."""

    pubsub: EmulatorProcess | None = None
    firestore: EmulatorProcess | None = None
    processes: list[EmulatorProcess] = field(default_factory=list)

    @property
    def pubsub_host(self) -> str:
        """``127.0.0.1:PORT`` of the Pub/Sub emulator."""
        if self.pubsub is None:
            raise EmulatorError("the Pub/Sub emulator was not started")
        return self.pubsub.host

    @property
    def firestore_host(self) -> str:
        """``127.0.0.1:PORT`` of the Firestore emulator."""
        if self.firestore is None:
            raise EmulatorError("the Firestore emulator was not started")
        return self.firestore.host

    def env(self) -> dict[str, str]:
        """``PUBSUB_EMULATOR_HOST`` / ``FIRESTORE_EMULATOR_HOST`` of those started."""
        env: dict[str, str] = {}
        if self.pubsub is not None:
            env["PUBSUB_EMULATOR_HOST"] = self.pubsub.host
        if self.firestore is not None:
            env["FIRESTORE_EMULATOR_HOST"] = self.firestore.host
        return env

    def pids(self) -> list[int]:
        """The ``gcloud`` pid of each launched emulator (also its process group)."""
        return [p.pgid for p in self.processes if p.pgid is not None]

    def stop(self) -> None:
        """Stop every emulator (each by process group), in parallel."""
        if not self.processes:
            return
        with ThreadPoolExecutor(max_workers=len(self.processes)) as pool:
            for future in [pool.submit(p.stop) for p in self.processes]:
                future.result()


def start_emulators(
    pubsub: bool = True,
    firestore: bool = True,
    project: str = "truecount-local",
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
) -> Emulators:
    """Start the requested emulators in parallel and wait for all of them.

    Args:
        pubsub: start the Pub/Sub emulator.
        firestore: start the Firestore emulator.
        project: the project passed to ``gcloud``.
        startup_timeout: seconds each emulator may take to answer.

    Returns:
        The running emulators; call ``.stop()`` when done.

    Raises:
        EmulatorError: one did not start; the others are stopped again.
    """
    result = Emulators()
    if pubsub:
        result.pubsub = EmulatorProcess(
            "pubsub", project=project, startup_timeout=startup_timeout
        )
        result.processes.append(result.pubsub)
    if firestore:
        result.firestore = EmulatorProcess(
            "firestore", project=project, startup_timeout=startup_timeout
        )
        result.processes.append(result.firestore)
    if not result.processes:
        return result
    try:
        with ThreadPoolExecutor(max_workers=len(result.processes)) as pool:
            for future in [pool.submit(p.start) for p in result.processes]:
                future.result()
    except BaseException:
        result.stop()
        raise
    return result


def reset_firestore(host: str, project: str, timeout: float = 10.0) -> None:
    """Delete every document of ``project`` in the Firestore emulator.

    Args:
        host: the emulator's ``127.0.0.1:PORT``.
        project: the project whose ``(default)`` database is wiped.
        timeout: seconds to wait for the answer.

    Raises:
        EmulatorError: the emulator did not answer 200.
    """
    url = f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents"
    request = urllib.request.Request(url, method="DELETE")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status: int = response.status
    except (OSError, urllib.error.URLError) as exc:
        raise EmulatorError(f"Firestore reset on {host} failed: {exc}") from exc
    if status != 200:
        raise EmulatorError(f"Firestore reset on {host} answered {status}")


# --- Pub/Sub admin on the emulator ------------------------------------------


@dataclass(frozen=True)
class PulledMessage:
    """One message pulled from a subscription (already acked)."""

    data: bytes
    attributes: dict[str, str]
    message_id: str


def _emulator_host() -> str:
    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    if not host:
        raise EmulatorError(
            "PUBSUB_EMULATOR_HOST is not set: the emulator helpers only talk to "
            "a local emulator"
        )
    return host


@functools.cache
def _publisher_admin(host: str) -> PublisherClient:
    # ``host`` is only the cache key: the client reads PUBSUB_EMULATOR_HOST.
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient()


@functools.cache
def _subscriber(host: str) -> SubscriberClient:
    from google.cloud import pubsub_v1

    return pubsub_v1.SubscriberClient()


def _topic_path(project: str, topic: str) -> str:
    return (
        topic if topic.startswith("projects/") else f"projects/{project}/topics/{topic}"
    )


def _subscription_path(project: str, sub: str) -> str:
    if sub.startswith("projects/"):
        return sub
    return f"projects/{project}/subscriptions/{sub}"


@contextlib.contextmanager
def _exists_ok() -> Iterator[None]:
    from google.api_core import exceptions

    with contextlib.suppress(exceptions.AlreadyExists):
        yield


def ensure_topic(project: str, topic: str) -> str:
    """Create a topic on the emulator unless it exists.

    Args:
        project: the project id.
        topic: a short name (3+ characters) or a full ``projects/.../topics/...``.

    Returns:
        The full topic path.
    """
    path = _topic_path(project, topic)
    with _exists_ok():
        _publisher_admin(_emulator_host()).create_topic(request={"name": path})
    return path


def ensure_pull_subscription(
    project: str, topic: str, sub: str, ack_deadline: int = 10
) -> str:
    """Create a pull subscription on the emulator unless it exists.

    Args:
        project: the project id.
        topic: the topic (short name or full path); it must exist.
        sub: the subscription (short name or full path).
        ack_deadline: seconds before an unacked message is redelivered.

    Returns:
        The full subscription path.
    """
    path = _subscription_path(project, sub)
    request = {
        "name": path,
        "topic": _topic_path(project, topic),
        "ack_deadline_seconds": ack_deadline,
    }
    with _exists_ok():
        _subscriber(_emulator_host()).create_subscription(request=request)
    return path


def ensure_push_subscription(
    project: str,
    topic: str,
    sub: str,
    push_endpoint: str,
    *,
    dead_letter_topic: str | None = None,
    max_delivery_attempts: int = 5,
    min_backoff_s: int = 1,
    max_backoff_s: int = 10,
) -> str:
    """Create a push subscription on the emulator, or point it at a new endpoint.

    Args:
        project: the project id.
        topic: the topic (short name or full path); it must exist.
        sub: the subscription (short name or full path).
        push_endpoint: the URL the emulator POSTs each message to.
        dead_letter_topic: where messages go after ``max_delivery_attempts``;
            None for no dead-letter policy.
        max_delivery_attempts: deliveries before dead-lettering.
        min_backoff_s: the retry policy's minimum backoff in seconds.
        max_backoff_s: the retry policy's maximum backoff in seconds.

    Returns:
        The full subscription path.
    """
    from google.api_core import exceptions

    path = _subscription_path(project, sub)
    request: dict[str, Any] = {
        "name": path,
        "topic": _topic_path(project, topic),
        "push_config": {"push_endpoint": push_endpoint},
        "retry_policy": {
            "minimum_backoff": {"seconds": min_backoff_s},
            "maximum_backoff": {"seconds": max_backoff_s},
        },
    }
    if dead_letter_topic is not None:
        request["dead_letter_policy"] = {
            "dead_letter_topic": _topic_path(project, dead_letter_topic),
            "max_delivery_attempts": max_delivery_attempts,
        }
    subscriber = _subscriber(_emulator_host())
    try:
        subscriber.create_subscription(request=request)
    except exceptions.AlreadyExists:
        subscriber.modify_push_config(
            request={"subscription": path, "push_config": request["push_config"]}
        )
    return path


def pull(
    project: str,
    sub: str,
    max_messages: int = 100,
    timeout: float = 10.0,
    expect: int | None = None,
) -> list[PulledMessage]:
    """Pull and ack messages from a subscription on the emulator.

    Args:
        project: the project id.
        sub: the subscription (short name or full path).
        max_messages: the most messages to return.
        timeout: overall seconds to keep pulling.
        expect: keep pulling until this many messages arrived (or the
            timeout). When None, return once something arrived and a further
            pull finds nothing more, or at the timeout.

    Returns:
        The messages in arrival order.
    """
    from google.api_core import exceptions

    subscriber = _subscriber(_emulator_host())
    path = _subscription_path(project, sub)
    wanted = max_messages if expect is None else min(expect, max_messages)
    deadline = time.monotonic() + timeout
    messages: list[PulledMessage] = []
    while len(messages) < wanted:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            response = subscriber.pull(
                request={"subscription": path, "max_messages": wanted - len(messages)},
                timeout=min(remaining, 2.0),
                retry=None,
            )
        except exceptions.DeadlineExceeded:
            received: list[Any] = []
        else:
            received = list(response.received_messages)
        if received:
            subscriber.acknowledge(
                request={
                    "subscription": path,
                    "ack_ids": [item.ack_id for item in received],
                }
            )
            messages.extend(
                PulledMessage(
                    data=bytes(item.message.data),
                    attributes=dict(item.message.attributes),
                    message_id=item.message.message_id,
                )
                for item in received
            )
        elif expect is None and messages:
            break
        else:
            time.sleep(0.05)
    return messages
