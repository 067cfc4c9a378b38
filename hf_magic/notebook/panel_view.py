"""The chat panel's widgets and how they draw what the controller (``panel.ChatPanel``) tells them.

The view knows no session and starts no thread: it lays out the pickers, settings, transcript and buttons, reads
the pickers as a ``ModelSpec``, and draws turns (``turn_drawing.turn_html``), progress (``WidgetProgress``), the usage
line, the status and the error line it is given. It runs past 400 lines because it is the whole widget tree of one
window, a method per section.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import traitlets

from ..errors import InvalidInputError
from .model_catalog import ModelChoice
from .model_spec import ENGINES, ModelSpec
from .panel_images import attachment_summary
from .panel_style import PANEL_CSS, SHIFT_ENTER_JS
from .progress_views import WidgetProgress
from .turn_drawing import TURN_CSS, turn_html
from .turns import Settings, Turn

REDRAW_SECONDS = 0.08
"""Redraw a streaming reply at most this often: each redraw is a message to the browser."""

AUTO = "auto"
"""What the Device and Dtype pickers show when the loader chooses."""

PROVIDERS = ("auto", "hf-inference", "cerebras", "fireworks-ai", "groq", "nebius", "novita", "sambanova", "together")

SETTING_FIELDS = ("system_prompt", "temperature", "max_new_tokens", "top_p", "repetition_penalty")
THINKING_CHOICES: dict[bool | None, str] = {None: "default", True: "on", False: "off"}
"""``Settings.enable_thinking`` as the Thinking toggle's value."""
"""The ``Settings`` fields the Generation tab edits, one widget each (``PanelView.setting_widgets``)."""

_NUMBER_SETTINGS: dict[str, tuple[str, type[float] | type[int]]] = {
    "temperature": ("Temperature", float),
    "max_new_tokens": ("Max tokens", int),
    "top_p": ("Top p", float),
    "repetition_penalty": ("Repetition penalty", float),
}
"""The Generation fields that hold numbers: the name an error calls them by, and their type."""


_EMPTY_TRANSCRIPT = '<div class="hfm-empty">No messages yet: type below and press Send (or Shift+Enter).</div>'


