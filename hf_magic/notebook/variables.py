"""User variables as text for a model: DataFrames as bounded Markdown tables, arrays with shape and dtype, long
values cut with a marker (what ``-i`` puts in place of ``{name}``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

MAX_CHARS = 4000
"""Longest text one interpolated value becomes; the rest is cut with a marker that says how much went."""
MAX_ROWS = 10
"""Rows of a DataFrame or Series shown (the first ones); shape says how many there are."""
MAX_COLUMNS = 20
MAX_CELL_CHARS = 60
"""Longest text of one table cell: one long string must not crowd out the rest of the table."""


@dataclass(frozen=True)
class Limits:
    """How much of a value the model sees."""

    chars: int = MAX_CHARS
    rows: int = MAX_ROWS
    columns: int = MAX_COLUMNS
    cell_chars: int = MAX_CELL_CHARS


def cut(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its start and a marker saying how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [cut: {len(text) - limit:,} more characters]"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table; ``|`` and newlines in cells are escaped so the table stays one."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell(text) for text in line) + " |" for line in lines)


def _module_loaded(value: Any, package: str) -> bool:
    """True when ``value`` comes from ``package`` and that package is imported already (it stays optional)."""
    return type(value).__module__.split(".")[0] == package and package in sys.modules


def describe_value(value: Any, limits: Limits | None = None) -> str:
    """``value`` as text for a prompt: pandas and numpy values get their shape, dtypes and a bounded preview;
    anything else is ``str(value)``; the result never exceeds ``limits.chars`` (plus the cut marker)."""
    limits = limits or Limits()
    if _module_loaded(value, "pandas"):
        import pandas

        if isinstance(value, pandas.DataFrame):
            return cut(_dataframe_text(value, limits), limits.chars)
        if isinstance(value, pandas.Series):
            return cut(_series_text(value, limits), limits.chars)
    if _module_loaded(value, "numpy"):
        import numpy

        if isinstance(value, numpy.ndarray):
            return cut(_array_text(value, limits), limits.chars)
    return cut(str(value), limits.chars)


def _value_text(value: Any, limits: Limits) -> str:
    return cut(str(value), limits.cell_chars)


def _dataframe_text(frame: Any, limits: Limits) -> str:
    rows, columns = frame.shape
    shown = frame.iloc[: limits.rows, : limits.columns]
    header = ["", *(_value_text(name, limits) for name in shown.columns)]
    body = [
        [_value_text(index, limits), *(_value_text(item, limits) for item in row)]
        for index, row in zip(shown.index, shown.itertuples(index=False, name=None), strict=True)
    ]
    lines = [f"DataFrame: {rows:,} rows x {columns:,} columns" + _showing(rows, columns, shown.shape)]
    lines.append(markdown_table(header, body))
    dtypes = ", ".join(f"{name}: {dtype}" for name, dtype in frame.dtypes.iloc[: limits.columns].items())
    more = f" (and {columns - limits.columns:,} more columns)" if columns > limits.columns else ""
    lines.append(f"dtypes: {dtypes}{more}")
    return "\n\n".join(lines)


def _showing(rows: int, columns: int, shown: tuple[int, int]) -> str:
    parts = []
    if shown[0] < rows:
        parts.append(f"the first {shown[0]} rows")
    if shown[1] < columns:
        parts.append(f"the first {shown[1]} columns")
    return f" (showing {' and '.join(parts)})" if parts else ""


def _series_text(series: Any, limits: Limits) -> str:
    shown = series.iloc[: limits.rows]
    name = "" if series.name is None else f" {series.name!r}"
    lines = [f"Series{name}: {len(series):,} values, dtype {series.dtype}" + _showing(len(series), 1, (len(shown), 1))]
    column = "value" if series.name is None else _value_text(series.name, limits)
    body = [[_value_text(index, limits), _value_text(item, limits)] for index, item in shown.items()]
    lines.append(markdown_table(["", column], body))
    return "\n\n".join(lines)


def _array_text(array: Any, limits: Limits) -> str:
    import numpy

    # numpy's own summarisation (threshold/edgeitems) keeps the preview bounded for any number of dimensions.
    preview = numpy.array2string(array, threshold=limits.rows * 10, edgeitems=3, max_line_width=100)
    return f"ndarray: shape {array.shape}, dtype {array.dtype}\n{preview}"
