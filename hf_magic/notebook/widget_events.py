"""Widget events handled while a cell runs, so that a cell can wait for a button click (approval.py).

A running cell blocks the kernel's shell channel: what the frontend sends meanwhile, a widget's click among it,
waits until the cell ends. ``WidgetEvents.poll()`` takes the messages waiting for the kernel's main shell and
handles the widget (comm) ones now; any other (a cell queued to run next, a completion request) is handed back to
the kernel when the waiting ends, to be handled in order once this cell is done. jupyter-ui-poll does this for
ipykernel 6 through ``Kernel.do_one_iteration``, which ipykernel 7 no longer has; ipykernel 7 hands the main
shell its messages on an in-process socket, read here.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_WIDGET_MESSAGES = ("comm_open", "comm_msg", "comm_close", "comm_info_request", "kernel_info_request")
"""Handled at once: widget messages, and the two questions a frontend's widget manager waits for before it draws
any widget (JupyterLab asks ``comm_info_request`` when the first widget of a kernel appears)."""


class WidgetEvents:
    """The main shell's waiting messages, read from the socket the kernel's own loop would read them from."""

    def __init__(self, kernel: Any, socket: Any, reply_stream: Any) -> None:
        self._kernel, self._socket, self._reply_stream = kernel, socket, reply_stream
        self._held: list[list[Any]] = []

    @classmethod
    def of(cls, shell: Any) -> WidgetEvents | None:
        """The widget events of ``shell``'s kernel; ``None`` outside ipykernel 7 (a terminal, another kernel)."""
        import zmq

        kernel = getattr(shell, "kernel", None)
        manager = getattr(getattr(kernel, "shell_channel_thread", None), "manager", None)
        if manager is not None:  # ipykernel 7 with subshells: the shell channel thread forwards to the main shell
            pair = manager.get_shell_channel_to_subshell_pair(None)
            socket, reply = pair.to_socket, manager.get_subshell_to_shell_channel_socket(None)
        elif kernel is not None and getattr(kernel, "shell_main", None) is not None and kernel.shell_stream:
            socket, reply = kernel.shell_stream.socket, kernel.shell_stream
        else:
            return None
        return cls(kernel, socket, reply) if isinstance(socket, zmq.Socket) else None

    def poll(self) -> int:
        """Handle the widget messages waiting now (others are held); returns how many were handled."""
        import zmq

        handled = 0
        while self._socket.poll(0, zmq.POLLIN):
            frames = self._socket.recv_multipart(copy=False)
            session = self._kernel.session
            idents, parts = session.feed_identities(frames, copy=False)
            # A peek (content=False) leaves the message's signature unrecorded, so the kernel accepts it later.
            kind = session.deserialize(parts, content=False, copy=False)["header"]["msg_type"]
            handler = self._kernel.shell_handlers.get(kind) if kind in _WIDGET_MESSAGES else None
            if handler is None:
                self._held.append(frames)
                continue
            message = session.deserialize(parts, content=True, copy=False)
            try:
                _run_now(handler(self._reply_stream, idents, message))
            except Exception:  # a broken widget callback must not end the wait (the kernel logs it likewise)
                self._kernel.log.error("Widget message handler failed", exc_info=True)
            handled += 1
        return handled

    def release(self) -> None:
        """Give the held messages back to the kernel: it handles them, in order, once this cell ends."""
        held, self._held = self._held, []
        for frames in held:
            self._kernel.io_loop.add_callback(self._kernel.shell_main, None, frames)


def _run_now(result: Any) -> None:
    """Finish a handler's coroutine here: the info requests are ``async def`` without an ``await`` inside, so one
    step runs them to the end (the kernel's loop, which would run them, is blocked by this cell)."""
    if not inspect.iscoroutine(result):
        return
    try:
        result.send(None)
    except StopIteration:
        return
    result.close()  # it waited on something: it cannot finish while the cell runs
    raise RuntimeError("a kernel handler waited on the event loop while a cell ran")


@contextmanager
def widget_events(shell: Any) -> Iterator[WidgetEvents | None]:
    """``WidgetEvents`` of ``shell`` for the block (``None`` where there are none); held messages go back after."""
    events = WidgetEvents.of(shell)
    try:
        yield events
    finally:
        if events is not None:
            events.release()