class PanelView:
    """Every widget of the chat panel, laid out; ``root`` is the box to display.

    Args:
        session_name: shown in the header and used for the default export file name.
        devices: what the Device picker offers besides "auto" (``model_catalog.device_options()``).
        hub_online: whether to offer the hub search row.
    """

    def __init__(self, session_name: str, *, devices: Sequence[str], hub_online: bool) -> None:
        self._turn_views: dict[int, tuple[Turn, widgets.HTML]] = {}
        self._live: dict[int, tuple[Turn, widgets.HTML, float]] = {}
        self._build_model_tab(devices, hub_online)
        self._build_settings_tab()
        self.past_box = widgets.VBox()  # the controller puts log_picker.PastConversations here
        self.settings = widgets.Accordion(
            children=[self.model_tab, self.settings_tab, self.past_box],
            titles=("Model", "Generation", "Past conversations"),
        )
        self._build_chat(session_name)

    # ------------------------------------------------------------------------------ layout
    def _build_model_tab(self, devices: Sequence[str], hub_online: bool) -> None:
        self.model_list = widgets.Dropdown(description="Model", layout=widgets.Layout(width="98%"))
        self.model_id = _text("Other", "or any hub id (org/name) or local folder", width="98%")
        self.search_box = _text("Hub", "search the hub for text-generation models", flex="1 1 auto", width="auto")
        self.search_button = _button("Search", "search", tooltip="List matching hub models, most downloaded first")
        self.search_results = widgets.Select(rows=5, layout=widgets.Layout(width="98%", display="none"))
        self.search_row = widgets.VBox(
            [widgets.HBox([self.search_box, self.search_button]), self.search_results],
            layout=widgets.Layout(display="flex" if hub_online else "none"),
        )
        self.model_info = widgets.HTML()

        # vLLM and llama.cpp: an engine hf_magic starts for the model, reached as an endpoint (remote/engines.py).
        self.backend = widgets.ToggleButtons(
            options=[
                ("Local pipeline", "pipeline"),
                ("Endpoint", "endpoint"),
                ("vLLM", "vllm"),
                ("llama.cpp", "llama.cpp"),
            ],
            style={"button_width": "110px"},
        )
        self.device = widgets.Dropdown(options=[AUTO, *devices], description="Device", layout=_field())
        self.dtype = widgets.Dropdown(
            options=[AUTO, "bfloat16", "float16", "float32"], description="Dtype", layout=_field()
        )
        self.quantize = widgets.Dropdown(
            options=[("none", "none"), ("8-bit", "8bit"), ("4-bit (NF4)", "4bit")],
            description="Quantize",
            layout=_field(),
        )
        self.pipeline_box = widgets.HBox([self.device, self.dtype, self.quantize])
        self.endpoint_url = _text("URL", "http://127.0.0.1:8000 (empty: use a provider)", width="60%")
        self.provider = widgets.Combobox(
            options=list(PROVIDERS), placeholder="auto", description="Provider", layout=_field()
        )
        self.token_status = widgets.HTML()
        self.endpoint_box = widgets.VBox(
            [widgets.HBox([self.endpoint_url, self.provider]), self.token_status], layout=widgets.Layout(display="none")
        )
        self.gguf_file = _text("GGUF file", "NAME.gguf of a GGUF repo (a local .gguf or the default: leave empty)")
        self.gguf_box = widgets.HBox([self.gguf_file], layout=widgets.Layout(display="none"))
        # Which backend's fields show follows the toggle, in the widgets themselves.
        traitlets.dlink((self.backend, "value"), (self.pipeline_box.layout, "display"), _shown_if("pipeline"))
        traitlets.dlink((self.backend, "value"), (self.endpoint_box.layout, "display"), _shown_if("endpoint"))
        traitlets.dlink((self.backend, "value"), (self.gguf_box.layout, "display"), _shown_if("llama.cpp"))

        self.load_button = _button("Load", "download", "primary", "Load the selected model (downloads if needed)")
        self.unload_button = _button("Unload", "eject", tooltip="Free the model's memory; the chat is kept")
        self.progress_box = widgets.VBox()
        self.model_tab = widgets.VBox(
            [
                self.model_list,
                self.model_id,
                self.search_row,
                widgets.HBox([_label("Backend"), self.backend]),
                self.pipeline_box,
                self.endpoint_box,
                self.gguf_box,
                self.model_info,
                widgets.HBox([self.load_button, self.unload_button]),
                self.progress_box,
            ]
        )

    def _build_settings_tab(self) -> None:
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
        self.settings_tab = widgets.VBox(
            [
                self.system_prompt,
                widgets.HBox([self.temperature, self.max_new_tokens]),
                widgets.HBox([self.top_p, self.repetition_penalty]),
                self.thinking,
                widgets.HTML('<span class="hfm-note">Empty fields keep the model\'s own defaults.</span>'),
            ]
        )

    def _build_chat(self, session_name: str) -> None:
        self.header = widgets.HTML(
            f'<span class="hfm-title">hf_magic chat</span> '
            f'<span class="hfm-subtitle">· session <b>{html.escape(session_name)}</b></span>'
        )
        self.status = widgets.HTML()
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
            value=f"hfchat-{session_name}.md", continuous_update=False, layout=widgets.Layout(width="180px")
        )
        self.export_button = _button("Export", "save", tooltip="Write the transcript (.md or .json)")
        # Images go with the next message (a vision-language model or endpoint reads them).
        self.attach = widgets.FileUpload(accept="image/*", multiple=True, description="Image", icon="image")
        self.attach.add_class("hf-magic-attach")
        self.attachments = widgets.HTML()
        self.attach.observe(lambda _: self.show_attachments(), names="value")
        self.usage = widgets.HTML()
        self.note = widgets.HTML()
        keys = widgets.Output(layout=widgets.Layout(display="none"))
        _run_script(keys, SHIFT_ENTER_JS)
        buttons = widgets.HBox(
            [
                self.send_button,
                self.stop_button,
                self.attach,
                widgets.HTML(layout=widgets.Layout(flex="1 1 auto")),
                self.reset_button,
                self.export_path,
                self.export_button,
            ],
            layout=widgets.Layout(align_items="center"),
        )
        self.root = widgets.VBox(
            [
                widgets.HTML(TURN_CSS + PANEL_CSS),
                widgets.HBox([self.header, self.status], layout=widgets.Layout(justify_content="space-between")),
                self.settings,
                self.transcript,
                self.error,
                self.attachments,
                self.input,
                buttons,
                self.usage,
                self.note,
                keys,
            ]
        )
        self.root.add_class("hf-magic-panel")

    @property
    def setting_widgets(self) -> dict[str, widgets.Text | widgets.Textarea]:
        """The Generation tab's widget for each of ``SETTING_FIELDS``."""
        return {name: getattr(self, name) for name in SETTING_FIELDS}

    def close(self) -> None:
        _close_tree(self.root)

    def setting_value(self, name: str) -> Any:
        """A Generation field as its ``Settings`` value: empty is the model's default (``None``).

        Raises:
            InvalidInputError: a number field that does not hold a number.
        """
        return _parse_setting(name, self.setting_widgets[name].value)

    # ------------------------------------------------------------------------- pickers
    def selected_model(self) -> str:
        return self.model_id.value.strip() or self.model_list.value or "default"

    def selected_spec(self) -> ModelSpec:
        """The model the pickers describe (what Load would load).

        Raises:
            InvalidInputError: the chosen combination is invalid (``ModelSpec`` checks itself).
        """
        if self.backend.value in ENGINES:
            return ModelSpec(
                model=self.selected_model(),
                engine=self.backend.value,
                gguf_file=(self.gguf_file.value.strip() or None) if self.backend.value == "llama.cpp" else None,
            )
        if self.backend.value == "endpoint":
            return ModelSpec(
                model=self.selected_model(),
                backend="endpoint",
                endpoint_url=self.endpoint_url.value.strip() or None,
                provider=self.provider.value.strip() or None,
            )
        return ModelSpec(
            model=self.selected_model(),
            backend="pipeline",
            device=None if self.device.value == AUTO else self.device.value,
            dtype=None if self.dtype.value == AUTO else self.dtype.value,
            quantize=None if self.quantize.value == "none" else self.quantize.value,  # ModelSpec checks the value
        )

    def show_spec(self, spec: ModelSpec) -> None:
        """Point the pickers at ``spec``; a picker already showing its value is left alone (and fires nothing)."""
        listed = spec.model in [value for _, value in self.model_list.options]
        _set(self.model_list, spec.model if listed else self.model_list.value)
        _set(self.model_id, "" if listed else spec.model)
        _set(self.backend, spec.engine or spec.backend)
        _set(self.gguf_file, spec.gguf_file or "")
        _set(self.device, spec.device if spec.device in self.device.options else AUTO)
        _set(self.dtype, spec.dtype if spec.dtype in self.dtype.options else AUTO)
        _set(self.quantize, spec.quantize or "none")
        _set(self.endpoint_url, spec.endpoint_url or "")
        _set(self.provider, spec.provider or "")

    def show_settings(self, settings: Settings) -> None:
        """Write ``settings`` into the Generation fields; a field that already reads the same is left alone."""
        for name, widget in self.setting_widgets.items():
            value = getattr(settings, name)
            _set(widget, "" if value is None else str(value))
        _set(self.thinking, THINKING_CHOICES.get(settings.enable_thinking, "default"))

    def show_model_choices(self, choices: Sequence[ModelChoice]) -> None:
        options = [(choice.label(), choice.model_id) for choice in choices]
        current = self.model_list.value
        self.model_list.options = options or [("default", "default")]
        if current in dict(options).values():
            self.model_list.value = current

    def show_search_results(self, choices: Sequence[ModelChoice], query: str) -> None:
        self.search_results.options = [(choice.label(), choice.model_id) for choice in choices]
        self.search_results.value = None
        self.search_results.layout.display = "flex" if choices else "none"
        if not choices:
            self.show_note(f"No text-generation model on the hub matches {query!r}.")

    # ------------------------------------------------------------------------ transcript
    def draw_transcript(self, turns: Sequence[Turn]) -> None:
        """Every recorded turn, newest first; a turn already drawn keeps its widget."""
        self._live.clear()
        children: list[widgets.Widget] = [view for _, view in self._ordered_views(turns)]
        self.transcript.children = tuple(children or [widgets.HTML(_EMPTY_TRANSCRIPT)])

    def draw_live_turn(self, turn: Turn, turns: Sequence[Turn], force: bool = False) -> None:
        """The reply being generated, on top; redrawn at most every ``REDRAW_SECONDS`` unless ``force`` (a tool call
        started or ended: rare, and each state is worth seeing)."""
        live = self._live.get(id(turn))
        if live is None:
            view = widgets.HTML(turn_html(turn, streaming=True))
            self._live[id(turn)] = (turn, view, time.perf_counter())
            # a re-run %%hfchat cell replaces its turn: hide the old one while the new one streams
            older = [w for t, w in self._ordered_views(turns) if not (turn.key is not None and t.key == turn.key)]
            self.transcript.children = (view, *older)
            return
        _, view, drawn = live
        now = time.perf_counter()
        if force or now - drawn >= REDRAW_SECONDS:
            view.value = turn_html(turn, streaming=True)
            self._live[id(turn)] = (turn, view, now)

    def _ordered_views(self, turns: Sequence[Turn]) -> list[tuple[Turn, widgets.HTML]]:
        """One view per recorded turn, newest first (the transcript box is column-reversed)."""
        views: dict[int, tuple[Turn, widgets.HTML]] = {}
        for turn in turns:
            known = self._turn_views.get(id(turn))
            drawn = turn_html(turn)
            if known is None or known[0] is not turn:
                known = (turn, widgets.HTML(drawn))
            elif known[1].value != drawn:
                known[1].value = drawn
            views[id(turn)] = known
        for key, (_, view) in self._turn_views.items():
            if key not in views:
                view.close()
        self._turn_views = views
        return list(reversed(list(views.values())))

    # ------------------------------------------------------------------------ progress
    def new_progress(self) -> WidgetProgress:
        """Bars for a new load, drawn in the Model tab; the previous load's bars go."""
        for row in self.progress_box.children:
            _close_tree(row)
        self.progress_box.children = ()
        return WidgetProgress(self.progress_box)

    # -------------------------------------------------------------------- status lines
    def show_status(self, text: str) -> None:
        self.status.value = f'<span class="hfm-status">{html.escape(text)}</span>'

    def show_buttons(self, *, generating: bool, busy: bool, loaded: bool) -> None:
        self.send_button.disabled = busy
        self.stop_button.disabled = not generating
        self.load_button.disabled = busy
        self.unload_button.disabled = busy or not loaded
        self.reset_button.disabled = generating

    def show_usage(self, line: str) -> None:
        self.usage.value = f'<div class="hfm-usage">{html.escape(line)}</div>' if line else ""

    def show_model_info(self, text: str) -> None:
        self.model_info.value = f'<span class="hfm-note">{html.escape(text)}</span>'

    def show_token_note(self, text: str) -> None:
        self.token_status.value = f'<span class="hfm-note">Token: {html.escape(text)}</span>'

    def show_note(self, text: str) -> None:
        self.note.value = f'<span class="hfm-note">{html.escape(text)}</span>' if text else ""

    def show_attachments(self) -> None:
        """Thumbnails of the images attached to the next message."""
        self.attachments.value = attachment_summary(self.attach.value)

    def show_error(self, message: str) -> None:
        self.error.value = f'<div class="hfm-error">⚠ {html.escape(" ".join(message.split()), quote=False)}</div>'

    def clear_error(self) -> None:
        self.error.value = ""


