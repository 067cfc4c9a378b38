"""Stopping the real servers that test fixtures start."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """Ask ``process`` to exit (SIGTERM); kill it if it has not within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_answers(
    probe_url: str, process: subprocess.Popen, name: str, timeout: float, describe_log: Callable[[], str] = str
) -> None:
    """Poll ``probe_url`` until it answers 200; fail at once if ``process`` exits, or after ``timeout`` s.

    ``describe_log`` tells where to look (or what the log says) in the error.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode}: {describe_log()}")
        try:
            with urllib.request.urlopen(probe_url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{name} did not answer {probe_url} within {timeout:.0f} s: {describe_log()}")
