"""A real IPython kernel (ipykernel, through jupyter_client) that a test drives as a frontend does: it runs cells,
reads what the kernel publishes, clicks widget buttons by sending their comm messages, and interrupts the kernel.

``running_kernel(folder)`` starts one with this repository on its path, and shuts it down after the block."""

from __future__ import annotations

import contextlib
import queue
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class Kernel:
    """A started kernel and its client; ``messages`` keeps every IOPub message read so far."""

    def __init__(self, manager: Any, client: Any) -> None:
        self.manager, self.client = manager, client
        self.messages: list[dict[str, Any]] = []
        self._replies: dict[str, dict[str, Any]] = {}

    def run(self, code: str, timeout: float = 600) -> dict[str, Any]:
        """Run ``code`` and wait for its reply; raises when the cell failed."""
        reply = self.wait_reply(self.submit(code), timeout)
        if reply["content"]["status"] != "ok":
            raise AssertionError(f"{code!r} failed: {reply['content'].get('ename')}: {reply['content'].get('evalue')}")
        return reply

    def submit(self, code: str) -> str:
        """Send ``code`` to run, without waiting: the id of its request."""
        return str(self.client.execute(code, allow_stdin=False))

    def wait_reply(self, msg_id: str, timeout: float = 600) -> dict[str, Any]:
        """The shell reply to request ``msg_id`` (replies to other requests are kept for their own wait)."""
        deadline = time.monotonic() + timeout
        while msg_id not in self._replies:
            self.drain()
            try:
                reply = self.client.get_shell_msg(timeout=0.2)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no reply to {msg_id} within {timeout} s") from None
                continue
            self._replies[reply["parent_header"].get("msg_id")] = dict(reply)
        self.drain()
        return self._replies.pop(msg_id)

    def drain(self) -> None:
        while True:
            try:
                self.messages.append(self.client.get_iopub_msg(timeout=0.05))
            except queue.Empty:
                return

    def wait_for(self, found: Callable[[dict[str, Any]], bool], timeout: float = 180) -> dict[str, Any]:
        """The first IOPub message (read so far or to come) for which ``found`` is true."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            self.drain()
            for message in self.messages[seen:]:
                if found(message):
                    return message
            seen = len(self.messages)
            time.sleep(0.05)
        raise TimeoutError("the kernel never published the message waited for")

    def button(self, description: str, after: int = 0) -> str:
        """The comm id of the newest ipywidgets Button labelled ``description`` opened after message ``after``."""

        def is_button(message: dict[str, Any]) -> bool:
            state = message["content"].get("data", {}).get("state", {})
            return (
                message["msg_type"] == "comm_open"
                and state.get("_model_name") == "ButtonModel"
                and state.get("description") == description
            )

        self.wait_for(lambda message: is_button(message) and self.messages.index(message) >= after)
        return str([m for m in self.messages[after:] if is_button(m)][-1]["content"]["comm_id"])

    def click(self, comm_id: str) -> None:
        """What the frontend sends when a Button is clicked."""
        content = {"comm_id": comm_id, "data": {"method": "custom", "content": {"event": "click"}}}
        self.client.shell_channel.send(self.client.session.msg("comm_msg", content))

    def outputs(self, msg_id: str) -> list[dict[str, Any]]:
        """The display and stream messages a request produced (display updates included)."""
        kinds = ("display_data", "update_display_data", "stream", "execute_result", "error")
        return [m for m in self.messages if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] in kinds]


@contextlib.contextmanager
def running_kernel(folder: Path) -> Iterator[Kernel]:
    """An ipykernel of this Python in ``folder``, with this repository importable (tests.support)."""
    from jupyter_client.manager import KernelManager

    manager = KernelManager(kernel_name="python3")
    manager.kernel_spec.argv[0] = sys.executable  # this venv's Python, whatever the spec on the machine says
    manager.start_kernel(cwd=str(folder))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=180)
        kernel = Kernel(manager, client)
        kernel.run(f"import sys\nsys.path.insert(0, {str(REPO)!r})")
        yield kernel
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
