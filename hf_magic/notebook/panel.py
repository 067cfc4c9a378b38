"""ChatPanel: the controller of the ipywidgets chat window over a ChatSession (model picker, settings, transcript,
send/stop, usage); its widgets and drawing live in ``panel_view.PanelView``. It runs past 400 lines because each
panel action (load, send, stop, reset, export, search, attach) is one small handler of the same controller.

Entry point: ``ChatPanel(session).display()`` (what ``%hfchat panel`` runs), or ``hf_magic.ChatPanel()`` as the
last expression of a cell. The controller runs loads, sends and searches on a worker thread, asks its
``ChatSession`` to load, send, stop, reset and export, and redraws the view from the session's events, so turns
sent by ``%%hfchat`` cells appear here too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from huggingface_hub import is_offline_mode

from .. import config
from ..errors import HfMagicError, InvalidInputError
from ..progress import ProgressEvent
from .kernel_log import kernel_log
from .log_picker import PastConversations
from .model_catalog import ModelChoice, describe_choice, device_options, fit_summary, hub_search, local_choices
from .model_spec import ModelSpec
from .panel_images import attached_images
from .panel_view import AUTO, THINKING_CHOICES, PanelView
from .progress_views import WidgetProgress
from .render import usage_line
from .session import ChatSession, get_session
from .turns import SessionEvent


class ChatPanel:
    """A chat window over a ``ChatSession``: pick and load a model, tune generation, chat, stop, export.

    Args:
        session: the conversation to show; by default the kernel-wide session ``session_name``, the one
            ``%%hfchat`` cells use, so both see the same turns.
        session_name: which named session to use when ``session`` is not given.

    The widgets are ``panel.view``'s; they are also reachable as attributes of the panel (``panel.input``,
    ``panel.send_button``), as they were before the view was split out.

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
        self._progress: WidgetProgress | None = None
        self._loading_done = True
        self._generating = self.session.busy  # kept by events: the session's lock outlives "turn_finished"
        self.view = PanelView(self.session.name, devices=device_options(), hub_online=not is_offline_mode())
        self.view.settings.selected_index = None if self.session.loaded else 0
        self._refresh_model_list()
        self.view.show_spec(self.session.spec)
        self.view.show_settings(self.session.settings)
        self._connect()
        self.view.draw_transcript(self.session.turns)
        self._redraw_token_note()
        self._redraw_model_info()
        self._redraw_usage()
        self._redraw()
        self._unsubscribe: Callable[[], None] | None = self.session.subscribe(self._on_event)
        kernel_log().follow(self.session)  # the panel's turns go to the turn log too
        self.past = PastConversations(self.session, self.view)  # the "Past conversations" section

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the panel lacks: the view's widgets (panel.input, panel.transcript, ...).
        view = self.__dict__.get("view")
        if name.startswith("_") or view is None or not hasattr(view, name):
            raise AttributeError(f"'ChatPanel' object has no attribute {name!r}")
        return getattr(view, name)

    # ------------------------------------------------------------------------ public API
    @property
    def widget(self) -> Any:
        """The panel's root widget (to embed it in a layout of your own)."""
        return self.view.root

    @property
    def root(self) -> Any:
        return self.view.root

    def display(self) -> None:
        """Show the panel in the notebook output (what ``%hfchat panel`` calls)."""
        from IPython.display import display

        display(self.view.root)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.view.root._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        """Stop listening to the session and close every widget of the panel."""
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        self.view.close()

    def selected_spec(self) -> ModelSpec:
        """The model the pickers describe (what Load would load).

        Raises:
            InvalidInputError: the chosen combination is invalid (e.g. quantizing an endpoint).
        """
        return self.view.selected_spec()

    def load(self) -> None:
        """Load the selected model on a worker thread, with progress bars in the panel."""
        try:
            spec = self.selected_spec()
        except HfMagicError as exc:
            self.view.show_error(str(exc))
            return
        self._start("load", lambda: self.session.load(spec))

    def unload(self) -> None:
        """Free the loaded model's memory (the conversation is kept)."""
        if self.session.busy or self._task:
            self.view.show_error("A reply or a load is running: press Stop or wait, then unload.")
            return
        self.view.clear_error()
        try:
            self.session.unload()
        except HfMagicError as exc:  # a %%hfchat cell started a reply meanwhile
            self.view.show_error(str(exc))

    def send(self, text: str | None = None) -> None:
        """Send ``text`` (default: the message box) with the attached images on a worker thread; the reply streams
        into the transcript."""
        box = self.view.input
        message = box.value if text is None else text
        try:
            images = attached_images(self.view.attach.value)
        except HfMagicError as exc:
            self.view.show_error(str(exc))
            return
        if not message.strip():
            self.view.show_error("The message is empty: type something to send.")
            return
        spec = None
        if not self.session.loaded and not self.busy:
            # nothing loaded yet: the first message loads what the pickers show
            try:
                spec = self.selected_spec()
            except HfMagicError as exc:
                self.view.show_error(str(exc))
                return
        if text is None:
            box.value = ""
        self.view.attach.value = ()  # sent with this message

        def run() -> None:
            try:
                # The spec goes with the message, not into session.spec: a failed load leaves the session as it was.
                self.session.send(message, spec=spec, images=images)
            except HfMagicError:
                if text is None and not box.value:
                    box.value = message  # give the user their message back to retry
                raise

        self._start("send", run)

    def stop(self) -> None:
        """Stop the reply being generated; its partial text is kept and marked stopped."""
        self.session.stop()

    def reset(self) -> None:
        """Forget the conversation (the model stays loaded)."""
        if self.session.busy:
            self.view.show_error("A reply is being generated: press Stop first, then Reset.")
            return
        if self._task == "load":  # the session would wait for the load, and this click would block the kernel
            self.view.show_error("A model is loading: wait for it, then Reset.")
            return
        self.view.clear_error()
        try:
            self.session.reset()
        except HfMagicError as exc:  # a %%hfchat cell started a reply meanwhile
            self.view.show_error(str(exc))

    def export(self, path: str | None = None) -> Path | None:
        """Write the transcript to ``path`` (default: the panel's export box) as ``.md`` or ``.json``."""
        try:
            target = self.session.export(path or self.view.export_path.value.strip())
        except HfMagicError as exc:
            self.view.show_error(str(exc))
            return None
        except OSError as exc:
            self.view.show_error(f"Cannot write {exc.filename or 'the file'}: {exc.strerror}. Pick another path.")
            return None
        self.view.clear_error()
        self.view.show_note(f"Exported to {target.resolve()}")
        return target

    def search_hub(self, query: str | None = None) -> None:
        """List hub text-generation models matching ``query`` (default: the search box) in the picker."""
        box = self.view.search_box
        if query is not None and query != box.value:
            box.value = query  # the box's observer starts the search
            return
        self._start("search", lambda: self._search(box.value))

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

    # -------------------------------------------------------------------- widgets -> session
    def _connect(self) -> None:
        view = self.view
        view.load_button.on_click(lambda _: self.load())
        view.unload_button.on_click(lambda _: self.unload())
        view.send_button.on_click(lambda _: self.send())
        view.stop_button.on_click(lambda _: self.stop())
        view.reset_button.on_click(lambda _: self.reset())
        view.export_button.on_click(lambda _: self.export())
        view.search_button.on_click(lambda _: self.search_hub())
        view.search_box.observe(lambda _: self.search_hub(), names="value")
        view.search_results.observe(self._on_search_pick, names="value")
        view.backend.observe(lambda _: self._redraw_token_note(), names="value")
        pickers = (view.model_list, view.model_id, view.backend, view.device, view.dtype, view.quantize)
        for picker in (*pickers, view.endpoint_url, view.provider):
            picker.observe(self._on_picker, names="value")
        # One observer per field, applying only that field: writing the session's settings back into the fields
        # (show_settings) then re-applies values the session already has, and needs no guard.
        for name, field in view.setting_widgets.items():
            field.observe(partial(self._apply_setting, name), names="value")
        view.thinking.observe(self._apply_thinking, names="value")

    def _apply_thinking(self, change: dict[str, Any]) -> None:
        """The Thinking toggle: the session's ``enable_thinking`` (None keeps the model's own default)."""
        wanted = next(value for value, choice in THINKING_CHOICES.items() if choice == change["new"])
        if self.session.settings.enable_thinking != wanted:
            self.session.settings = replace(self.session.settings, enable_thinking=wanted)

    def _apply_setting(self, name: str, _change: Any = None) -> None:
        try:
            value = self.view.setting_value(name)
        except InvalidInputError as exc:
            self.view.show_error(str(exc))
            return
        if getattr(self.session.settings, name) != value:
            self.session.settings = replace(self.session.settings, **{name: value})
        other_error = next(iter(self._setting_errors()), None)
        if other_error:
            self.view.show_error(other_error)
        else:
            self.view.clear_error()

    def _setting_errors(self) -> list[str]:
        errors = []
        for name in self.view.setting_widgets:
            try:
                self.view.setting_value(name)
            except InvalidInputError as exc:
                errors.append(str(exc))
        return errors

    def _on_picker(self, _change: Any) -> None:
        self._redraw_model_info()
        self._redraw_status()

    def _on_search_pick(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.view.model_id.value = change["new"]

    def _search(self, query: str) -> None:
        results = hub_search(query)
        for choice in results:
            self._choices.setdefault(choice.model_id, choice)
        self.view.show_search_results(results, query)

    def _refresh_model_list(self) -> None:
        for choice in local_choices():
            self._choices[choice.model_id] = choice
        self.view.show_model_choices([choice for choice in self._choices.values() if choice.source != "hub"])

    # ------------------------------------------------------------------------ background work
    def _start(self, task: str, work: Callable[[], Any]) -> None:
        with self._lock:
            if self._task is not None:
                self.view.show_error(f"Busy ({self._task}): wait for it to finish, or press Stop.")
                return
            self._task = task
        self.view.clear_error()
        self.view.show_note("")
        self._redraw()
        self._worker = threading.Thread(target=self._run, args=(task, work), name=f"hf_magic-panel-{task}", daemon=True)
        self._worker.start()

    def _run(self, task: str, work: Callable[[], Any]) -> None:
        try:
            work()
        except HfMagicError as exc:
            self.view.show_error(str(exc))
        except Exception as exc:  # the panel must stay usable whatever goes wrong
            self.view.show_error(f"{task.capitalize()} failed: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._task = None
                self._loading_done = True
            self._redraw()

    # -------------------------------------------------------------------------- session events
    def _on_event(self, event: SessionEvent) -> None:
        with self._lock:
            if event.kind == "turn_started" and event.turn is not None:
                self._generating, self._loading_done = True, True
                self.view.draw_live_turn(event.turn, self.session.turns)
            elif event.kind in ("token", "reasoning", "tool") and event.turn is not None:
                self.view.draw_live_turn(event.turn, self.session.turns, force=event.kind == "tool")
            elif event.kind == "turn_finished":
                self._generating = False
                self._redraw_conversation()
            elif event.kind == "turn_failed":
                self._generating = False
                self.view.draw_transcript(self.session.turns)
                if event.error:
                    self.view.show_error(event.error)
            elif event.kind == "progress" and event.progress is not None:
                self._draw_progress(event.progress)
            elif event.kind in ("model_loaded", "model_unloaded"):
                self._loading_done = True
                self._finish_progress()
                if event.kind == "model_loaded":
                    self._refresh_model_list()  # a download just added a model to the cache
                    self.view.show_spec(self.session.spec)
                    self._redraw_model_info()  # cached now, even where no picker changed
            elif event.kind in ("reset", "transcript_loaded"):
                self._redraw_conversation()
            elif event.kind == "notice":
                self.view.show_note(event.text)
        self._redraw()

    def _draw_progress(self, event: ProgressEvent) -> None:
        if self._loading_done or self._progress is None:  # a new load: forget the bars of the previous one
            self._loading_done = False
            self._progress = self.view.new_progress()
        self._progress(event)

    def _finish_progress(self) -> None:
        progress, self._progress = self._progress, None
        if progress is None:
            return
        progress.close()
        if progress.state.bars:
            self.view.show_note(f"✓ {progress.state.summary()}")

    # ----------------------------------------------------------------------- session -> view
    def _redraw(self) -> None:
        self._redraw_buttons()
        self._redraw_status()

    def _redraw_conversation(self) -> None:
        self.view.draw_transcript(self.session.turns)
        self._redraw_usage()
        self.view.show_settings(self.session.settings)  # a cell's --system or --new may have changed them

    def _redraw_model_info(self) -> None:
        view = self.view
        if view.backend.value == "endpoint":
            where = view.endpoint_url.value.strip() or f"provider {view.provider.value or 'auto'}"
            view.show_model_info(f"Runs remotely ({where}): needs no local memory.")
            return
        model = view.selected_model()
        choice = self._choices.get(model) or describe_choice(model)
        device = None if view.device.value == AUTO else view.device.value
        dtype = None if view.dtype.value == AUTO else view.dtype.value
        quantize = None if view.quantize.value == "none" else view.quantize.value
        summary = fit_summary(choice, device=device, dtype=dtype, quantize=quantize)
        if self.session.loaded and self._spec_or_none() not in (None, self.session.spec):
            summary += " · press Load to switch to it"
        view.show_model_info(summary)

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
            text = f"● generating · {spec.describe()}"
        elif self.session.loaded:
            text = f"● loaded · {spec.describe()}"
        else:
            text = f"○ not loaded · the first message loads {(self._spec_or_none() or spec).describe()}"
        self.view.show_status(text)

    def _redraw_buttons(self) -> None:
        generating = self._generating or self._task == "send"
        busy = self._task is not None or generating or not self._loading_done
        self.view.show_buttons(generating=generating, busy=busy, loaded=self.session.loaded)

    def _redraw_usage(self) -> None:
        last = next((turn for turn in reversed(self.session.turns) if turn.usage), None)
        line = usage_line(last, self.session.usage_total(), self.session.context_fill()) if last else ""
        self.view.show_usage(line)

    def _redraw_token_note(self) -> None:
        self.view.show_token_note(_token_state())


def _token_state() -> str:
    """Whether a token will be sent to Hugging Face hosts, and from where: never the token itself."""
    from huggingface_hub import get_token

    if config.env_token():
        return "set (environment)"
    if get_token():
        return "set (hf auth login)"
    return "not set: set HF_TOKEN or run `hf auth login` for providers that need one"
