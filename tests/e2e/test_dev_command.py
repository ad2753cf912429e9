"""`truecount dev` and `truecount send` as a user runs them, in two terminals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from truecount.emulators import free_port

BIN = Path(sys.executable).parent


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    return state.exists() and state.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_dev_then_send_shows_deliveries_and_ctrl_c_leaves_no_process(
    tmp_path: Path,
) -> None:
    """The README's run command brings the stack up; `truecount send` in a second
    terminal prints what each platform received; Ctrl-C stops every process."""
    offset = free_port() % 20000 + 20000 - 8081
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    dev = subprocess.Popen(
        [str(BIN / "truecount"), "dev", "--port-offset", str(offset),
         "--workdir", str(tmp_path / "wd")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )  # fmt: skip
    banner = ""
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops everything" not in banner and time.monotonic() < deadline:
            line = dev.stdout.readline() if dev.stdout else ""
            if not line and dev.poll() is not None:
                break
            banner += line
        assert "Truecount local stack is up" in banner, banner
        started = _descendants(dev.pid)
        assert len(started) >= 5  # emulators (with their JVMs) and three functions

        sent = subprocess.run(
            [str(BIN / "truecount"), "send", "--port-offset", str(offset), "--wait", "20"],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip

        assert sent.returncode == 0, sent.stdout + sent.stderr
        counts = dict(re.findall(r"^\s+(\S+)\s+(\d+) request", sent.stdout, re.M))
        assert counts == {
            "ga4": "4", "meta": "3", "google-ads": "2",
            "linkedin": "2", "tiktok": "2", "sink": "4",
        }, sent.stdout  # fmt: skip
        assert "purchase(stripe)" in sent.stdout
        assert "close_convert_lead(hubspot)" in sent.stdout
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=60)
    time.sleep(1.0)
    assert [pid for pid in started if _alive(pid)] == []
