"""Servers the tests start (``dagster dev``, ``mlflow ui``, a Spark standalone cluster): a free
loopback port, stopping a server's whole process group by its id, and the screenshot folder.

Every server is started with ``start_new_session=True`` (its own process group, default signal
handling), so :func:`stop_process_group` ends it together with the workers it forked.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Screenshots of the UI tests, one folder per test (git-ignored ``var/``).
UI_ARTIFACTS = REPO / "var" / "test-artifacts" / "ui"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(proc: subprocess.Popen, grace_s: float = 60.0) -> None:
    """SIGTERM to ``proc``'s process group, SIGKILL after ``grace_s`` seconds; waits for it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def screenshot_dir(test_name: str) -> Path:
    """An empty ``var/test-artifacts/ui/<test>/`` for a UI test's screenshots (printed)."""
    out = UI_ARTIFACTS / test_name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    print(f"\nUI screenshots: {out}")
    return out
