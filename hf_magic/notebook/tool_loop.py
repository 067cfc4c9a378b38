"""The tool loop: a reply that may take several model calls, with the tools the model asks for run in between.

Each model step streams into the turn (``ReplyContext.step``). A step that asks for tools becomes a ``ToolStep``:
its text and thinking move out of ``turn.reply``, its calls run one after another on this thread (the kernel's, for
a cell), and their results go back to the model as tool messages (``Turn.messages``). The loop ends when the model
answers, or after ``max_steps`` rounds of tools. A ``ToolLoop`` is the ``Responder`` that ``ChatSession.send`` takes.

What can go wrong with a call goes back to the model as its result, and shows in the call's block: the tool raised,
the model named no such tool or sent arguments that do not fit, the user declined. An interrupt (the kernel's, or
``session.stop()``) stops the running tool; what finished is kept.
"""

from __future__ import annotations

import ctypes
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import BaseMessage
from langchain_core.tools import BaseTool, ToolException
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ValidationError

from .. import config
from ..backend import Usage
from ..chat_format import normalize_tool_choice
from ..errors import ContextWindowError, InvalidInputError
from .reply_stream import ReplyContext, StepOutcome
from .turns import SessionEvent, ToolCall, ToolStep, Turn
from .variables import cut, describe_value

DEFAULT_MAX_STEPS = 8
MAX_RESULT_CHARS = 8000
"""Longest tool result a model is sent, whatever its context: the rest is cut with a marker."""
MIN_RESULT_CHARS = 200
CHARS_PER_TOKEN = 3
"""How many characters of a result one token holds, counted low (prose has ~4, code and JSON fewer): a result cut
to fit leaves room for the next step rather than overflowing it."""
TOKENS_PER_CALL = 24
"""What the template adds around one tool result (role markers, the call id)."""

DECLINED = "The user declined to run this tool call."
INTERRUPTED = "The call was interrupted by the user."
NOT_RUN = "Not run: the user interrupted the tool loop before this call."
MAX_STEPS_REACHED = "max_steps"
"""``Turn.finish_reason`` of a turn whose loop stopped at its step limit, still calling tools."""
CONTEXT_FULL = "context_full"
"""``Turn.finish_reason`` of a turn whose tool results left no room in the context for the next step."""

Decision = Literal["run", "skip"]
Approver = Callable[[ToolCall, threading.Event], Decision]
"""Asks the user whether ``call`` may run (``cancel`` is the session's stop flag): "run" or "skip"."""


@dataclass
class LoopTool:
    """A tool the loop may run: a langchain tool (its schema is what the model sees), and whether the user must
    approve each call first."""

    tool: BaseTool
    needs_approval: bool = False
    source: str = "function"
    """Where it comes from, for listings: "function", "notebook" or "mcp:SERVER"."""

    @property
    def name(self) -> str:
        return self.tool.name


def skip_unasked(call: ToolCall, cancel: threading.Event) -> Decision:
    """The approver where nobody can be asked: nothing that needs approval runs."""
    return "skip"


