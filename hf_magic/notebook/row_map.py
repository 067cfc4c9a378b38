"""A prompt over every row of a table (``%%hfchat --map``, ``hf_magic.map_rows``).

The template's ``{column}`` fields take each row's values (the brace-safe syntax of ``-i``); the rows go to the chat
model together (``ChatHuggingFace.batch_deltas``: batched on a local model, concurrent against a server) and each
reply, or each field of a ``schema``, becomes a column of a copy of the table, with an ``error`` column for rows that
failed. Finished rows are kept by key (model, template, settings, the row's values), so a run again, after an
interrupt or a failure, sends only the rows that are missing or failed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Generator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.utils.json import parse_json_markdown
from pydantic import BaseModel, ValidationError

from ..backend import ChatDelta
from ..errors import ContextWindowError, HfMagicError, InvalidInputError
from ..progress import ProgressCallback, ProgressEvent
from ..structured_output import json_schema_format
from .cell_options import field_names, interpolate
from .row_tables import Table, read_table, with_columns

ERROR_COLUMN = "error"
NOT_SENT = "not sent: the run was stopped before this row; run it again to resume"
_BAR_ID = -2  # one rows bar per run; apart from the download bars' ids (positive) and their total (-1)


# --------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class MapPlan:
    """A checked request to map ``template`` over ``table``: everything but the model, so that bad input is refused
    before a model loads."""

    table: Table
    template: str
    columns_used: list[str]
    schema: type[BaseModel] | None
    into: str
    concurrency: int | None

    @property
    def new_columns(self) -> list[str]:
        return [*(self.schema.model_fields if self.schema else [self.into]), ERROR_COLUMN]


def plan_map(
    data: Any,
    template: str,
    *,
    schema: Any = None,
    into: str = "reply",
    concurrency: Any = None,
    name: str = "DATA",
) -> MapPlan:
    """Check a map before anything loads or is sent; ``name`` is how errors call ``data``.

    Raises:
        InvalidInputError: not a table, an empty one, a ``{name}`` that is not a column, a template with no column,
            a schema that is not a pydantic model, a concurrency that is not a positive integer, or new columns
            that the table already has.
    """
    check_concurrency(concurrency)
    if schema is not None and not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        given = f"the class {schema.__name__}" if isinstance(schema, type) else f"a {type(schema).__name__} object"
        raise InvalidInputError(
            f"The schema must be a pydantic model class (class Name(pydantic.BaseModel): ...), got {given}."
        )
    table = read_table(data, name)
    text = template.strip()
    if not text:
        raise InvalidInputError("The template is empty: write the prompt, with {column} where each row's value goes.")
    columns = ", ".join(table.columns[:20]) + (", ..." if len(table.columns) > 20 else "")
    used = list(dict.fromkeys(_root(field_) for field_ in field_names(text)))
    for column in used:
        if column not in table.columns:
            raise InvalidInputError(f"{{{column}}} is not a column of {name}: its columns are {columns}.")
    if not used:
        raise InvalidInputError(
            f"The template uses no column of {name}: write {{column}} where each row's value goes ({columns})."
        )
    plan = MapPlan(table, text, used, schema, into, concurrency)
    clashes = [column for column in plan.new_columns if column in table.columns]
    if clashes:
        raise InvalidInputError(
            f"{name} already has a column {clashes[0]!r}: choose another name (--into / into=) or drop that column."
        )
    return plan


def check_concurrency(value: Any) -> None:
    """Refuse a concurrency that is not a positive integer (``None`` is the default).

    Raises:
        InvalidInputError: anything else.
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInputError(f"The concurrency must be a positive integer, got {value!r}: e.g. 8.")


def _root(field_: str) -> str:
    match = re.match(r"[A-Za-z_]\w*", field_)
    return match.group(0) if match else field_


