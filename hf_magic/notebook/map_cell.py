"""``%%hfchat --map DATA`` and ``hf_magic.map_rows``: a map (``row_map.py``) run on a session's model or a given chat
model, with its progress bar, and what the cell shows afterwards (a preview of the new table and the totals)."""

from __future__ import annotations

import argparse
import html
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from ..progress import ProgressCallback
from .cell_options import spec_from_options
from .model_spec import ModelSpec
from .progress_views import ProgressView, make_progress_view
from .row_map import MapPlan, MapRun, plan_map, run_map
from .row_tables import preview
from .turns import SessionEvent

if TYPE_CHECKING:
    from .magics import HfChatMagics
    from .session import ChatSession

PREVIEW_ROWS = 10

MAP_ONLY_OPTIONS = ("into", "schema", "concurrency", "fresh")
"""``%%hfchat`` options that mean something only with ``--map``."""


def map_in_session(
    session: ChatSession,
    plan: MapPlan,
    *,
    spec: ModelSpec | None = None,
    load_progress: ProgressCallback | None = None,
    progress: ProgressCallback | None = None,
    system_prompt: str | None = None,
    resume: bool = True,
    **settings: Any,
) -> MapRun:
    """Run ``plan`` on the session's model (``spec`` loaded first, as a cell would).

    The session is held meanwhile (a panel's Send waits), its Stop stops the run, and its listeners hear a
    "map_finished" event with the run's summary. The session's system prompt and generation settings apply unless
    given; no turn is recorded.

    Raises:
        InvalidInputError: a reply is being generated in the session.
        HfMagicError: the model cannot be loaded.
    """
    cancel = threading.Event()
    unsubscribe = session.subscribe(lambda event: cancel.set() if event.kind == "stop_requested" else None)
    try:
        with session.exclusive("map a prompt over a table"):
            chat_model = session.load(spec, progress=load_progress)
            given = {name: value for name, value in settings.items() if value is not None}
            run = run_map(
                plan,
                chat_model,
                system_prompt=session.settings.system_prompt if system_prompt is None else system_prompt or None,
                progress=progress,
                resume=resume,
                cancel=cancel,
                **{**session.settings.call_kwargs(), **given},
            )
    finally:
        unsubscribe()
    session.emit(SessionEvent("map_finished", text=plan.template, detail=run.summary()))
    return run


def map_rows(
    data: Any,
    template: str,
    *,
    chat_model: Any = None,
    session: ChatSession | None = None,
    schema: Any = None,
    into: str = "reply",
    concurrency: int | None = None,
    system_prompt: str | None = None,
    resume: bool = True,
    progress: bool | ProgressCallback = True,
    **settings: Any,
) -> Any:
    """Ask ``template`` of every row of ``data``: a copy of ``data`` with each row's reply in a new column.

    Args:
        data: a pandas or polars DataFrame, a Series, or a list (of values, read as column ``value``, or of dicts).
        template: the prompt; ``{column}`` takes each row's value (``{column.attr}``, ``{column[key]}`` too).
        chat_model: a ``ChatHuggingFace``; by default the default session's model (loaded if need be).
        session: the ``ChatSession`` whose model to use (default: the kernel's default session).
        schema: a pydantic model: each reply is structured output (grammar-constrained locally) and each field a
            column.
        into: the reply's column (default ``reply``); ignored with a schema.
        concurrency: rows per batch on a local model, requests in flight against a server (defaults 32 and 8).
        system_prompt: sent before each row (default: the session's).
        resume: take rows already answered (same model, template, settings and values) from earlier runs.
        progress: draw a progress bar (True), none (False), or send ``ProgressEvent``s to this callback.
        settings: generation settings for every row: ``max_new_tokens``, ``temperature``, ``top_p``...

    Returns:
        A new DataFrame of ``data``'s library (pandas for a list, when installed) with the new columns and
        ``error`` (None, or why that row has no reply). ``data`` is never changed. Stopped by Ctrl-C, it holds the
        rows finished so far; calling again sends only the rest.

    Raises:
        InvalidInputError: ``data`` is not a table or is empty, a ``{name}`` is not a column, ``schema`` is not a
            pydantic model, ``concurrency`` is not a positive integer.

    Example:
        >>> reviews = pd.DataFrame({"review": ["Great value!", "Broke in a day."]})
        >>> labeled = hf_magic.map_rows(reviews, "Positive or negative? {review}", max_new_tokens=8)
        >>> labeled[["review", "reply", "error"]]
    """
    plan = plan_map(data, template, schema=schema, into=into, concurrency=concurrency, name="data")
    view = _progress(progress)
    try:
        if chat_model is not None:
            run = run_map(plan, chat_model, system_prompt=system_prompt, progress=view, resume=resume, **settings)
        else:
            from .session import get_session

            run = map_in_session(
                session or get_session(),
                plan,
                load_progress=view,
                progress=view,
                system_prompt=system_prompt,
                resume=resume,
                **settings,
            )
    finally:
        if view is not None and hasattr(view, "close"):
            view.close()
    return run.frame


