"""Sampling profiles of a function process with py-spy, summarised by frame.

``Profiler(pids).start()`` ... ``.stop()`` records the processes (gunicorn
arbiter and worker; only the thread holding the GIL, so the shares are of
Python CPU time, not of waiting) in py-spy's collapsed
("raw") format; :func:`summarise` turns it into the frames with the largest
inclusive and self shares of the active samples. Needs ``py-spy`` on PATH or
next to the interpreter (``pip install py-spy``); the benchmarks only profile
when asked (``--profile``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    """The py-spy executable, or None."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


class Profiler:
    """Record one process tree with py-spy until :meth:`stop`."""

    def __init__(self, pid: int, rate: int = 250) -> None:
        exe = py_spy()
        if exe is None:
            raise SystemExit("--profile needs py-spy: pip install py-spy")
        fd, name = tempfile.mkstemp(prefix="bench-pyspy-", suffix=".txt")
        os.close(fd)
        self.path = Path(name)
        self.command = [
            exe,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--nonblocking",
            "--gil",
            "--output",
            str(self.path),
        ]
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Profiler:
        """Start sampling."""
        self._proc = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return self

    def stop(self) -> Path:
        """Stop sampling, wait for the file, and return its path."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        return self.path


def _short(file: str) -> str:
    for marker in ("site-packages/", "shared/", "functions/", "lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def summarise(path: Path, top: int = 15) -> dict[str, Any]:
    """Inclusive and self shares of the frames in a py-spy raw profile.

    Returns:
        ``{"samples": n, "inclusive": [(frame, share)], "self": [...],
        "truecount": [...]}`` where ``truecount`` holds the inclusive shares of
        frames in Truecount's own code.
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = []
        for raw in stack.split(";"):
            match = _FRAME.match(raw.strip())
            if match is None:
                frames.append(raw.strip())
                continue
            frames.append(f"{match['func']} ({_short(match['file'])})")
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count

    def shares(counter: Counter[str], keep: Any = None) -> list[tuple[str, float]]:
        items = [(f, n) for f, n in counter.most_common() if keep is None or keep(f)]
        return [(f, round(n / total, 3)) for f, n in items[:top]] if total else []

    return {
        "samples": total,
        "inclusive": shares(inclusive, lambda f: not f.startswith("process ")),
        "self": shares(own),
        "truecount": shares(
            inclusive,
            lambda f: (
                not f.startswith("process ") and ("truecount/" in f or "main.py" in f)
            ),
        ),
    }


def markdown(summary: dict[str, Any], title: str) -> str:
    """A Markdown block with the top frames of a profile."""
    lines = [f"**{title}** ({summary['samples']} samples holding the GIL)", ""]
    lines.append("Truecount frames, inclusive share of GIL-holding samples:")
    lines += [f"- {share:.0%} `{frame}`" for frame, share in summary["truecount"]]
    lines += ["", "Leaf frames (self time):"]
    lines += [
        f"- {share:.0%} `{frame}`"
        for frame, share in summary["self"][:12]
        if not frame.startswith("process ")
    ]
    return "\n".join(lines)
