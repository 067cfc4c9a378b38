"""The tables a prompt is mapped over: pandas or polars DataFrames and Series, and lists, read as rows of named
values, and the copy that comes back with new columns. Neither pandas nor polars is imported unless the table
is one of theirs; the table given is never changed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError

VALUE_COLUMN = "value"
"""The column a list, or a Series without a name, is read as: ``{value}`` in the template."""


@dataclass(frozen=True)
class Table:
    """A table as rows: its column names, each row's values by column, and the table it was read from."""

    source: Any
    kind: str
    """"pandas", "polars" or "list"."""
    columns: list[str]
    rows: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.rows)


def _library(data: Any) -> str:
    return type(data).__module__.split(".")[0]


def read_table(data: Any, name: str = "DATA") -> Table:
    """``data`` as a Table; ``name`` is how errors call it.

    Raises:
        InvalidInputError: ``data`` is not a DataFrame, Series or list, or has no rows.
    """
    library, kind = _library(data), type(data).__name__
    if library == "pandas" and kind == "Series":
        data = data.to_frame(data.name if data.name is not None else VALUE_COLUMN)
    if library == "polars" and kind == "Series":
        data = data.to_frame(data.name or VALUE_COLUMN)
    if library in ("pandas", "polars") and type(data).__name__ == "DataFrame":
        columns = [str(column) for column in data.columns]
        records = data.to_dict("records") if library == "pandas" else data.to_dicts()
        rows = [{str(key): value for key, value in record.items()} for record in records]
        table = Table(data, library, columns, rows)
    elif isinstance(data, (list, tuple)):
        table = _list_table(data)
    else:
        what = f"the class {data.__name__}" if isinstance(data, type) else f"a {type(data).__name__}"
        raise InvalidInputError(
            f"{name} is {what}, not a table: pass a pandas or polars DataFrame, a Series or a list."
        )
    if not table.rows:
        raise InvalidInputError(f"{name} is empty: there are no rows to send.")
    return table


def _list_table(items: Sequence[Any]) -> Table:
    """A list of dicts is rows with those keys as columns; any other list is one column, ``value``."""
    if items and all(isinstance(item, Mapping) for item in items):
        columns = list(dict.fromkeys(str(key) for item in items for key in item))
        rows = [{column: item.get(column) for column in columns} for item in items]
        return Table(list(items), "list", columns, rows)
    return Table(list(items), "list", [VALUE_COLUMN], [{VALUE_COLUMN: item} for item in items])


def with_columns(table: Table, new: dict[str, list[Any]]) -> Any:
    """A copy of the table with ``new`` columns (name -> one value per row) after its own: a DataFrame of the
    table's library; for a list, a pandas DataFrame (polars when pandas is not installed)."""
    if table.kind == "pandas" or (table.kind == "list" and _importable("pandas")):
        import pandas as pd

        frame = table.source.copy() if table.kind == "pandas" else pd.DataFrame(table.rows, columns=table.columns)
        for column, values in new.items():
            frame[column] = pd.Series(values, index=frame.index, dtype=_pandas_dtype(values))
        return frame
    if table.kind == "polars" or _importable("polars"):
        import polars as pl

        frame = table.source if table.kind == "polars" else pl.DataFrame(table.rows)
        # polars frames are immutable: with_columns returns a new one, the source is untouched.
        return frame.with_columns([pl.Series(column, values, strict=False) for column, values in new.items()])
    return [{**row, **{name: values[index] for name, values in new.items()}} for index, row in enumerate(table.rows)]


def _pandas_dtype(values: list[Any]) -> Any:
    # Text stays object (None for missing) rather than pandas 3's string dtype, which writes missing as NaN.
    return object if any(isinstance(value, str) for value in values) else None


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def preview(frame: Any, rows: int = 10) -> Any:
    """The first ``rows`` rows of what ``with_columns`` returned, for display."""
    if isinstance(frame, list):
        return frame[:rows]
    return frame.head(rows)
