"""Progress sinks: draw ``ProgressEvent``s as ipywidgets bars (notebook) or a text line (terminal), then
collapse them to one summary line when the operation is done."""

from __future__ import annotations

import html
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from .. import config
from ..progress import ProgressEvent
from .units import format_bytes

_REFRESH_SECONDS = 0.1
"""Redraw at most this often per bar: a download reports every chunk, far more than anyone can read."""


def _amount(current: float, total: float | None, unit: str) -> str:
    if unit == "B":
        return f"{format_bytes(current)}/{format_bytes(total)}" if total else format_bytes(current)
    return f"{current:.0f}/{total:.0f}" if total else f"{current:.0f}"


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


@dataclass
class _Bar:
    stage: str
    label: str
    current: float = 0.0
    total: float | None = None
    unit: str = "it"
    done: bool = False
    tokens: int | None = None
    started: float = field(default_factory=time.perf_counter)

    def text(self) -> str:
        """What the bar says beside it: the amount; for replies (rows) also their rate, the time left and tokens."""
        amount = _amount(self.current, self.total, self.unit)
        if self.stage != "generate":
            return amount
        elapsed = time.perf_counter() - self.started
        rate = self.current / elapsed if elapsed > 0 and self.current else None
        parts = [amount]  # the bar's label names what is counted ("Rows")
        if rate:
            parts.append(f"{rate:.2f} {self.unit}/s")
            if self.total and not self.done:
                parts.append(f"ETA {_clock((self.total - self.current) / rate)}")
        if self.tokens is not None:
            parts.append(f"{self.tokens:,} tokens")
        return " · ".join(parts)


def _counts_files(stage: str, label: str) -> bool:
    """huggingface_hub's "Fetching N files" counter: it repeats what the per-file byte bars say."""
    return stage == "download" and label.startswith("Fetching")


@dataclass
class ProgressState:
    """What every bar of one operation has reported so far; knows how to summarise itself."""

    bars: dict[int, _Bar] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def update(self, event: ProgressEvent) -> _Bar:
        bar = self.bars.setdefault(event.bar_id, _Bar(event.stage, event.label))
        bar.label = event.label or bar.label
        bar.current, bar.total, bar.unit = event.current, event.total, event.unit
        bar.tokens = event.tokens if event.tokens is not None else bar.tokens
        bar.done = bar.done or event.done
        return bar

    def download_bytes(self) -> tuple[float, float | None]:
        """Bytes fetched and expected across all files (the "total" bar)."""
        files = [b for b in self.bars.values() if b.stage == "download" and b.unit == "B"]
        current = sum(b.current for b in files)
        totals = [b.total for b in files]
        return current, (sum(t for t in totals if t) if all(totals) else None)

    def summary(self) -> str:
        """One line, e.g. ``Downloaded 5 files (270.1 MB) · Loading weights 272/272 · 4.2 s``."""
        parts: list[str] = []
        files = [b for b in self.bars.values() if b.stage == "download" and b.unit == "B"]
        if files:
            current, _ = self.download_bytes()
            parts.append(f"Downloaded {len(files)} file{'s' if len(files) != 1 else ''} ({format_bytes(current)})")
        for bar in self.bars.values():
            if bar.stage != "download" or bar.unit != "B":
                if _counts_files(bar.stage, bar.label):
                    continue
                parts.append(f"{bar.label or bar.stage} {bar.text()}")
        parts.append(f"{time.perf_counter() - self.started:.1f} s")
        return " · ".join(parts)


class ProgressView(Protocol):
    """A progress callback that can be closed, which collapses what it drew into a summary."""

    def __call__(self, event: ProgressEvent) -> None: ...

    def close(self) -> None: ...


@dataclass
class Summary:
    """The one line left behind when the bars go (kept in the saved notebook)."""

    text: str

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {
            "text/plain": f"✓ {self.text}",
            "text/html": f"<div style='font-size:.8em;opacity:.65'>✓ {html.escape(self.text)}</div>",
        }


class SilentProgress:
    """Draws nothing (``HF_HUB_DISABLE_PROGRESS_BARS``); still keeps the state for a summary."""

    def __init__(self) -> None:
        self.state = ProgressState()

    def __call__(self, event: ProgressEvent) -> None:
        self.state.update(event)

    def close(self) -> None:
        return None