def _parse_setting(name: str, text: str) -> Any:
    """A Generation field's value for ``Settings``: empty means the model's default; numbers must parse."""
    text = text.strip()
    if name not in _NUMBER_SETTINGS:
        return text or None
    if not text:
        return None
    label, kind = _NUMBER_SETTINGS[name]
    try:
        return kind(text)
    except ValueError as exc:
        word = "a whole number" if kind is int else "a number"
        raise InvalidInputError(f"{label} must be {word}, got {text!r}: fix it, or clear it for the default.") from exc


def _set(widget: widgets.ValueWidget, value: object) -> None:
    """Assign only a new value: an equal one would still be sent to the browser."""
    if widget.value != value:
        widget.value = value


def _shown_if(shown_for: str) -> Callable[[str], str]:
    """A dlink transform: a box's display for the backend toggle's value (shown for ``shown_for`` only)."""
    return lambda backend: "flex" if backend == shown_for else "none"


def _button(description: str, icon: str, style: str = "", tooltip: str = "", width: str = "auto") -> widgets.Button:
    return widgets.Button(
        description=description, icon=icon, button_style=style, tooltip=tooltip, layout=widgets.Layout(width=width)
    )


def _label(text: str) -> widgets.HTML:
    """A row title aligned like the descriptions of the widgets around it."""
    return widgets.HTML(f'<div class="hfm-label">{html.escape(text)}</div>', layout=widgets.Layout(width="88px"))


def _field() -> widgets.Layout:
    return widgets.Layout(width="32%")


def _text(description: str, placeholder: str, **layout: str) -> widgets.Text:
    """A text box that reports its value once typing is done (Enter or leaving it), not on every key."""
    return widgets.Text(
        description=description, placeholder=placeholder, continuous_update=False, layout=widgets.Layout(**layout)
    )


def _number_field(description: str, placeholder: str) -> widgets.Text:
    field = _text(description, placeholder, width="48%")
    field.style.description_width = "90px"
    return field


def _run_script(output: widgets.Output, source: str) -> None:
    from IPython.display import Javascript

    output.append_display_data(Javascript(source))


def _close_tree(widget: widgets.Widget) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()
