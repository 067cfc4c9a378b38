"""ChatPanel: an ipywidgets chat window over a ChatSession (model picker, settings, transcript, send/stop, usage).

Entry point: ``ChatPanel(session).display()`` (what ``%hfchat panel`` runs), or ``hf_magic.ChatPanel()`` as the
last expression of a cell. The panel is a view: it asks its ``ChatSession`` to load, send, stop, reset and export,
and redraws itself from the session's events, so turns sent by ``%%hfchat`` cells appear here too.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from .. import config
from ..errors import HfMagicError, InvalidInputError
from ..local.loading import is_default_model
from ..progress import ProgressEvent
from .model_catalog import ModelChoice, describe_choice, fit_summary, hub_search, local_choices
from .model_spec import ModelSpec
from .progress_views import ProgressState, format_bytes
from .render import STILL_THINKING, THINKING_CSS, markdown_to_html, thinking_block_html
from .session import ChatSession, get_session
from .turns import SessionEvent, Settings, Turn

_REDRAW_SECONDS = 0.08
"""Redraw a streaming reply or a progress bar at most this often: each redraw is a message to the browser."""

_PROVIDERS = ("auto", "hf-inference", "cerebras", "fireworks-ai", "groq", "nebius", "novita", "sambanova", "together")
_AUTO = "auto"

_CSS = """<style>
.hf-magic-panel { border: 1px solid var(--jp-border-color2, #ddd); border-radius: 8px; padding: 8px 10px;
  background: var(--jp-layout-color1, #fff); max-width: 900px; }
.hf-magic-panel .hfm-title { font-weight: 600; font-size: 1.05em; }
.hf-magic-panel .hfm-status, .hf-magic-panel .hfm-subtitle { font-size: .9em; color: var(--jp-ui-font-color2, #666); }
.hf-magic-panel .hfm-turn { display: flex; flex-direction: column; gap: 6px; margin: 4px 2px; }
.hf-magic-panel .hfm-msg { max-width: 85%; padding: 6px 10px; border-radius: 10px; line-height: 1.45; }
.hf-magic-panel .hfm-msg p { margin: .2em 0; }
.hf-magic-panel .hfm-msg .highlight { border-radius: 6px; overflow: hidden; margin: .3em 0; }
.hf-magic-panel .hfm-msg pre { padding: .4em .6em; margin: 0; overflow-x: auto; }
.hf-magic-panel .hfm-user { align-self: flex-end; background: rgba(33, 150, 243, .18); }
.hf-magic-panel .hfm-assistant { align-self: flex-start; background: var(--jp-layout-color2, #eee); }
.hf-magic-panel .hfm-role { font-size: .72em; font-weight: 600; letter-spacing: .04em; text-transform: uppercase;
  opacity: .65; margin-bottom: 2px; }
.hf-magic-panel .hfm-meta { font-size: .75em; opacity: .6; margin-top: 3px; font-family: var(--jp-code-font-family,
  monospace); }
.hf-magic-panel .hfm-badge { display: inline-block; font-size: .75em; padding: 0 6px; border-radius: 8px;
  background: #ffe0b2; color: #8a4b00; margin-left: 6px; text-transform: none; letter-spacing: 0; }
.hf-magic-panel .hfm-cursor { animation: hfm-blink 1s steps(2, start) infinite; }
@keyframes hfm-blink { to { visibility: hidden; } }
.hf-magic-panel .hfm-empty { opacity: .55; font-style: italic; padding: 14px; text-align: center; }
.hf-magic-panel .hfm-error { color: var(--jp-error-color1, #c62828); font-weight: 600; }
.hf-magic-panel .hfm-usage { font-size: .8em; opacity: .7; font-family: var(--jp-code-font-family, monospace); }
.hf-magic-panel .hfm-label { text-align: right; padding-right: 8px; line-height: 28px; }
.hf-magic-panel .hfm-note { font-size: .85em; opacity: .75; }
.hf-magic-panel .hf-magic-transcript { border: 1px solid var(--jp-border-color2, #ddd); border-radius: 6px;
  background: var(--jp-layout-color1, #fff); }
</style>"""

# Shift+Enter in the message box presses Send. Widgets offer no key events, so a small script (run once per
# page) listens in the capture phase, before ipywidgets stops the key from reaching the notebook. Blurring
# first makes the text box sync its value to the kernel before the click arrives.
_SHIFT_ENTER_JS = """
if (!window.__hfMagicShiftEnter) {
  window.__hfMagicShiftEnter = true;
  document.addEventListener('keydown', (event) => {
    if (event.key !== 'Enter' || !event.shiftKey || !event.target || !event.target.closest) return;
    const box = event.target.closest('.hf-magic-input');
    const panel = box && box.closest('.hf-magic-panel');
    const send = panel && panel.querySelector('.hf-magic-send');
    if (!send || send.disabled) return;
    event.preventDefault();
    event.stopPropagation();
    event.target.blur();
    send.click();
    event.target.focus();
  }, true);
}
"""


def _button(description: str, icon: str, style: str = "", tooltip: str = "", width: str = "auto") -> widgets.Button:
    return widgets.Button(
        description=description, icon=icon, button_style=style, tooltip=tooltip, layout=widgets.Layout(width=width)
    )


def _parse_number(text: str, name: str, kind: type[float] | type[int]) -> float | int | None:
    """A settings field: empty means the model's default; anything else must be a number."""
    text = text.strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError as exc:
        word = "a whole number" if kind is int else "a number"
        raise InvalidInputError(f"{name} must be {word}, got {text!r}: fix it, or clear it for the default.") from exc


def _show_number(value: float | int | None) -> str:
    return "" if value is None else str(value)


class ChatPanel:
    """A chat window over a ``ChatSession``: pick and load a model, tune generation, chat, stop, export.

    Args:
        session: the conversation to show; by default the kernel-wide session ``session_name``, the one
            ``%%hfchat`` cells use, so both see the same turns.
        session_name: which named session to use when ``session`` is not given.

    Example:
        >>> from hf_magic import ChatPanel
        >>> panel = ChatPanel()          # the default session, shared with %%hfchat
        >>> panel.display()              # or leave ``panel`` as the last expression of a cell
        >>> panel.send("Hello!"); panel.wait()
    """

    def __init__(self, session: ChatSession | None = None, *, session_name: str = "default") -> None:
        self.session = session or get_session(session_name)
        self._lock = threading.RLock()
        self._worker: threading.Thread | None = None
        self._task: str | None = None
        self._choices: dict[str, ModelChoice] = {}
        self._turn_views: dict[int, tuple[Turn, widgets.HTML]] = {}
        self._live: dict[int, tuple[Turn, widgets.HTML, float]] = {}
        self._progress = ProgressState()
        self._progress_rows: dict[str, tuple[widgets.FloatProgress, widgets.HTML]] = {}
        self._progress_drawn: dict[str, float] = {}
        self._loading_done = True
        self._generating = self.session.busy  # kept by events: the session's lock outlives "turn_finished"
        self._syncing = False
        self._build()
        self._show_spec(self.session.spec)
        self._show_settings(self.session.settings)
        self._redraw_transcript()
        self._redraw_usage()
        self._redraw_status()
        self._redraw_buttons()
        self._unsubscribe: Callable[[], None] | None = self.session.subscribe(self._on_event)

    # ------------------------------------------------------------------------ public API
    @property
    def widget(self) -> widgets.VBox:
        """The panel's root widget (to embed it in a layout of your own)."""
        return self.root

    def display(self) -> None:
        """Show the panel in the notebook output (what ``%hfchat panel`` calls)."""
        from IPython.display import display

        display(self.root)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.root._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        """Stop listening to the session and close every widget of the panel."""
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        _close_tree(self.root)

    def selected_spec(self) -> ModelSpec:
        """The model the pickers describe (what Load would load).

        Raises:
            InvalidInputError: the chosen combination is invalid (e.g. quantizing an endpoint).
        """
        model = self.model_id.value.strip() or self.model_list.value or "default"
        if self.backend.value == "endpoint":
            return ModelSpec(
                model=model,
                backend="endpoint",
                endpoint_url=self.endpoint_url.value.strip() or None,
                provider=self.provider.value.strip() or None,
            )
        return ModelSpec(
            model=model,
            backend="pipeline",
            device=None if self.device.value == _AUTO else self.device.value,
            dtype=None if self.dtype.value == _AUTO else self.dtype.value,
            quantize=None if self.quantize.value == "none" else self.quantize.value,
        )

    def load(self) -> None:
        """Load the selected model on a worker thread, with progress bars in the panel."""
        try:
            spec = self.selected_spec()
        except HfMagicError as exc:
            self._show_error(str(exc))
            return
        self._start("load", lambda: self.session.load(spec))

    def unload(self) -> None:
        """Free the loaded model's memory (the conversation is kept)."""
        if self.session.busy or self._task:
            self._show_error("A reply or a load is running: press Stop or wait, then unload.")
            return
        self._clear_error()
        try:
            self.session.unload()
        except HfMagicError as exc:  # a %%hfchat cell started a reply meanwhile
            self._show_error(str(exc))

    def send(self, text: str | None = None) -> None:
        """Send ``text`` (default: the message box) on a worker thread; the reply streams into the transcript."""
        message = self.input.value if text is None else text
        if not message.strip():
            self._show_error("The message is empty: type something to send.")
            return
        spec = None
        if not self.session.loaded and not self.busy:
            # nothing loaded yet: the first message loads what the pickers show
            try:
                spec = self.selected_spec()
            except HfMagicError as exc:
                self._show_error(str(exc))
                return
        if text is None:
            self.input.value = ""

        def run() -> None:
            try:
                # The spec goes with the message, not into session.spec: a failed load leaves the session as it was.
                self.session.send(message, spec=spec)
            except HfMagicError:
                if text is None and not self.input.value:
                    self.input.value = message  # give the user their message back to retry
                raise

        self._start("send", run)

    def stop(self) -> None:
        """Stop the reply being generated; its partial text is kept and marked stopped."""
        self.session.stop()

    def reset(self) -> None:
        """Forget the conversation (the model stays loaded)."""
        if self.session.busy:
            self._show_error("A reply is being generated: press Stop first, then Reset.")
            return
        if self._task == "load":  # the session would wait for the load, and this click would block the kernel
            self._show_error("A model is loading: wait for it, then Reset.")
            return
        self._clear_error()
        try:
            self.session.reset()
        except HfMagicError as exc:  # a %%hfchat cell started a reply meanwhile
            self._show_error(str(exc))

    def export(self, path: str | None = None) -> Path | None:
        """Write the transcript to ``path`` (default: the panel's export box) as ``.md`` or ``.json``."""
        try:
            target = self.session.export(path or self.export_path.value.strip())
        except HfMagicError as exc:
            self._show_error(str(exc))
            return None
        except OSError as exc:
            self._show_error(f"Cannot write {exc.filename or 'the file'}: {exc.strerror}. Pick another path.")
            return None
        self._clear_error()
        self.note.value = f'<span class="hfm-note">Exported to {html.escape(str(target.resolve()))}</span>'
        return target

    def search_hub(self, query: str | None = None) -> None:
        """List hub text-generation models matching ``query`` (default: the search box) in the picker."""
        if query is not None and query != self.search_box.value:
            self.search_box.value = query  # the box's observer starts the search
            return
        self._start("search", lambda: self._search(self.search_box.value))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the panel's current background task ends; True when nothing is running any more."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    @property
    def busy(self) -> bool:
        return self._task is not None or self._generating or self.session.busy

    # ------------------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.header = widgets.HTML()
        self.status = widgets.HTML()

        # Model picker
        self.model_list = widgets.Dropdown(description="Model", layout=widgets.Layout(width="98%"))
        self.model_id = widgets.Text(
            placeholder="or any hub id (org/name) or local folder",
            description="Other",
            continuous_update=False,
            layout=widgets.Layout(width="98%"),
        )
        self.search_box = widgets.Text(
            placeholder="search the hub for text-generation models",
            description="Hub",
            continuous_update=False,
            layout=widgets.Layout(flex="1 1 auto", width="auto"),
        )
        self.search_button = _button("Search", "search", tooltip="List matching hub models, most downloaded first")
        self.search_results = widgets.Select(rows=5, layout=widgets.Layout(width="98%", display="none"))
        hub_online = not config.hub_offline()
        self.search_row = widgets.VBox(
            [widgets.HBox([self.search_box, self.search_button]), self.search_results],
            layout=widgets.Layout(display="flex" if hub_online else "none"),
        )
        self.model_info = widgets.HTML()
        self._refresh_model_list()

        # Backend
        self.backend = widgets.ToggleButtons(
            options=[("Local pipeline", "pipeline"), ("Endpoint", "endpoint")], style={"button_width": "130px"}
        )
        self.device = widgets.Dropdown(options=_device_options(), description="Device", layout=_field())
        self.dtype = widgets.Dropdown(
            options=[_AUTO, "bfloat16", "float16", "float32"], description="Dtype", layout=_field()
        )
        self.quantize = widgets.Dropdown(
            options=[("none", "none"), ("8-bit", "8bit"), ("4-bit (NF4)", "4bit")],
            description="Quantize",
            layout=_field(),
        )
        self.pipeline_box = widgets.HBox([self.device, self.dtype, self.quantize])
        self.endpoint_url = widgets.Text(
            placeholder="http://127.0.0.1:8000 (empty: use a provider)",
            description="URL",
            continuous_update=False,
            layout=widgets.Layout(width="60%"),
        )
        self.provider = widgets.Combobox(
            options=list(_PROVIDERS), placeholder="auto", description="Provider", layout=_field()
        )
        self.token_status = widgets.HTML(_token_status())
        self.endpoint_box = widgets.VBox(
            [widgets.HBox([self.endpoint_url, self.provider]), self.token_status],
            layout=widgets.Layout(display="none"),
        )

        self.load_button = _button("Load", "download", "primary", "Load the selected model (downloads if needed)")
        self.unload_button = _button("Unload", "eject", tooltip="Free the model's memory; the chat is kept")
        self.progress_box = widgets.VBox()
        model_tab = widgets.VBox(
            [
                self.model_list,
                self.model_id,
                self.search_row,
                widgets.HBox([_label("Backend"), self.backend]),
                self.pipeline_box,
                self.endpoint_box,
                self.model_info,
                widgets.HBox([self.load_button, self.unload_button]),
                self.progress_box,
            ]
        )

        # Generation settings
        self.system_prompt = widgets.Textarea(
            placeholder="System prompt (optional)",
            description="System",
            continuous_update=False,
            rows=2,
            layout=widgets.Layout(width="98%"),
        )
        self.temperature = _number_field("Temperature", "0 = greedy")
        self.max_new_tokens = _number_field("Max tokens", "model default")
        self.top_p = _number_field("Top p", "model default")
        self.repetition_penalty = _number_field("Rep. penalty", "model default")
        self.thinking = widgets.ToggleButtons(
            options=[("Model default", "default"), ("Think", "on"), ("No thinking", "off")],
            value="default",
            description="Thinking",
            tooltips=["The model's own default", "Ask a reasoning model to think first", "Ask it to answer directly"],
            style={"button_width": "auto"},
        )
        self.thinking.add_class("hf-magic-think")
        settings_tab = widgets.VBox(
            [
                self.system_prompt,
                widgets.HBox([self.temperature, self.max_new_tokens]),
                widgets.HBox([self.top_p, self.repetition_penalty]),
                self.thinking,
                widgets.HTML('<span class="hfm-note">Empty fields keep the model\'s own defaults.</span>'),
            ]
        )

        self.settings = widgets.Accordion(children=[model_tab, settings_tab], titles=("Model", "Generation"))
        self.settings.selected_index = None if self.session.loaded else 0

        # Chat
        self.transcript = widgets.VBox(
            # column-reverse keeps the view scrolled to the newest message with no script; children are newest-first
            layout=widgets.Layout(
                flex_flow="column-reverse", overflow_y="auto", max_height="420px", min_height="120px", padding="4px"
            )
        )
        self.transcript.add_class("hf-magic-transcript")
        self.error = widgets.HTML()
        self.input = widgets.Textarea(
            placeholder="Message (Shift+Enter to send)",
            continuous_update=False,
            rows=3,
            layout=widgets.Layout(width="100%"),
        )
        self.input.add_class("hf-magic-input")
        self.send_button = _button("Send", "paper-plane", "primary", "Send the message (Shift+Enter)")
        self.send_button.add_class("hf-magic-send")
        self.stop_button = _button("Stop", "stop", "danger", "Stop the reply; the partial text is kept")
        self.stop_button.add_class("hf-magic-stop")
        self.reset_button = _button("Reset", "trash", tooltip="Forget the conversation (the model stays loaded)")
        self.export_path = widgets.Text(
            value=f"hfchat-{self.session.name}.md", continuous_update=False, layout=widgets.Layout(width="180px")
        )
        self.export_button = _button("Export", "save", tooltip="Write the transcript (.md or .json)")
        self.usage = widgets.HTML()
        self.note = widgets.HTML()
        keys = widgets.Output(layout=widgets.Layout(display="none"))
        _run_script(keys, _SHIFT_ENTER_JS)

        buttons = widgets.HBox(
            [
                self.send_button,
                self.stop_button,
                widgets.HTML(layout=widgets.Layout(flex="1 1 auto")),
                self.reset_button,
                self.export_path,
                self.export_button,
            ],
            layout=widgets.Layout(align_items="center"),
        )
        self.root = widgets.VBox(
            [
                widgets.HTML(_CSS + f"<style>{THINKING_CSS}</style>"),
                widgets.HBox([self.header, self.status], layout=widgets.Layout(justify_content="space-between")),
                self.settings,
                self.transcript,
                self.error,
                self.input,
                buttons,
                self.usage,
                self.note,
                keys,
            ]
        )
        self.root.add_class("hf-magic-panel")
        self.header.value = (
            f'<span class="hfm-title">hf_magic chat</span> '
            f'<span class="hfm-subtitle">· session <b>{html.escape(self.session.name)}</b></span>'
        )

        self.load_button.on_click(lambda _: self.load())
        self.unload_button.on_click(lambda _: self.unload())
        self.send_button.on_click(lambda _: self.send())
        self.stop_button.on_click(lambda _: self.stop())
        self.reset_button.on_click(lambda _: self.reset())
        self.export_button.on_click(lambda _: self.export())
        self.search_button.on_click(lambda _: self.search_hub())
        self.search_box.observe(lambda _: self.search_hub(), names="value")
        self.search_results.observe(self._on_search_pick, names="value")
        self.backend.observe(self._on_backend, names="value")
        pickers = (self.model_list, self.model_id, self.device, self.dtype, self.quantize, self.backend)
        for picker in (*pickers, self.endpoint_url, self.provider):
            picker.observe(self._on_picker, names="value")
        fields = (self.system_prompt, self.temperature, self.max_new_tokens, self.top_p, self.repetition_penalty)
        for field in (*fields, self.thinking):
            field.observe(lambda _: self._apply_settings(), names="value")

    def _refresh_model_list(self) -> None:
        for choice in local_choices():
            self._choices[choice.model_id] = choice
        options = [(choice.label(), choice.model_id) for choice in self._choices.values() if choice.source != "hub"]
        current = self.model_list.value
        self.model_list.options = options or [("default", "default")]
        if current in dict(options).values():
            self.model_list.value = current

    # -------------------------------------------------------------------- widgets -> session
    def _apply_settings(self) -> None:
        if self._syncing:
            return
        try:
            values: dict[str, Any] = {
                "enable_thinking": {"on": True, "off": False}.get(self.thinking.value),
                "system_prompt": self.system_prompt.value.strip() or None,
                "temperature": _parse_number(self.temperature.value, "Temperature", float),
                "max_new_tokens": _parse_number(self.max_new_tokens.value, "Max tokens", int),
                "top_p": _parse_number(self.top_p.value, "Top p", float),
                "repetition_penalty": _parse_number(self.repetition_penalty.value, "Repetition penalty", float),
            }
        except InvalidInputError as exc:
            self._show_error(str(exc))
            return
        self.session.settings = replace(self.session.settings, **values)
        self._clear_error()

    def _on_backend(self, change: dict[str, Any]) -> None:
        endpoint = change["new"] == "endpoint"
        self.pipeline_box.layout.display = "none" if endpoint else "flex"
        self.endpoint_box.layout.display = "flex" if endpoint else "none"
        self.token_status.value = _token_status()

    def _on_picker(self, _: dict[str, Any]) -> None:
        if self._syncing:  # _show_spec sets several pickers, then redraws once
            return
        self._redraw_model_info()
        self._redraw_status()

    def _on_search_pick(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.model_id.value = change["new"]

    def _search(self, query: str) -> None:
        results = hub_search(query)
        for choice in results:
            self._choices.setdefault(choice.model_id, choice)
        self.search_results.options = [(choice.label(), choice.model_id) for choice in results]
        self.search_results.value = None
        self.search_results.layout.display = "flex" if results else "none"
        if not results:
            self.note.value = f'<span class="hfm-note">No text-generation model on the hub matches {query!r}.</span>'

    # ------------------------------------------------------------------------ background work
    def _start(self, task: str, work: Callable[[], Any]) -> None:
        with self._lock:
            if self._task is not None:
                self._show_error(f"Busy ({self._task}): wait for it to finish, or press Stop.")
                return
            self._task = task
        self._clear_error()
        self.note.value = ""
        self._redraw_buttons()
        self._redraw_status()
        self._worker = threading.Thread(target=self._run, args=(task, work), name=f"hf_magic-panel-{task}", daemon=True)
        self._worker.start()

    def _run(self, task: str, work: Callable[[], Any]) -> None:
        try:
            work()
        except HfMagicError as exc:
            self._show_error(str(exc))
        except Exception as exc:  # the panel must stay usable whatever goes wrong
            self._show_error(f"{task.capitalize()} failed: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._task = None
                self._loading_done = True
            self._redraw_buttons()
            self._redraw_status()

    # -------------------------------------------------------------------------- session events
    def _on_event(self, event: SessionEvent) -> None:
        with self._lock:
            if event.kind == "turn_started" and event.turn is not None:
                self._generating, self._loading_done = True, True
                self._start_live_turn(event.turn)
            elif event.kind in ("token", "reasoning") and event.turn is not None:
                self._stream_live_turn(event.turn)
            elif event.kind == "turn_finished":
                self._generating = False
                self._live.clear()
                self._redraw_transcript()
                self._redraw_usage()
                self._show_settings(self.session.settings)
            elif event.kind == "turn_failed":
                self._generating = False
                self._live.clear()
                self._redraw_transcript()
                if event.error:
                    self._show_error(event.error)
            elif event.kind == "progress" and event.progress is not None:
                self._draw_progress(event.progress)
            elif event.kind in ("model_loaded", "model_unloaded"):
                self._loading_done = True
                self._finish_progress()
                if event.kind == "model_loaded":
                    self._refresh_model_list()  # a download just added a model to the cache
                    self._show_spec(self.session.spec)
            elif event.kind in ("reset", "transcript_loaded"):
                self._live.clear()
                self._redraw_transcript()
                self._redraw_usage()
                self._show_settings(self.session.settings)
        self._redraw_buttons()
        self._redraw_status()

    def _start_live_turn(self, turn: Turn) -> None:
        view = widgets.HTML(_turn_html(turn, streaming=True))
        self._live[id(turn)] = (turn, view, time.perf_counter())
        children = [view]
        # a re-run %%hfchat cell replaces its turn: hide the old one while the new one streams
        children += [w for t, w in self._ordered_views() if not (turn.key is not None and t.key == turn.key)]
        self.transcript.children = tuple(children)

    def _stream_live_turn(self, turn: Turn) -> None:
        live = self._live.get(id(turn))
        if live is None:
            self._start_live_turn(turn)
            return
        _, view, drawn = live
        now = time.perf_counter()
        if now - drawn >= _REDRAW_SECONDS:
            view.value = _turn_html(turn, streaming=True)
            self._live[id(turn)] = (turn, view, now)

    def _ordered_views(self) -> list[tuple[Turn, widgets.HTML]]:
        """One view per recorded turn, newest first (the transcript box is column-reversed)."""
        views: dict[int, tuple[Turn, widgets.HTML]] = {}
        for turn in self.session.turns:
            known = self._turn_views.get(id(turn))
            html_text = _turn_html(turn, streaming=False)
            if known is None or known[0] is not turn:
                known = (turn, widgets.HTML(html_text))
            elif known[1].value != html_text:
                known[1].value = html_text
            views[id(turn)] = known
        for key, (_, view) in self._turn_views.items():
            if key not in views:
                view.close()
        self._turn_views = views
        return list(reversed(list(views.values())))

    def _redraw_transcript(self) -> None:
        children: list[widgets.Widget] = [view for _, view in self._ordered_views()]
        if not children:
            children = [
                widgets.HTML(
                    '<div class="hfm-empty">No messages yet: type below and press Send (or Shift+Enter).</div>'
                )
            ]
        self.transcript.children = tuple(children)

    # ------------------------------------------------------------------------------ progress
    def _draw_progress(self, event: ProgressEvent) -> None:
        if self._loading_done:  # a new load: forget the bars of the previous one
            self._loading_done = False
            self._progress = ProgressState()
            for row in self.progress_box.children:
                _close_tree(row)
            self.progress_box.children = ()
            self._progress_rows.clear()
            self._progress_drawn.clear()
        self._progress.update(event)
        if event.stage == "download" and event.unit == "B":
            current, total = self._progress.download_bytes()
            self._draw_bar("download", "Downloading", current, total, "B", event.done and current >= (total or 0))
        elif not (event.stage == "download" and event.label.startswith("Fetching")):
            # hub's "Fetching N files" counter repeats what the byte bar says
            label = event.label or event.stage.capitalize()
            self._draw_bar(f"{event.stage}:{label}", label, event.current, event.total, event.unit, event.done)

    def _draw_bar(self, key: str, label: str, current: float, total: float | None, unit: str, done: bool) -> None:
        now = time.perf_counter()
        if not done and now - self._progress_drawn.get(key, 0.0) < _REDRAW_SECONDS:
            return
        self._progress_drawn[key] = now
        if key not in self._progress_rows:
            bar = widgets.FloatProgress(min=0.0, max=1.0, layout=widgets.Layout(width="50%"))
            bar.add_class("hf-magic-progress")
            text = widgets.HTML()
            self._progress_rows[key] = (bar, text)
            self.progress_box.children = (*self.progress_box.children, widgets.HBox([bar, text]))
        bar, text = self._progress_rows[key]
        bar.value = min(1.0, current / total) if total else (1.0 if done else 0.0)
        bar.bar_style = "success" if done else "info"
        amount = (
            f"{format_bytes(current)} / {format_bytes(total)}"
            if unit == "B" and total
            else (f"{current:.0f}/{total:.0f}" if total else f"{current:.0f}")
        )
        text.value = f'<span class="hfm-note">{html.escape(label)} · {amount}</span>'

    def _finish_progress(self) -> None:
        for bar, _ in self._progress_rows.values():
            bar.value, bar.bar_style = 1.0, "success"
        if self._progress.bars:
            self.note.value = f'<span class="hfm-note">✓ {html.escape(self._progress.summary())}</span>'

    # ----------------------------------------------------------------------- session -> widgets
    def _show_spec(self, spec: ModelSpec) -> None:
        self._syncing = True
        try:
            values = [value for _, value in self.model_list.options]
            if spec.model in values:
                self.model_list.value = spec.model
                self.model_id.value = ""
            else:
                self.model_id.value = spec.model
            self.backend.value = spec.backend
            self.device.value = spec.device if spec.device in self.device.options else _AUTO
            self.dtype.value = spec.dtype if spec.dtype in self.dtype.options else _AUTO
            self.quantize.value = spec.quantize or "none"
            self.endpoint_url.value = spec.endpoint_url or ""
            self.provider.value = spec.provider or ""
        finally:
            self._syncing = False
        self._redraw_model_info()

    def _show_settings(self, settings: Settings) -> None:
        self._syncing = True
        try:
            self.system_prompt.value = settings.system_prompt or ""
            self.temperature.value = _show_number(settings.temperature)
            self.max_new_tokens.value = _show_number(settings.max_new_tokens)
            self.top_p.value = _show_number(settings.top_p)
            self.repetition_penalty.value = _show_number(settings.repetition_penalty)
            self.thinking.value = {True: "on", False: "off"}.get(settings.enable_thinking, "default")  # type: ignore[arg-type]
        finally:
            self._syncing = False

    def _redraw_model_info(self) -> None:
        model = self.model_id.value.strip() or self.model_list.value or "default"
        if self.backend.value == "endpoint":
            where = self.endpoint_url.value.strip() or f"provider {self.provider.value or 'auto'}"
            note = f"Runs remotely ({where}): needs no local memory."
            self.model_info.value = f'<span class="hfm-note">{html.escape(note)}</span>'
            return
        choice = self._choices.get(model) or describe_choice(model)
        device = None if self.device.value == _AUTO else self.device.value
        dtype = None if self.dtype.value == _AUTO else self.dtype.value
        quantize = None if self.quantize.value == "none" else self.quantize.value
        summary = fit_summary(choice, device=device, dtype=dtype, quantize=quantize)
        if self.session.loaded and self._spec_or_none() not in (None, self.session.spec):
            summary += " · press Load to switch to it"
        self.model_info.value = f'<span class="hfm-note">{html.escape(summary)}</span>'

    def _spec_or_none(self) -> ModelSpec | None:
        try:
            return self.selected_spec()
        except HfMagicError:
            return None

    def _redraw_status(self) -> None:
        spec = self.session.spec
        if self._task == "load" or not self._loading_done:
            text = "◌ loading…"
        elif self._generating:
            text = f"● generating · {html.escape(spec.describe())}"
        elif self.session.loaded:
            text = f"● loaded · {html.escape(spec.describe())}"
        else:
            spec = self._spec_or_none() or spec
            text = f"○ not loaded · the first message loads {html.escape(spec.describe())}"
        self.status.value = f'<span class="hfm-status">{text}</span>'

    def _redraw_buttons(self) -> None:
        generating = self._generating or self._task == "send"
        busy = self._task is not None or generating or not self._loading_done
        self.send_button.disabled = busy
        self.stop_button.disabled = not generating
        self.load_button.disabled = busy
        self.unload_button.disabled = busy or not self.session.loaded
        self.reset_button.disabled = generating

    def _redraw_usage(self) -> None:
        turns = self.session.turns
        last = next((turn for turn in reversed(turns) if turn.usage), None)
        if last is None or last.usage is None:
            self.usage.value = ""
            return
        parts = [f"last: {last.usage.input_tokens} in + {last.usage.output_tokens} out tokens"]
        if last.tokens_per_second is not None:
            parts.append(f"{last.tokens_per_second:.1f} tok/s")
        total = self.session.usage_total()
        parts.append(f"session: {len(turns)} turn{'s' if len(turns) != 1 else ''}, {total.total_tokens} tokens")
        used, limit = self.session.context_fill()
        parts.append(f"context: {used}/{limit} ({used / limit:.0%})" if limit else f"context: {used} tokens")
        self.usage.value = f'<div class="hfm-usage">{html.escape(" · ".join(parts))}</div>'

    def _show_error(self, message: str) -> None:
        self.error.value = f'<div class="hfm-error">⚠ {html.escape(" ".join(message.split()), quote=False)}</div>'

    def _clear_error(self) -> None:
        self.error.value = ""


def _turn_html(turn: Turn, *, streaming: bool) -> str:
    user = html.escape(turn.user.strip()).replace("\n", "<br>")
    role = html.escape(config.DEFAULT_MODEL_NAME if is_default_model(turn.model) else turn.model or "assistant")
    badge = '<span class="hfm-badge">■ stopped</span>' if turn.interrupted else ""
    if streaming:
        body = markdown_to_html(turn.reply) if turn.reply else ""
        body += '<span class="hfm-cursor">▍</span>'
    else:
        body = markdown_to_html(turn.reply) if turn.reply.strip() else "<p><em>(empty reply)</em></p>"
    # The thinking stays open while the model thinks and folds once the answer starts.
    thinking = thinking_block_html(
        turn.reasoning, open_=streaming and not turn.reply, still=streaming and not turn.reply
    )
    if not streaming and turn.still_thinking:
        body += f'<div class="hfchat-note">{html.escape(STILL_THINKING)}</div>'
    facts: list[str] = []
    if not streaming:
        if turn.usage:
            facts.append(f"{turn.usage.output_tokens} tokens")
        if turn.usage and turn.tokens_per_second is not None:
            facts.append(f"{turn.tokens_per_second:.1f} tok/s")
        if turn.duration is not None:
            facts.append(f"{'stopped after ' if turn.interrupted else ''}{turn.duration:.1f} s")
    meta = f'<div class="hfm-meta">{" · ".join(facts)}</div>' if facts else ""
    state = "hfm-streaming" if streaming else ("hfm-stopped" if turn.interrupted else "hfm-done")
    return (
        f'<div class="hfm-turn {state}">'
        f'<div class="hfm-msg hfm-user"><div class="hfm-role">You</div>{user}</div>'
        f'<div class="hfm-msg hfm-assistant"><div class="hfm-role">{role}{badge}</div>'
        f'{thinking}<div class="hfm-reply">{body}</div>{meta}</div>'
        "</div>"
    )


def _token_status() -> str:
    """Whether a token will be sent to Hugging Face hosts, and from where: never the token itself."""
    from huggingface_hub import get_token

    if config.env_token():
        state = "set (environment)"
    elif get_token():
        state = "set (hf auth login)"
    else:
        state = "not set: set HF_TOKEN or run `hf auth login` for providers that need one"
    return f'<span class="hfm-note">Token: {html.escape(state)}</span>'


def _device_options() -> list[str]:
    import torch

    from ..local.loading import mps_available

    cuda = [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return [_AUTO, "cpu", *cuda, *(["mps"] if mps_available() else [])]


def _label(text: str) -> widgets.HTML:
    """A row title aligned like the descriptions of the widgets around it."""
    return widgets.HTML(f'<div class="hfm-label">{html.escape(text)}</div>', layout=widgets.Layout(width="88px"))


def _field() -> widgets.Layout:
    return widgets.Layout(width="32%")


def _number_field(description: str, placeholder: str) -> widgets.Text:
    return widgets.Text(
        description=description,
        placeholder=placeholder,
        continuous_update=False,
        layout=widgets.Layout(width="48%"),
        style={"description_width": "90px"},
    )


def _run_script(output: widgets.Output, source: str) -> None:
    from IPython.display import Javascript

    output.append_display_data(Javascript(source))


def _close_tree(widget: widgets.Widget) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()
