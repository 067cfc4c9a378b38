"""Progress as events: downloads and weight loading report ``ProgressEvent``s to a callback.

Libraries report progress through tqdm. ``event_tqdm`` builds a tqdm class that forwards every
update to a callback instead of drawing, and ``capture_transformers_progress`` routes transformers'
own bars ("Loading weights", GGUF conversion) through it. Views decide how to draw the events.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

# The plain tqdm base: tqdm.auto's notebook variant would display its own widget from __init__.
from tqdm.std import tqdm as auto_tqdm

Stage = Literal["download", "convert", "load", "compile", "generate"]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long operation.

    Attributes:
        stage: what is happening: fetching bytes, converting the embedded model, loading weights, compiling the
            decode step, generating replies (rows of a ``--map``).
        label: the bar's description (a file name, "Loading weights"...).
        current: units done so far.
        total: units expected, or None when unknown.
        unit: "B" for bytes, "it" for items such as tensors or shards.
        done: True on the bar's last event.
        bar_id: tells concurrent bars (one per file) apart.
        tokens: tokens spent so far, for work measured in replies (rows of a ``--map``); None otherwise.
    """

    stage: Stage
    label: str
    current: float
    total: float | None
    unit: str = "it"
    done: bool = False
    bar_id: int = 0
    tokens: int | None = None

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.current / self.total)


ProgressCallback = Callable[[ProgressEvent], None]


def _ignore(_: ProgressEvent) -> None:
    return None


class _EventTqdm(auto_tqdm):
    """A tqdm that draws nothing and forwards its state to ``_callback`` (set by ``event_tqdm``)."""

    _callback: ProgressCallback = _ignore
    _stage: Stage = "download"
    # No TMonitor thread: it only nudges bars drawn on a terminal, and tqdm starts it while holding its class
    # lock. When that new thread's start-up garbage-collects another bar, the bar's close() waits for the same
    # lock and every download thread hangs (seen in the panel's download test).
    monitor_interval = 0
    _ids = iter(range(1, 1 << 62))
    _ids_lock = threading.Lock()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("name", None)  # huggingface_hub's tqdm takes a logger name; plain tqdm does not
        kwargs["file"] = io.StringIO()
        kwargs["disable"] = False
        kwargs["mininterval"] = 0
        with _EventTqdm._ids_lock:
            self._bar_id = next(_EventTqdm._ids)
        self._finished = False
        super().__init__(*args, **kwargs)
        self._emit()

    def _emit(self, done: bool = False) -> None:
        type(self)._callback(
            ProgressEvent(
                stage=type(self)._stage,
                label=str(self.desc or "").rstrip(": "),
                current=float(self.n),
                total=float(self.total) if self.total else None,
                unit=str(self.unit or "it"),
                done=done,
                bar_id=self._bar_id,
            )
        )

    def update(self, n: float | None = 1) -> bool | None:
        result = super().update(n)
        self._emit()
        return result

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        super().refresh(*args, **kwargs)
        if not self._finished:
            self._emit()

    def display(self, *args: Any, **kwargs: Any) -> None:  # nothing is drawn
        return None

    def close(self) -> None:
        if not self._finished and not self.disable:
            self._finished = True
            self._emit(done=True)
        super().close()


def event_tqdm(callback: ProgressCallback, stage: Stage) -> type[auto_tqdm]:
    """Return a tqdm class whose bars report to ``callback`` as ``stage`` events."""
    return type(
        "HfMagicTqdm",
        (_EventTqdm,),
        {"_callback": staticmethod(callback), "_stage": stage},
    )


@contextlib.contextmanager
def capture_transformers_progress(callback: ProgressCallback | None, stage: Stage = "load") -> Iterator[None]:
    """Route transformers' progress bars (weight loading, GGUF conversion) to ``callback``.

    Uses transformers' own ``set_tqdm_hook``; the hook is restored on exit. With no callback,
    transformers' bars are silenced so that nothing is printed behind the caller's back.
    """
    from transformers.utils import logging as hf_logging

    bar_class = event_tqdm(callback or _ignore, stage)

    def hook(_factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return bar_class(*args, **kwargs)

    previous = hf_logging.set_tqdm_hook(hook)
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)