def _progress(progress: bool | ProgressCallback) -> ProgressCallback | ProgressView | None:
    if callable(progress):
        return progress
    if not progress:
        return None
    from IPython import get_ipython

    return make_progress_view(type(get_ipython()).__name__ == "ZMQInteractiveShell")


# --------------------------------------------------------------------------------- the cell
def run_map_cell(magics: HfChatMagics, session: ChatSession, options: argparse.Namespace, cell: str) -> None:
    """A ``%%hfchat --map DATA`` cell: every option checked first, then the model loaded, the rows sent, the preview
    and totals shown, and the new table stored in ``-o VAR``.

    Raises:
        InvalidInputError: a bad DATA, template, ``--schema`` or ``--concurrency`` (one line each).
    """
    namespace: Mapping[str, Any] = magics.shell.user_ns if magics.shell is not None else {}
    data = _lookup(namespace, options.map, "--map", "a DataFrame, Series or list")
    schema = _lookup(namespace, options.schema, "--schema", "a pydantic model") if options.schema else None
    plan = plan_map(
        data,
        cell,
        schema=schema,
        into=options.into or "reply",
        concurrency=_concurrency(options.concurrency),
        name=options.map,
    )
    spec = spec_from_options(session.spec, options)
    max_new_tokens = options.max_new_tokens if options.max_new_tokens is not None else magics.max_new_tokens
    if max_new_tokens is not None and max_new_tokens <= 0:
        raise InvalidInputError(f"--max-new-tokens must be a positive integer, got {max_new_tokens}: try 64.")
    load_view = make_progress_view(magics.notebook)
    try:
        session.load(spec, progress=load_view)
    finally:
        load_view.close()
    rows_view = make_progress_view(magics.notebook)  # made now, so its time counts the rows, not the load
    try:
        run = map_in_session(
            session,
            plan,
            spec=spec,
            progress=rows_view,
            system_prompt=options.system,
            resume=not options.fresh,
            temperature=options.temperature if options.temperature is not None else magics.temperature,
            max_new_tokens=max_new_tokens,
            enable_thinking=options.think,
        )
    finally:
        rows_view.close()
    magics.show(MapPreview(run, options.output))
    if options.output:
        assert magics.shell is not None  # a magic always runs in a shell
        magics.shell.user_ns[options.output] = run.frame


def check_map_options(options: argparse.Namespace) -> None:
    """Refuse ``--into``, ``--schema``, ``--concurrency`` or ``--fresh`` without ``--map``.

    Raises:
        InvalidInputError: one of them was given without ``--map``.
    """
    if options.map is None:
        for name in MAP_ONLY_OPTIONS:
            if getattr(options, name, None) not in (None, False):
                raise InvalidInputError(f"--{name} works with --map only: %%hfchat --map DATA --{name} ...")


def _lookup(namespace: Mapping[str, Any], name: str, option: str, what: str) -> Any:
    if name not in namespace:
        raise InvalidInputError(f"{option} {name}: no variable {name!r} in the notebook; pass the name of {what}.")
    return namespace[name]


def _concurrency(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise InvalidInputError(f"--concurrency must be a positive integer, got {text!r}: e.g. --concurrency 8.")
    return value


@dataclass
class MapPreview:
    """What a map cell shows: the first rows of the new table and one line of totals."""

    run: MapRun
    output: str | None = None

    def _footer(self) -> str:
        stored = f" · stored in {self.output}" if self.output else ""
        shown = f" (first {PREVIEW_ROWS} shown)" if self.run.rows > PREVIEW_ROWS else ""
        return f"{self.run.totals()}{shown}{stored}"

    def __repr__(self) -> str:
        return f"{preview(self.run.frame, PREVIEW_ROWS)!r}\n{self._footer()}"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        table = preview(self.run.frame, PREVIEW_ROWS)
        table_html = table._repr_html_() if hasattr(table, "_repr_html_") else f"<pre>{html.escape(repr(table))}</pre>"
        footer = html.escape(self._footer())
        return {
            "text/plain": repr(self),
            "text/html": f"{table_html}<div style='font-size:.85em;opacity:.75'>{footer}</div>",
        }
