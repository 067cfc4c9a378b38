"""``%%hfchat`` / ``%hfchat``: parse the cell, hand it to a ChatSession, show the reply as it streams."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections import ChainMap
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.utils.process import arg_split
from traitlets import Bool, Dict, Enum, Float, Integer, List, Unicode, Union, observe

from ..config import DEFAULT_MAX_NEW_TOKENS
from ..errors import ContextWindowError, HfMagicError, InvalidInputError
from . import log_commands, mcp_servers, session_commands  # noqa: F401  (register %hfchat log, mcp and the built-in subcommands)
from .cell_errors import CellErrors
from .cell_images import ImageFields, option_images
from .cell_options import (
    Subcommand,
    cell_key,
    check_options,
    interpolate,
    parse_subcommand,
    reply_message,
    spec_from_options,
)
from .code_blocks import code_cell_text
from .engine_commands import configure_engines  # also registers %hfchat engine
from .kernel_log import kernel_log, watch_kernel_sessions
from .line_commands import registered
from .map_cell import check_map_options, run_map_cell
from .model_spec import ModelSpec
from .progress_views import ProgressView, make_progress_view
from .render import (
    ErrorLine,
    Reply,
    SentImages,
    usage_line,
)
from .reply_views import NotebookReplyView, ReplyView, TerminalReplyView
from .session import ChatSession, all_sessions, get_session
from .session_tools import cell_tool_loop
from .turns import Turn
from .variables import describe_value


# --------------------------------------------------------------------------------- magics
@magics_class
class HfChatMagics(Magics):
    """``%%hfchat`` (send the cell to the model) and ``%hfchat SUBCOMMAND``. Defaults: ``%config HfChatMagics``."""

    model = Unicode("default", help="Model used when a session starts: 'default', a hub id or a folder.").tag(
        config=True
    )
    backend = Enum(["pipeline", "endpoint"], "pipeline", help="Backend used when a session starts.").tag(config=True)
    endpoint_url = Unicode(None, allow_none=True, help="OpenAI-compatible server for backend='endpoint'.").tag(
        config=True
    )
    provider = Unicode(None, allow_none=True, help="Inference provider for backend='endpoint'.").tag(config=True)
    system_prompt = Unicode(None, allow_none=True, help="System prompt of new sessions.").tag(config=True)
    max_new_tokens = Integer(DEFAULT_MAX_NEW_TOKENS, allow_none=True, help="Longest reply, in tokens.").tag(config=True)
    temperature = Float(None, allow_none=True, help="Sampling temperature; unset or 0 is greedy.").tag(config=True)
    history_limit = Integer(None, allow_none=True, help="Most recent turns sent with each message (None: all).").tag(
        config=True
    )
    stream = Bool(True, help="Show the reply as it is generated.").tag(config=True)
    output_format = Enum(["markdown", "text"], "markdown", help="How replies are rendered.").tag(config=True)
    show_usage = Bool(True, help="Show the usage line under each reply.").tag(config=True)
    interpolate = Bool(False, help="Replace {name} in cells with user variables (as -i does).").tag(config=True)
    verbose = Bool(False, help="Show tracebacks for errors (also: %hfchat debug on).").tag(config=True)
    tools = List(
        Unicode(), [], help="Tools of new sessions: names of notebook functions, or 'notebook' (see %hfchat tools)."
    ).tag(config=True)
    display_mode = Enum(
        ["auto", "notebook", "terminal"], "auto", help="Rich display + widget bars, or plain text; auto detects."
    ).tag(config=True)
    log = Bool(True, help="Write every turn to the turn log ($HF_MAGIC_HOME/logs.db); HF_MAGIC_NO_LOG=1 wins.").tag(
        config=True
    )
    engine_python = Union(
        [Unicode(), Dict()],
        default_value=None,
        allow_none=True,
        help="Python that runs --engine vllm / llama.cpp, or one per engine: {'vllm': '~/vllm/bin/python'} "
        "(default: the kernel's own).",
    ).tag(config=True)
    engine_args = Dict(help='More server arguments per engine, e.g. {"vllm": "--tensor-parallel-size 2"}.').tag(
        config=True
    )

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.last_error: BaseException | None = None
        self.cell_errors = CellErrors()
        """The errors of this kernel's cells (``post_run_cell`` feeds it): ``{Err[n]}`` and ``%hfchat fix``."""
        kernel_log().switched_on = self.log
        self._engine_defaults()

    @observe("engine_python", "engine_args")
    def _engine_defaults(self, _change: Any = None) -> None:
        configure_engines(self.engine_python, self.engine_args)

    @observe("log")
    def _log_switched(self, change: dict[str, Any]) -> None:
        kernel_log().switched_on = bool(change["new"])

    # ------------------------------------------------------------------------- context
    @property
    def notebook(self) -> bool:
        if self.display_mode != "auto":
            return self.display_mode == "notebook"
        return type(self.shell).__name__ == "ZMQInteractiveShell"

    def _cell_id(self) -> str | None:
        kernel = getattr(self.shell, "kernel", None)
        try:
            parent = kernel.get_parent() if kernel is not None else None
        except Exception:  # older kernels need a channel argument; no id then
            return None
        metadata = (parent or {}).get("metadata") or {}
        cell_id = metadata.get("cellId")
        return str(cell_id) if cell_id else None

    def _session(self, name: str | None) -> ChatSession:
        name = name or "default"
        fresh = name not in all_sessions()
        session = get_session(name)
        if fresh and not session.loaded and not session.turns:
            session.spec = ModelSpec(
                model=self.model,
                backend="endpoint" if self.backend == "endpoint" else "pipeline",
                endpoint_url=self.endpoint_url or None,
                provider=self.provider or None,
            )
            session.settings.system_prompt = self.system_prompt
        session.settings.history_limit = self.history_limit
        return session

    def show(self, obj: Any) -> None:
        """Display ``obj`` in the cell (its repr in a terminal)."""
        if self.notebook:
            from IPython.display import display

            display(obj)
        else:
            print(repr(obj))

    def _error(self, exc: BaseException) -> None:
        """One red line; the traceback only when verbose."""
        self.last_error = exc
        message = str(exc) if isinstance(exc, HfMagicError) else f"{type(exc).__name__}: {exc}"
        hint = "" if isinstance(exc, HfMagicError) or self.verbose else " (run %hfchat debug for the traceback)"
        if self.notebook:
            from IPython.display import display

            display(ErrorLine(message + hint))
        else:
            print(f"Error: {message}{hint}", file=sys.stderr)
        if self.verbose:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)

    def _progress_view(self) -> ProgressView:
        return make_progress_view(self.notebook)

    def parse_cell_options(self, line: str) -> argparse.Namespace:
        """The ``%%hfchat`` line as options; quotes are removed the shell way (``-s "You're nice"``)."""
        try:
            argv = arg_split(line, posix=True, strict=True)
        except ValueError as exc:
            raise InvalidInputError(f"Cannot parse the %%hfchat line ({exc}): check the quotes.") from exc
        try:
            return self.hfchat.parser.parse_args(argv)
        except UsageError as exc:
            raise InvalidInputError(f"{exc}: see %%hfchat? for the options.") from exc

    # --------------------------------------------------------------------------- magic
    @magic_arguments()
    @argument("-m", "--model", default=None, help="Model: 'default', a hub id (org/name) or a local folder.")
    @argument("--backend", choices=["pipeline", "endpoint"], default=None, help="Run locally or call a server.")
    @argument("--endpoint-url", default=None, help="URL of an OpenAI-compatible server (implies --backend endpoint).")
    @argument("--provider", default=None, help="Inference provider for --backend endpoint.")
    @argument(
        "--engine",
        default=None,
        help="Start a serving engine for the model and chat through it: vllm or llama.cpp "
        "(its Python: %%config HfChatMagics.engine_python).",
    )
    @argument("--gguf-file", default=None, help="The .gguf file of a GGUF repo to run on llama.cpp.")
    @argument("-s", "--system", default=None, help="System prompt (kept for later cells of the session).")
    @argument("--temperature", type=float, default=None, help="Sampling temperature; 0 is greedy.")
    @argument("--max-new-tokens", type=int, default=None, help="Longest reply, in tokens.")
    @argument("--quantize", choices=["4bit", "8bit", "none"], default=None, help="8bit or 4bit weights.")
    @argument(
        "--device",
        default=None,
        help="torch device for local models: cpu, cuda, cuda:1, mps... (default: the GPU if there is one)",
    )
    @argument("--dtype", default=None, help="torch dtype for local models: bfloat16, float16, float32, auto.")
    @argument("--session", default=None, help="Name of an independent conversation (default: 'default').")
    @argument(
        "--history-limit", type=int, default=None, metavar="N", help="Send only the N most recent turns with this cell."
    )
    @argument("--new", action="store_true", help="Start a fresh conversation (the model stays loaded).")
    @argument(
        "--think",
        dest="think",
        action="store_const",
        const=True,
        default=None,
        help="Ask a reasoning model to think first (enable_thinking / reasoning_effort).",
    )
    @argument("--no-think", dest="think", action="store_const", const=False, help="Ask it to answer directly.")
    @argument("--no-stream", action="store_true", help="Show the reply only when it is complete.")
    @argument("-o", "--output", default=None, metavar="VAR", help="Store the reply (an AIMessage; --map: the table).")
    @argument(
        "-f",
        "--format",
        choices=["markdown", "text", "code"],
        default=None,
        help="Render the reply as Markdown or text; code: also put its code blocks into a new cell below.",
    )
    @argument(
        "-i",
        "--interpolate",
        action="store_true",
        help="Replace {name}, {In[n]}, {Out[n]} and {Err[n]} (cell n's exception) with their values, brace-safe; "
        "DataFrames and arrays become bounded tables and previews; a PIL image or matplotlib Figure is sent as an "
        "image.",
    )
    @argument(
        "--tools",
        default=None,
        metavar="NAME[,NAME...]",
        help="Let the model call these functions of the notebook ('notebook': list, describe and read variables and "
        "cells, run code after you approve); the session's tools and MCP servers join (%%hfchat tools, mcp).",
    )
    @argument(
        "--tool-choice",
        default=None,
        metavar="auto|required|NAME",
        help="Whether the first step must call a tool (required) or that one (NAME); later steps may answer.",
    )
    @argument("--max-steps", type=int, default=None, metavar="N", help="Most rounds of tool calls (default 8).")
    @argument(
        "--map",
        default=None,
        metavar="DATA",
        help="Send the cell once per row of DATA (a DataFrame, Series or list): {column} takes each row's value; "
        "the replies come back as a new column of a copy, stored with -o VAR. Rows are batched on a local model, "
        "sent concurrently to a server; a run again resumes (only missing or failed rows are sent).",
    )
    @argument("--into", default=None, metavar="COLUMN", help="With --map: the replies' column (default: reply).")
    @argument(
        "--schema", default=None, metavar="NAME", help="With --map: a pydantic model; each of its fields is a column."
    )
    @argument(
        "--concurrency",
        default=None,
        metavar="N",
        help="With --map: rows per batch on a local model, requests in flight to a server (defaults 32 and 8).",
    )
    @argument("--fresh", action="store_true", help="With --map: send every row again instead of resuming.")
    @argument(
        "--image",
        action="append",
        default=None,
        metavar="PATH_OR_URL",
        help="Send an image with the message (repeatable); needs a vision-language model or endpoint.",
    )
    @line_cell_magic
    def hfchat(self, line: str, cell: str | None = None) -> None:
        """Chat with a Hugging Face model: the cell body is your message.

        Line magic: ``%hfchat history | reset | usage | export PATH [--thinking] | load PATH | unload | status |
        models | panel | debug [on|off] | fix | restore [NOTEBOOK] | engine [status|log]``, each with an optional
        ``--session NAME``.
        ``fix`` sends the last error and its cell's code and puts the corrected code into a new cell;
        ``restore`` rebuilds the conversation from a saved notebook's ``%%hfchat`` outputs (default: this one).
        Capabilities add their own (``%hfchat NAME ...``, see ``line_commands.py``).
        """
        try:
            if cell is None:
                self._run_subcommand(parse_subcommand(line))
            else:
                self.run_cell(self.parse_cell_options(line), cell)
        except HfMagicError as exc:
            self._error(exc)
        except KeyboardInterrupt:
            self._error(HfMagicError("Interrupted before the reply started: nothing was sent; run the cell again."))
        except Exception as exc:  # keep the kernel's session alive whatever happened
            self._error(exc)

    def run_cell(self, options: argparse.Namespace, cell: str, *, may_interpolate: bool = True) -> None:
        """Send ``cell`` with ``options`` (a parsed ``%%hfchat`` line): the whole of a ``%%hfchat`` cell."""
        session = self._session(options.session)
        # Every option is checked before anything changes (reset, system prompt, load): a typo costs nothing.
        check_options(options)
        check_map_options(options)
        spec_from_options(session.spec, options)  # a bad --dtype, --backend... (ModelSpec checks itself)
        if options.map is not None:
            run_map_cell(self, session, options, cell)
            return
        # The cell's trailing newline is not part of the message (small models answer it differently).
        text = cell.strip()
        used: dict[str, str] = {}
        images = option_images(options.image)  # a missing file fails now, before any load
        if may_interpolate and (options.interpolate or self.interpolate):
            user_ns = self.shell.user_ns if self.shell is not None else {}
            fields = ImageFields(first_number=len(images) + 1, otherwise=describe_value)
            text = interpolate(text, ChainMap(user_ns, {"Err": self.cell_errors}), fields, used)
            images += fields.blocks
        if not text.strip():
            raise InvalidInputError("The cell is empty: write your message below the %%hfchat line.")
        max_new_tokens = options.max_new_tokens if options.max_new_tokens is not None else self.max_new_tokens
        if max_new_tokens is not None and max_new_tokens <= 0:  # say it in the magic's terms, before any load
            raise InvalidInputError(f"--max-new-tokens must be a positive integer, got {max_new_tokens}: try 256.")
        # The whole cell holds the session: a panel acting on it meanwhile waits, or is told a reply is running.
        with session.exclusive("run this cell"):
            try:
                self._send_cell(session, options, text, cell, max_new_tokens, images)
            except ContextWindowError as exc:
                remedy = (
                    "shorten the cell, send fewer earlier turns (--history-limit N), "
                    "or start over (%hfchat reset, or --new)"
                )
                if used:  # the message grew by interpolation: say which value made it too big
                    field, rendered = max(used.items(), key=lambda item: len(item[1]))
                    remedy = (
                        f"{{{field}}} is the biggest value in it ({len(rendered):,} characters): interpolate a "
                        f"smaller part of it (e.g. {field}.head() or a slice), {remedy}"
                    )
                raise exc.with_remedy(remedy) from exc

    def _send_cell(
        self,
        session: ChatSession,
        options: argparse.Namespace,
        text: str,
        cell: str,
        max_new_tokens: int | None,
        images: list[dict[str, Any]] | None = None,
    ) -> None:
        spec = spec_from_options(session.spec, options)
        tool_loop = cell_tool_loop(self, session, options)  # names checked before anything changes or loads
        if options.new:
            session.reset()
        if options.system is not None:
            session.settings.system_prompt = options.system or None
        if options.history_limit is not None:
            session.settings.history_limit = options.history_limit
        stream = self.stream and not options.no_stream
        fmt = options.format or self.output_format
        view: ReplyView
        if self.notebook:
            from IPython.display import display

            view = NotebookReplyView(spec.model, stream, display)
        else:
            view = TerminalReplyView(stream)
        progress = self._progress_view()
        try:
            session.load(spec, progress=progress)
        finally:
            progress.close()
        if images:
            self.show(SentImages(images))  # what the model is asked about, above its reply
        if tool_loop is not None:
            tool_loop.on_change, tool_loop.context_length = view.steps, session.context_length
        try:
            turn = session.send(
                text,
                key=cell_key(cell, self._cell_id()),
                images=images or (),
                on_token=view.token,
                on_reasoning=view.reasoning,
                enable_thinking=options.think,
                temperature=options.temperature if options.temperature is not None else self.temperature,
                max_new_tokens=max_new_tokens,
                responder=tool_loop,
            )
        except Exception:
            view.fail()
            raise
        usage = usage_line(turn, session.usage_total(), session.context_fill()) if self.show_usage else ""
        view.finish(Reply(turn, usage, "markdown" if fmt == "code" else fmt, session.name))
        if options.output:
            assert self.shell is not None  # a magic always runs in a shell
            self.shell.user_ns[options.output] = reply_message(turn)
        if fmt == "code":
            self._code_to_new_cell(turn)

    def _code_to_new_cell(self, turn: Turn) -> None:
        """``-f code``: the reply's fenced code blocks become the next cell (below this one, not replacing it)."""
        code = code_cell_text(turn.reply)
        if code is None:
            print("The reply has no code block: no cell was added.")
        elif self.shell is not None:
            self.shell.set_next_input(code, replace=False)

    # ------------------------------------------------------------------------ subcommands
    def _run_subcommand(self, command: Subcommand) -> None:
        if command.name == "debug":
            self._debug(command.argument)
            return
        registered()[command.name].handler(self, self._session(command.session), command.words)

    def _debug(self, argument: str | None) -> None:
        if argument in ("on", "off"):
            self.verbose = argument == "on"
            print(f"Tracebacks {'on' if self.verbose else 'off'}.")
        elif self.last_error is None:
            print("No error so far.")
        else:
            error = self.last_error
            traceback.print_exception(type(error), error, error.__traceback__, file=sys.stdout)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext hf_magic``: register ``%%hfchat`` / ``%hfchat``, and record the errors cells raise."""
    magics = HfChatMagics(shell=ipython)
    ipython.register_magics(magics)
    ipython.events.register("post_run_cell", magics.cell_errors.record)
    watch_kernel_sessions(ipython.user_ns)  # every kernel-wide session's turns go to the turn log


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext hf_magic``: remove the magics (sessions and loaded models stay in memory)."""
    manager = ipython.magics_manager
    # The loaded instance, found through the public magics table: %%hfchat is one of its bound methods.
    magics = getattr(manager.magics["cell"].get("hfchat"), "__self__", None)
    if isinstance(magics, HfChatMagics):
        try:
            ipython.events.unregister("post_run_cell", magics.cell_errors.record)
        except ValueError:  # registered by someone else's load, or already gone
            pass
    for kind in ("line", "cell"):
        manager.magics[kind].pop("hfchat", None)
    mcp_servers.stop_all()  # the servers the sessions started end with the extension
    # IPython has no public way to unregister magics: the two tables above are its public traitlets; the
    # instance it keeps in its registry is replaced by the next %load_ext.
    ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, HfChatMagics)]