class TerminalProgress:
    """Progress as text: one line rewritten in place on a terminal, then the summary line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.state = ProgressState()
        self._stream = stream
        self._last_draw = 0.0
        self._width = 0
        self._lock = threading.Lock()  # files download on several threads

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def _live(self) -> bool:
        # Rewriting a line with "\r" only reads well on a terminal; logs get just the summary.
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            self._on_event(event)

    def _on_event(self, event: ProgressEvent) -> None:
        bar = self.state.update(event)
        now = time.perf_counter()
        if not self._live() or (now - self._last_draw < _REFRESH_SECONDS and not event.done):
            return
        self._last_draw = now
        line = f"{bar.label}: {bar.text()}"
        if event.stage == "download":
            current, total = self.state.download_bytes()
            line = f"{line} | total {_amount(current, total, 'B')}"
        self._draw(line)

    def _draw(self, line: str) -> None:
        padding = " " * max(0, self._width - len(line))
        self.stream.write(f"\r{line}{padding}")
        self.stream.flush()
        self._width = len(line)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if not self.state.bars:
            return
        if self._live():
            self._draw("")
            self.stream.write("\r")
        self.stream.write(f"✓ {self.state.summary()}\n")
        self.stream.flush()


class WidgetProgress:
    """Progress as ipywidgets bars: one per file and a total for downloads, one per loading stage.

    Args:
        container: an ipywidgets box to draw the bars into (the panel's); by default the bars are displayed
            as a cell output of their own.

    Nothing is displayed until the first event, so reusing a loaded model shows nothing. On close, bars of
    their own output are replaced, through the same display handle, by a one-line summary; bars drawn into
    a container stay there, complete.
    """

    def __init__(self, container: Any = None) -> None:
        self.state = ProgressState()
        self._handle: Any = None
        self._container = container
        self._box: Any = None
        self._rows: dict[int, tuple[Any, Any]] = {}
        self._lines: dict[int, Any] = {}  # each row's box, made once: re-wrapping rows would leak widgets
        self._last_draw: dict[int, float] = {}
        self._lock = threading.Lock()  # files download on several threads: one box, one display

    def _row(self, key: int, description: str) -> tuple[Any, Any]:
        import ipywidgets as widgets
        from IPython.display import display

        if self._box is None and self._container is not None:
            self._box = self._container
        elif self._box is None:
            self._box = widgets.VBox()
            self._handle = display(self._box, display_id=True)
        if key not in self._rows:
            bar = widgets.FloatProgress(value=0, min=0, max=1, description=description[:28])
            bar.style.description_width = "initial"
            bar.add_class("hf-magic-progress")
            label = widgets.Label()
            self._rows[key] = (bar, label)
            self._lines[key] = widgets.HBox([bar, label])
            # the total download bar (key -1) stays last
            keys = sorted(self._rows, key=lambda k: (k == -1, list(self._rows).index(k)))
            self._box.children = tuple(self._lines[k] for k in keys)
        return self._rows[key]

    def _draw(self, key: int, description: str, current: float, total: float | None, text: str, done: bool) -> None:
        now = time.perf_counter()
        if not done and now - self._last_draw.get(key, 0.0) < _REFRESH_SECONDS:
            return
        self._last_draw[key] = now
        bar, label = self._row(key, description)
        bar.value = min(1.0, current / total) if total else (1.0 if done else 0.0)
        bar.bar_style = "success" if done else ""
        label.value = text

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            self._on_event(event)

    def _on_event(self, event: ProgressEvent) -> None:
        bar = self.state.update(event)
        if _counts_files(event.stage, event.label):
            return
        self._draw(event.bar_id, event.label or event.stage, event.current, event.total, bar.text(), event.done)
        if event.stage == "download" and event.unit == "B":
            current, total = self.state.download_bytes()
            complete = bool(total) and current >= (total or 0)
            self._draw(-1, "Total download", current, total, _amount(current, total, "B"), complete)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._container is not None:
            for bar, _ in self._rows.values():  # the operation ended: every stage it reported is complete
                bar.value, bar.bar_style = 1.0, "success"
            return
        if self._handle is None:
            return
        self._handle.update(Summary(self.state.summary()))
        for bar, label in self._rows.values():
            bar.close()
            label.close()
        for line in self._lines.values():
            line.close()
        self._box.close()
        self._handle = self._box = None
        self._rows.clear()
        self._lines.clear()


def make_progress_view(notebook: bool, stream: TextIO | None = None) -> ProgressView:
    """The right sink for where the user is: widget bars in a notebook kernel, text elsewhere."""
    if config.progress_disabled():
        return SilentProgress()
    return WidgetProgress() if notebook else TerminalProgress(stream)