def _cell_text(value: Any) -> str:
    """A row's value as the template writes it: missing values (None, NaN) as nothing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


# ------------------------------------------------------------------------ rows and their keys
@dataclass
class RowResult:
    """What one row came back with: the reply (or the schema's fields), or why it failed."""

    reply: str | None = None
    fields: dict[str, Any] | None = None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0


class ResultStore:
    """Finished rows by key, kept for the kernel's life (the oldest go past ``limit``): what a run resumes from."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._rows: OrderedDict[str, RowResult] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> RowResult | None:
        with self._lock:
            return self._rows.get(key)

    def put(self, key: str, result: RowResult) -> None:
        with self._lock:
            self._rows[key] = result
            while len(self._rows) > self.limit:
                self._rows.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()

    def __len__(self) -> int:
        return len(self._rows)


_STORE = ResultStore()


def result_store() -> ResultStore:
    """The kernel-wide store ``map_rows`` and ``%%hfchat --map`` resume from."""
    return _STORE


def model_key(chat_model: Any) -> str:
    """The model a row was answered by: backend, model name, the server's URL or, locally, the weights' dtype."""
    llm = chat_model.llm
    where = getattr(llm, "endpoint_url", None) or getattr(getattr(llm, "model", None), "dtype", None)
    return f"{type(llm).__name__}:{llm.model_name}" + (f"@{where}" if where is not None else "")


def row_key(model: str, template: str, settings: dict[str, Any], values: dict[str, str]) -> str:
    """A row's key: equal exactly when the model, template, settings and the row's values in it are."""
    payload = json.dumps([model, template, settings, sorted(values.items())], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


# ------------------------------------------------------------------------------- the run
@dataclass
class MapRun:
    """A finished (or stopped) map: the new table and what it took."""

    frame: Any
    rows: int
    sent: int
    """Rows answered in this run (failed ones included)."""
    resumed: int
    """Rows taken from an earlier run."""
    failed: int
    left: int
    """Rows not sent: the run was stopped first."""
    input_tokens: int
    output_tokens: int
    seconds: float
    model: str
    template: str
    columns: list[str] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.left > 0

    @property
    def rows_per_second(self) -> float | None:
        return self.sent / self.seconds if self.sent and self.seconds > 0 else None

    def totals(self) -> str:
        """One line: rows, tokens, time and rows/s."""
        parts = [f"{self.rows} rows"]
        if self.resumed:
            parts.append(f"{self.resumed} resumed")
        if self.failed:
            parts.append(f"{self.failed} failed ({ERROR_COLUMN!r} column)")
        if self.left:
            parts.append(f"stopped with {self.left} not sent: run it again to resume")
        parts.append(f"{self.input_tokens + self.output_tokens:,} tokens")
        parts.append(f"{self.seconds:.1f} s")
        if self.rows_per_second:
            parts.append(f"{self.rows_per_second:.2f} rows/s")
        return " · ".join(parts)

    def summary(self) -> dict[str, Any]:
        """The run as JSON-ready values: what the "map_finished" session event carries."""
        return {
            "model": self.model,
            "template": self.template,
            "columns": list(self.columns),
            "rows": self.rows,
            "sent": self.sent,
            "resumed": self.resumed,
            "failed": self.failed,
            "left": self.left,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "seconds": round(self.seconds, 3),
        }


def run_map(
    plan: MapPlan,
    chat_model: Any,
    *,
    system_prompt: str | None = None,
    progress: ProgressCallback | None = None,
    store: ResultStore | None = None,
    resume: bool = True,
    cancel: threading.Event | None = None,
    **settings: Any,
) -> MapRun:
    """Send ``plan``'s rows that ``store`` does not hold yet to ``chat_model``; return the new table.

    ``settings`` are generation settings for every row (``temperature``, ``max_new_tokens``...). Ctrl-C or
    ``cancel`` stops the run: finished rows are kept (in the table and the store), the others get ``NOT_SENT`` in
    the error column. ``resume=False`` sends every row again.
    """
    store = store if store is not None else _STORE
    settings = {name: value for name, value in settings.items() if value is not None}
    key_settings = {**settings, "system": system_prompt, "schema": _schema_key(plan.schema)}
    model = model_key(chat_model)
    prompts, keys = [], []
    for row in plan.table.rows:
        used: dict[str, str] = {}
        prompts.append(interpolate(plan.template, row, _cell_text, used))
        keys.append(row_key(model, plan.template, key_settings, used))
    results: list[RowResult | None] = [store.get(key) if resume else None for key in keys]
    todo = [index for index, result in enumerate(results) if result is None]
    if plan.schema is not None:
        settings["response_format"] = json_schema_format(plan.schema)
    bar = _RowsBar(progress, len(todo))
    started = time.perf_counter()
    replies = chat_model.batch_deltas(
        [_messages(system_prompt, prompts[index]) for index in todo],
        concurrency=plan.concurrency,
        cancel=cancel,
        **settings,
    )
    try:
        with closing(_iterator(replies)) as finished:  # closing it stops generation whatever ends the loop
            for position, reply in finished:
                index = todo[position]
                result = _row_result(reply, plan.schema)
                results[index] = result
                if result.error is None:
                    store.put(keys[index], result)
                bar.advance(result)
    except KeyboardInterrupt:  # Ctrl-C / a kernel interrupt: the rows not finished are left for the next run
        pass
    seconds = time.perf_counter() - started
    bar.close()
    frame = with_columns(plan.table, _columns(plan, results))
    sent = [results[index] for index in todo if results[index] is not None]
    return MapRun(
        frame=frame,
        rows=len(results),
        sent=len(sent),
        resumed=len(results) - len(todo),
        failed=sum(1 for result in results if result is not None and result.error is not None),
        left=sum(1 for result in results if result is None),
        input_tokens=sum(result.input_tokens for result in sent if result),
        output_tokens=sum(result.output_tokens for result in sent if result),
        seconds=seconds,
        model=model,
        template=plan.template,
        columns=plan.new_columns,
    )


def _iterator(replies: Any) -> Generator[tuple[int, ChatDelta | HfMagicError], None, None]:
    """``replies`` as a generator, so that ``closing`` can close it (and with it the backend's generation)."""
    yield from replies


def _messages(system_prompt: str | None, prompt: str) -> list[BaseMessage]:
    messages: list[BaseMessage] = [SystemMessage(content=system_prompt)] if system_prompt else []
    return [*messages, HumanMessage(content=prompt)]


def _schema_key(schema: type[BaseModel] | None) -> Any:
    return None if schema is None else json.dumps(schema.model_json_schema(), sort_keys=True)


def _row_result(reply: ChatDelta | HfMagicError, schema: type[BaseModel] | None) -> RowResult:
    if isinstance(reply, ContextWindowError):  # its remedy speaks of a conversation; a row has none
        return RowResult(error=str(reply.with_remedy("shorten this row's values or the template")))
    if isinstance(reply, HfMagicError):
        return RowResult(error=str(reply))
    usage = reply.usage
    result = RowResult(
        input_tokens=usage.input_tokens if usage else 0, output_tokens=usage.output_tokens if usage else 0
    )
    if schema is None:
        result.reply = reply.text
        return result
    try:
        result.fields = schema.model_validate(parse_json_markdown(reply.text)).model_dump()
    except (ValidationError, ValueError) as exc:
        if reply.finish_reason == "length":  # a server's reply; a local grammar closes the JSON in time
            result.error = "The reply was cut at max_new_tokens before its JSON closed: raise max_new_tokens."
        else:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            result.error = f"Invalid structured output ({reason}): {reply.text[:80]!r}"
    return result


def _columns(plan: MapPlan, results: list[RowResult | None]) -> dict[str, list[Any]]:
    """The new columns: the reply (or each schema field) and the error, one value per row."""
    names = list(plan.schema.model_fields) if plan.schema else [plan.into]
    columns: dict[str, list[Any]] = {name: [] for name in [*names, ERROR_COLUMN]}
    for result in results:
        values = (result.fields or {}) if result is not None and plan.schema else {}
        for name in names:
            columns[name].append(values.get(name) if plan.schema else (result.reply if result else None))
        columns[ERROR_COLUMN].append(NOT_SENT if result is None else result.error)
    return columns


class _RowsBar:
    """The run's one progress bar: rows done of those sent, with their tokens (rate and ETA: progress_views)."""

    def __init__(self, progress: ProgressCallback | None, total: int) -> None:
        self._progress = progress
        self.total = total
        self.done = 0
        self.tokens = 0
        self._send(False)

    def advance(self, result: RowResult) -> None:
        self.done += 1
        self.tokens += result.input_tokens + result.output_tokens
        self._send(False)

    def close(self) -> None:
        self._send(True)  # the bar's last event, whether every row was sent or the run was stopped

    def _send(self, done: bool) -> None:
        if self._progress is not None and self.total:
            event = ProgressEvent("generate", "Rows", self.done, self.total, "rows", done, _BAR_ID, self.tokens)
            self._progress(event)
