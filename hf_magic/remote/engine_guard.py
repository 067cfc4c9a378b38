"""Runs an engine's command and stops it, with everything it started, when the process that launched it goes away.

Run as a script by the engine's own Python (``python engine_guard.py COMMAND...``), so it uses the standard
library only: that Python (a vLLM venv, say) need not have hf_magic installed.

The command runs in a process group of its own, so its helpers (vLLM's engine core) are stopped with it. The guard
reads its stdin, a pipe whose other end only the launching process holds: end of file means that process closed
it on purpose or died, even by SIGKILL, where no exit handler runs. Either way the group gets SIGTERM, then SIGKILL
after a grace period. SIGTERM to the guard does the same; and should the guard itself be killed, the engine's main
process gets SIGTERM from the kernel (Linux's parent-death signal) and shuts its helpers down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

GRACE_S = 15.0
"""How long the engine may take to shut down cleanly before it is killed."""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a recycled id owned by someone else: not ours any more
        return False
    return True


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_group(pgid: int) -> None:
    """SIGTERM, then SIGKILL to whatever of the group is still there after GRACE_S."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.2)
    _signal_group(pgid, signal.SIGKILL)


def _die_with_the_guard() -> None:
    """In the child, before it runs: on Linux, SIGTERM when the guard itself dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python engine_guard.py COMMAND...", file=sys.stderr)
        return 2
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_the_guard)
    stopping = threading.Event()

    def stop(*_: object) -> None:
        if not stopping.is_set():
            stopping.set()
            # From a thread: the main thread keeps reaping the child while the group winds down.
            threading.Thread(target=_stop_group, args=(child.pid,), daemon=True).start()

    def watch_launcher() -> None:
        # The raw descriptor, not sys.stdin: a daemon thread blocked inside a buffered reader makes the
        # interpreter abort at exit ("could not acquire lock for <stdin> at interpreter shutdown").
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a kernel interrupt is for the kernel, not its engine
    threading.Thread(target=watch_launcher, daemon=True).start()
    code = child.wait()
    # The engine's main process is gone; helpers it left behind go too.
    if _group_alive(child.pid):
        _stop_group(child.pid)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.stdout.flush()
    # No interpreter finalization: the stdin watcher may still be blocked in read().
    os._exit(main(sys.argv[1:]))