class ToolLoop:
    """A reply that runs the model's tool calls until it answers (``ChatSession.send(..., responder=ToolLoop(...))``).

    Args:
        tools: the tools the model is offered; names must be unique.
        tool_choice: ``bind_tools``' ``tool_choice`` ("auto", "required", a tool name) for the first step only: a
            forced call every step would never let the model answer.
        max_steps: the most rounds of tool calls; then the loop stops and says so (``MAX_STEPS_REACHED``).
        approve: asked before each call of a tool that needs approval.
        on_change: told after the turn's steps changed (a step began, a call started or ended), with the turn.
        context_length: the model's context in tokens, when known: results are cut to fit in what is left.

    Raises:
        InvalidInputError: no tools, two tools of one name, ``max_steps`` under 1, or a ``tool_choice`` that names
            no tool.
    """

    def __init__(
        self,
        tools: Sequence[LoopTool],
        *,
        tool_choice: str | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        approve: Approver = skip_unasked,
        on_change: Callable[[Turn], None] | None = None,
        context_length: int | None = None,
    ) -> None:
        if not tools:
            raise InvalidInputError("The tool loop needs at least one tool: pass --tools NAME.")
        names = [tool.name for tool in tools]
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            raise InvalidInputError(f"Two tools are called {', '.join(doubled)}: a model could not tell them apart.")
        if max_steps < 1:
            raise InvalidInputError(f"--max-steps must be 1 or more, got {max_steps}.")
        self.tools = {tool.name: tool for tool in tools}
        self.specs = [convert_to_openai_tool(tool.tool) for tool in tools]
        normalize_tool_choice(tool_choice, self.specs)  # a choice naming no tool fails here, before any step
        self.tool_choice = tool_choice
        self.max_steps = max_steps
        self.approve = approve
        self.on_change = on_change
        self.context_length = context_length

    # ----------------------------------------------------------------------------- the loop
    def __call__(self, context: ReplyContext) -> None:
        turn = context.turn
        for number in range(self.max_steps):
            kwargs = {**context.kwargs, "tools": self.specs}
            choice = self.tool_choice if number == 0 else None
            if choice is not None:
                kwargs["tool_choice"] = choice
            try:
                outcome = context.step(context.messages + step_messages(turn), kwargs)
            except ContextWindowError:
                if not turn.steps:
                    raise  # the user's own message does not fit: the session says so in one line
                turn.finish_reason = CONTEXT_FULL  # the tools' results filled it: keep what they did
                return
            calls = _calls(outcome)
            if not calls or turn.interrupted:
                return
            turn.steps.append(ToolStep(text=turn.reply, reasoning=turn.reasoning, calls=calls))
            turn.reply, turn.reasoning = "", ""
            self._changed(context)
            budget = self._result_budget(outcome.usage, kwargs, len(calls))
            for index, call in enumerate(calls):
                if not self._run(call, budget, context):
                    for later in calls[index + 1 :]:
                        if later.status == "pending":
                            later.result = NOT_RUN
                    turn.interrupted = True
                    self._changed(context)
                    return
        turn.finish_reason = MAX_STEPS_REACHED
        self._changed(context)

    def _changed(self, context: ReplyContext) -> None:
        if self.on_change is not None:
            self.on_change(context.turn)
        context.callbacks.emit(SessionEvent("tool", turn=context.turn))

    def _run(self, call: ToolCall, budget: int, context: ReplyContext) -> bool:
        """Run one call (after approval, when its tool needs it) and record what came of it; False when the user
        interrupted it."""
        if call.status != "pending":  # refused already: its arguments did not parse
            return True
        tool = self.tools.get(call.name)
        if tool is None:
            call.status = "error"
            call.result = f"Unknown tool {call.name!r}: call one of {', '.join(self.tools)}."
            self._changed(context)
            return True
        try:
            if context.cancel.is_set():
                raise KeyboardInterrupt
            if tool.needs_approval:
                call.status = "asking"
                self._changed(context)
                if self.approve(call, context.cancel) != "run":
                    call.status, call.result = "declined", DECLINED
                    return True
            call.status = "running"
            self._changed(context)
            started = time.perf_counter()
            try:
                with stopped_by(context.cancel):
                    value = tool.tool.invoke(call.args)
                call.status, call.result = "ok", cut(result_text(value), budget)
            except ValidationError as exc:
                call.status, call.result = "error", f"Invalid arguments for {call.name}: {_validation_summary(exc)}"
            except ToolException as exc:  # a tool's own account of what went wrong
                call.status, call.result = "error", cut(f"{call.name} failed: {exc}", budget)
            except Exception as exc:  # the tool's own failure is the model's to read, not the session's
                call.status, call.result = "error", cut(f"{call.name} raised {type(exc).__name__}: {exc}", budget)
            finally:
                call.duration = time.perf_counter() - started
        except KeyboardInterrupt:
            call.status, call.result = "interrupted", INTERRUPTED
            return False
        finally:
            self._changed(context)
        return True

    def _result_budget(self, usage: Usage | None, kwargs: dict[str, Any], calls: int) -> int:
        """Characters each of ``calls`` results may have: what the context has left after this step and the next
        reply's tokens, shared between the calls, and never over ``MAX_RESULT_CHARS``."""
        if not self.context_length or usage is None:
            return MAX_RESULT_CHARS
        reserve = kwargs.get("max_new_tokens") or config.DEFAULT_MAX_NEW_TOKENS
        free = self.context_length - usage.total_tokens - reserve - TOKENS_PER_CALL * calls
        return max(MIN_RESULT_CHARS, min(MAX_RESULT_CHARS, free * CHARS_PER_TOKEN // calls))


def step_messages(turn: Turn) -> list[BaseMessage]:
    """The turn's tool steps so far as messages: each step's AIMessage with its calls, then their results."""
    return turn.messages()[1:-1]


def _calls(outcome: StepOutcome) -> list[ToolCall]:
    """The calls a step asked for; one whose arguments did not parse is refused at once, with the reason."""
    calls = [
        ToolCall(name=call["name"], args=dict(call.get("args") or {}), id=call.get("id") or _call_id(index))
        for index, call in enumerate(outcome.tool_calls)
    ]
    for index, invalid in enumerate(outcome.invalid_tool_calls, len(calls)):
        raw = invalid.get("args")
        reason = invalid.get("error") or "the arguments are not a JSON object"
        calls.append(
            ToolCall(
                name=invalid.get("name") or "unknown",
                id=invalid.get("id") or _call_id(index),
                status="error",
                result=f"Invalid tool call ({reason}): {cut(str(raw), 300)}. Send the arguments as one JSON object.",
            )
        )
    return calls


def _call_id(index: int) -> str:
    return f"call_{index}"


def result_text(value: Any) -> str:
    """What a tool returned, as the text the model reads: strings as they are, JSON for plain data, DataFrames and
    arrays as the bounded tables ``-i`` makes, anything else as ``str``."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple, int, float, bool)) or value is None:
        try:
            return json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):  # plain containers holding other values
            pass
    return describe_value(value)


def _validation_summary(exc: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or 'arguments'}: {error['msg']}" for error in exc.errors()
    ]
    return "; ".join(problems[:5])


# ------------------------------------------------------------------------------- stopping
@contextmanager
def stopped_by(cancel: threading.Event) -> Iterator[None]:
    """While the block runs on this thread, ``cancel`` being set (``session.stop()``) raises KeyboardInterrupt in it.

    On the main thread a real SIGINT is sent, as the kernel's interrupt does, so a tool blocked in ``time.sleep`` or
    I/O wakes up; on another thread the exception is raised when the tool next runs Python code.
    """
    target = threading.get_ident()
    done, lock = threading.Event(), threading.Lock()
    fired = False

    def watch() -> None:
        nonlocal fired
        while not done.is_set():
            if cancel.wait(0.05):
                with lock:
                    if not done.is_set():
                        fired = True
                        _interrupt(target)
                return

    watcher = threading.Thread(target=watch, name="hf_magic-tool-stop", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        with lock:
            done.set()
            if fired and target != threading.main_thread().ident:
                _set_async_exception(target, None)  # not delivered yet: it must not fire after the tool returned
        # Not joined: the watcher sees ``done`` within 50 ms and ends by itself; the lock keeps it from firing late.


def _interrupt(thread_id: int) -> None:
    if thread_id == threading.main_thread().ident and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.pthread_kill(thread_id, signal.SIGINT)
    else:
        _set_async_exception(thread_id, KeyboardInterrupt)


def _set_async_exception(thread_id: int, exception: type[BaseException] | None) -> None:
    # CPython's documented C API for raising in another thread (what a debugger's "interrupt thread" uses).
    # None goes as NULL, which clears a pending exception.
    argument = None if exception is None else ctypes.py_object(exception)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), argument)
